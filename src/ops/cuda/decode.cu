// Recurrent decode: a few tokens per sequence, states updated in place in a pool.
// Memory-bound: each state [K, V] fp32 (64 KiB) is read once and written once, so the kernel
// is built to keep DRAM streaming. A block owns kCols value columns of one (sequence, value
// head); the delta rule's columns are independent, so the only communication is the two sums
// over K per token (Sᵀk before the update, Sᵀq after it), each one shared-memory pass. The
// column slabs of a state are neighbours in the grid, so they run together and read the state
// as one contiguous 64 KiB stream (v3's 32-column blocks of one state ran far apart, each
// reading 128-byte strips 512 bytes apart: 75–80% of copy bandwidth). Each thread keeps kRows
// float4 of the state in registers, all loads issued before the first use; states move with
// streaming (evict-first) hints, as each is touched once per call.
#include <cmath>

#include "chunk_plan.cuh"

namespace gdn::cuda::detail {
namespace {

// The thread layout of a block owning kCols columns × 128 rows. A lane holds 4 adjacent
// columns (one float4) of kRows consecutive rows; kLanesPerRow lanes cover the block's columns
// and a warp covers kRowGroups such row strips per load.
template <int kCols, int kRows>
struct DecodeTile {
  static constexpr int kLanesPerRow = kCols / 4;
  static constexpr int kRowGroups = 32 / kLanesPerRow;
  static constexpr int kThreads = kLanesPerRow * kDim / kRows;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kSlabs = kDim / kCols;  // blocks per state
  // Aim at 1024 resident threads per SM (64 registers each) where the state fits in that.
  static constexpr int kMinBlocks = kRows <= 8 && kThreads <= 1024 ? (1024 / kThreads > 0 ? 1024 / kThreads : 1) : 1;
  static_assert(kCols % 4 == 0 && 32 % kLanesPerRow == 0 && kDim % (kRows * kRowGroups) == 0);
  static_assert(kThreads >= kCols, "column totals need one thread per column");
};

// n consecutive values from global memory, converted to fp32; p is 4-element aligned.
template <int n>
__device__ __forceinline__ void load_floats(const float* p, float* x) {
#pragma unroll
  for (int i = 0; i < n; i += 4) {
    const float4 t = *reinterpret_cast<const float4*>(p + i);
    x[i] = t.x, x[i + 1] = t.y, x[i + 2] = t.z, x[i + 3] = t.w;
  }
}
template <int n, class T, std::enable_if_t<k16Bit<T>, int> = 0>
__device__ __forceinline__ void load_floats(const T* p, float* x) {
#pragma unroll
  for (int i = 0; i < n; i += 4) {
    const float4 t = load4(p + i);
    x[i] = t.x, x[i + 1] = t.y, x[i + 2] = t.z, x[i + 3] = t.w;
  }
}

// First half of a column sum over the block's 128 rows: x holds this thread's 4 columns summed
// over its rows; the lanes of a warp that share columns are added, and the warp's kCols partial
// sums go to red[warp][·]. After a barrier, column_total gives the sum over all warps.
template <class Tile>
__device__ __forceinline__ void stash_column_partials(float4 x, float* red) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int o = Tile::kLanesPerRow; o < 32; o <<= 1) {
    x.x += __shfl_xor_sync(0xffffffffu, x.x, o);
    x.y += __shfl_xor_sync(0xffffffffu, x.y, o);
    x.z += __shfl_xor_sync(0xffffffffu, x.z, o);
    x.w += __shfl_xor_sync(0xffffffffu, x.w, o);
  }
  if (lane < Tile::kLanesPerRow) reinterpret_cast<float4*>(red)[warp * Tile::kLanesPerRow + lane] = x;
}
template <class Tile>
__device__ __forceinline__ float column_total(const float* red, int col) {
  float sum = 0.f;
#pragma unroll
  for (int w = 0; w < Tile::kWarps; ++w) sum += red[w * 4 * Tile::kLanesPerRow + col];
  return sum;
}

// Delta rule, per token, three barriers: partials of Sᵀk → (column totals, v' = β(v − α Sᵀk))
// → v' read by all, state updated, partials of S'ᵀq → column totals written as o. Two partial
// buffers and the barrier order make a barrier between tokens unnecessary. The additive rule
// (v' = v) needs only the last barrier; its tokens alternate between the two buffers instead.
// The vector gate (G) decays each state row by its own α_d = e^{g_d}: a thread loads the kRows
// log-gates of its rows and decays them first, so that Sᵀk is Σ_d k_d (α_d S_d).
template <class T, Update U, Gate G, int kCols, int kRows>
__global__ void __launch_bounds__(DecodeTile<kCols, kRows>::kThreads, DecodeTile<kCols, kRows>::kMinBlocks)
    decode_kernel(DecodeShape sh, DecodeArgs a, float scale) {
  using Tile = DecodeTile<kCols, kRows>;
  __shared__ __align__(16) float red[2][Tile::kWarps * kCols];
  __shared__ __align__(16) float vnew[kCols];
  const int block = blockIdx.x;  // (sequence, value head, column slab), the slab fastest
  const int slab = block % Tile::kSlabs, hv = (block / Tile::kSlabs) % sh.HV, seq = block / (Tile::kSlabs * sh.HV);
  const int h = hv / (sh.HV / sh.H), v0 = slab * kCols;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int cg = lane % Tile::kLanesPerRow, row0 = (warp * Tile::kRowGroups + lane / Tile::kLanesPerRow) * kRows;
  const int slot = a.state_indices[seq];
  const bool valid = slot >= 0 && slot < sh.pool_size;
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  T* o = static_cast<T*>(a.o);

  float* state = a.state_pool + (long(valid ? slot : 0) * sh.HV + hv) * kDim * kDim + row0 * kDim + v0 + 4 * cg;
  float4 s[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m)
    s[m] = valid ? __ldcs(reinterpret_cast<const float4*>(state + m * kDim)) : make_float4(0.f, 0.f, 0.f, 0.f);

  for (int t = 0; t < sh.tokens; ++t) {
    const long tok = long(seq) * sh.tokens + t;
    // Every warp normalises k and q itself (128 values, cached loads): no barrier for them.
    const T* krow = k + (tok * sh.H + h) * kDim;
    const T* qrow = q + (tok * sh.H + h) * kDim;
    float k4[4], q4[4], kr[kRows], qr[kRows];
    load_floats<4>(krow + 4 * lane, k4);
    load_floats<4>(qrow + 4 * lane, q4);
    load_floats<kRows>(krow + row0, kr);
    load_floats<kRows>(qrow + row0, qr);
    // The vector gate decays the state's rows at once (Sᵀ (α ⊙ k) = (α ⊙ S)ᵀ k), so that its
    // kRows gates are not held across the barriers (held, they spilled at 64 registers).
    if constexpr (kVector<G>) {
      float lg[kRows];
      load_floats<kRows>(a.g + (tok * sh.HV + hv) * kDim + row0, lg);
#pragma unroll
      for (int m = 0; m < kRows; ++m) {
        const float am = __expf(lg[m]);
        s[m].x *= am, s[m].y *= am, s[m].z *= am, s[m].w *= am;
      }
    }
    const float alpha = !kVector<G> && a.g ? __expf(a.g[tok * sh.HV + hv]) : 1.f;  // the scalar gate
    if (sh.l2norm_qk) {
      const float rk = rsqrtf(warp_sum(k4[0] * k4[0] + k4[1] * k4[1] + k4[2] * k4[2] + k4[3] * k4[3]) + 1e-6f);
      const float rq = rsqrtf(warp_sum(q4[0] * q4[0] + q4[1] * q4[1] + q4[2] * q4[2] + q4[3] * q4[3]) + 1e-6f);
#pragma unroll
      for (int m = 0; m < kRows; ++m) kr[m] *= rk, qr[m] *= rq;
    }

    const T* vrow = v + (tok * sh.HV + hv) * kDim + v0;
    float4 vn;
    if constexpr (kDelta<U>) {
      float4 u = make_float4(0.f, 0.f, 0.f, 0.f);  // Sᵀ k, the scalar α left out
#pragma unroll
      for (int m = 0; m < kRows; ++m)
        u.x += s[m].x * kr[m], u.y += s[m].y * kr[m], u.z += s[m].z * kr[m], u.w += s[m].w * kr[m];
      stash_column_partials<Tile>(u, red[0]);
      __syncthreads();
      if (threadIdx.x < kCols) {
        const int c = threadIdx.x;
        vnew[c] = a.beta[tok * sh.HV + hv] * (to_float(vrow[c]) - alpha * column_total<Tile>(red[0], c));
      }
      __syncthreads();
      vn = reinterpret_cast<const float4*>(vnew)[cg];
    } else {
      float x[4];
      load_floats<4>(vrow + 4 * cg, x);
      vn = make_float4(x[0], x[1], x[2], x[3]);
    }
    float* out_red = red[kDelta<U> ? 1 : t & 1];
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      s[m].x = alpha * s[m].x + kr[m] * vn.x;
      s[m].y = alpha * s[m].y + kr[m] * vn.y;
      s[m].z = alpha * s[m].z + kr[m] * vn.z;
      s[m].w = alpha * s[m].w + kr[m] * vn.w;
      acc.x += s[m].x * qr[m], acc.y += s[m].y * qr[m], acc.z += s[m].z * qr[m], acc.w += s[m].w * qr[m];
    }
    stash_column_partials<Tile>(acc, out_red);
    __syncthreads();
    if (threadIdx.x < kCols) {
      const int c = threadIdx.x;
      const float out = valid ? scale * column_total<Tile>(out_red, c) : __int_as_float(0x7fc00000);
      o[(tok * sh.HV + hv) * kDim + v0 + c] = from_float<T>(out);
    }
  }
  if (valid) {
#pragma unroll
    for (int m = 0; m < kRows; ++m) __stcs(reinterpret_cast<float4*>(state + m * kDim), s[m]);
  }
}

// The layout gdn::cuda::decode launches: half a state per block (two blocks per state, side by
// side in the grid), 8 rows per thread, 256 threads, 4 blocks per SM. On an H100 it ties with
// whole-state blocks (128 × 8) from 256 sequences up (92–95% of copy bandwidth) and is faster
// at 1 and 32 sequences (bench/gpu/NOTES.md, decode v4).
constexpr int kDecodeCols = 64, kDecodeRows = 8;

template <class T, Update U, Gate G, int kCols, int kRows>
Status launch_decode(const DecodeShape& s, const DecodeArgs& a, float scale, cudaStream_t stream) {
  using Tile = DecodeTile<kCols, kRows>;
  const long blocks = long(s.num_seqs) * s.HV * Tile::kSlabs;
  if (blocks > 0x7fffffffL)
    return bad_input(gdn::cat("gdn::cuda::decode: too many sequences (", s.num_seqs, ") for one launch"));
  decode_kernel<T, U, G, kCols, kRows><<<unsigned(blocks), Tile::kThreads, 0, stream>>>(s, a, scale);
  GDN_CUDA_LAUNCHED("gdn::cuda decode_kernel");
  return {};
}

}  // namespace
}  // namespace gdn::cuda::detail

namespace gdn::cuda {

Status decode(const DecodeShape& s, const DecodeArgs& a, cudaStream_t stream) {
  using namespace detail;
  if (s.K != kDim || s.V != kDim)
    return bad_input(gdn::cat("gdn::cuda::decode: K and V must be ", kDim, " (got K=", s.K, ", V=", s.V, ")"));
  if (s.H <= 0 || s.HV <= 0 || s.HV % s.H != 0)
    return bad_input(gdn::cat("gdn::cuda::decode: HV (", s.HV, ") must be a positive multiple of H (", s.H, ")"));
  if (s.tokens <= 0 || s.pool_size <= 0)
    return bad_input(gdn::cat("gdn::cuda::decode: tokens (", s.tokens, ") and pool_size (", s.pool_size,
                              ") must be positive"));
  if (!a.q || !a.k || !a.v || !a.state_pool || !a.state_indices || !a.o)
    return bad_input("gdn::cuda::decode: q, k, v, state_pool, state_indices and o are required");
  for (const std::string& e : {beta_error("gdn::cuda::decode", s.update, a.beta, "beta"),
                                gate_error("gdn::cuda::decode", s.gate, a.g)})
    if (!e.empty()) return bad_input(e);
  if (s.num_seqs == 0) return {};
  const float scale = s.scale > 0.f ? s.scale : 1.f / std::sqrt(float(s.K));
  return dispatch(s.dtype, s.update, s.gate, [&](auto t, auto u, auto g) {
    return launch_decode<decltype(t), decltype(u)::value, decltype(g)::value, kDecodeCols, kDecodeRows>(s, a, scale,
                                                                                                         stream);
  });
}

}  // namespace gdn::cuda
