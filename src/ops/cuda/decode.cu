// Recurrent decode: a few tokens per sequence, states updated in place in a pool.
// Memory-bound: each state [K, V] fp32 is read once and written once. A block owns 32 value
// columns of one (sequence, value head); columns are independent in the delta rule, so the
// only communication is the two sums over K per token (Sᵀk and Sᵀq). States are read and
// written with streaming (evict-first) hints: each is touched once per call.
#include <cmath>

#include "chunk_plan.cuh"

namespace gdn::cuda::detail {
namespace {

constexpr int kThreads = 256;
constexpr int kCols = 32;                  // value columns per block: 8 lanes × float4
constexpr int kRowsPerThread = kDim / 32;  // 32 row slots (8 warps × 4 lanes) × 4 rows

// Sum over the 128 rows of x (the thread's 4 columns), result in every thread.
__device__ __forceinline__ float4 column_sum(float4 x, float4* red) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 8; o < 32; o <<= 1) {
    x.x += __shfl_xor_sync(0xffffffffu, x.x, o);
    x.y += __shfl_xor_sync(0xffffffffu, x.y, o);
    x.z += __shfl_xor_sync(0xffffffffu, x.z, o);
    x.w += __shfl_xor_sync(0xffffffffu, x.w, o);
  }
  if (lane < 8) red[warp * 8 + lane] = x;
  __syncthreads();
  float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int w = 0; w < 8; ++w) {
    const float4 y = red[w * 8 + (lane & 7)];
    s.x += y.x, s.y += y.y, s.z += y.z, s.w += y.w;
  }
  return s;
}

template <class T>
__global__ void __launch_bounds__(kThreads) decode_kernel(DecodeShape sh, DecodeArgs a, float scale) {
  __shared__ float qk[2][kDim];
  __shared__ float4 red[2][64];
  const int seq = blockIdx.x, hv = blockIdx.y, v0 = blockIdx.z * kCols, h = hv / (sh.HV / sh.H);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int cg = lane & 7, row0 = warp * 4 + (lane >> 3);
  const int slot = a.state_indices[seq];
  const bool valid = slot >= 0 && slot < sh.pool_size;
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  T* o = static_cast<T*>(a.o);

  float* state = a.state_pool + (long(valid ? slot : 0) * sh.HV + hv) * kDim * kDim + v0 + 4 * cg;
  float4 s[kRowsPerThread];
#pragma unroll
  for (int m = 0; m < kRowsPerThread; ++m)
    s[m] = valid ? __ldcs(reinterpret_cast<const float4*>(state + (row0 + 32 * m) * kDim)) : make_float4(0, 0, 0, 0);

  for (int t = 0; t < sh.tokens; ++t) {
    const long tok = long(seq) * sh.tokens + t;
    if (warp < 2) {  // warp 0: k, warp 1: q, normalised
      const T* src = (warp == 0 ? k : q) + (tok * sh.H + h) * kDim + 4 * lane;
      float x[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) x[i] = to_float(src[i]);
      if (sh.l2norm_qk) {
        float ss = x[0] * x[0] + x[1] * x[1] + x[2] * x[2] + x[3] * x[3];
#pragma unroll
        for (int o2 = 16; o2 > 0; o2 >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o2);
        const float rn = rsqrtf(ss + 1e-6f);
#pragma unroll
        for (int i = 0; i < 4; ++i) x[i] *= rn;
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) qk[warp][4 * lane + i] = x[i];
    }
    const float alpha = __expf(a.g[tok * sh.HV + hv]), beta = a.beta[tok * sh.HV + hv];
    const T* vrow = v + (tok * sh.HV + hv) * kDim + v0 + 4 * cg;
    const float4 vv = make_float4(to_float(vrow[0]), to_float(vrow[1]), to_float(vrow[2]), to_float(vrow[3]));
    __syncthreads();

    float4 u = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int m = 0; m < kRowsPerThread; ++m) {
      const float kr = qk[0][row0 + 32 * m];
      u.x += s[m].x * kr, u.y += s[m].y * kr, u.z += s[m].z * kr, u.w += s[m].w * kr;
    }
    u = column_sum(u, red[0]);
    const float4 vn = make_float4(beta * (vv.x - alpha * u.x), beta * (vv.y - alpha * u.y),
                                  beta * (vv.z - alpha * u.z), beta * (vv.w - alpha * u.w));
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int m = 0; m < kRowsPerThread; ++m) {
      const float kr = qk[0][row0 + 32 * m], qr = qk[1][row0 + 32 * m];
      s[m].x = alpha * s[m].x + kr * vn.x;
      s[m].y = alpha * s[m].y + kr * vn.y;
      s[m].z = alpha * s[m].z + kr * vn.z;
      s[m].w = alpha * s[m].w + kr * vn.w;
      acc.x += s[m].x * qr, acc.y += s[m].y * qr, acc.z += s[m].z * qr, acc.w += s[m].w * qr;
    }
    acc = column_sum(acc, red[1]);
    if (threadIdx.x < 8) {
      T* orow = o + (tok * sh.HV + hv) * kDim + v0 + 4 * cg;
      const float nan = __int_as_float(0x7fc00000);
      orow[0] = from_float<T>(valid ? scale * acc.x : nan);
      orow[1] = from_float<T>(valid ? scale * acc.y : nan);
      orow[2] = from_float<T>(valid ? scale * acc.z : nan);
      orow[3] = from_float<T>(valid ? scale * acc.w : nan);
    }
    __syncthreads();  // qk and red are rewritten by the next token
  }
  if (valid) {
#pragma unroll
    for (int m = 0; m < kRowsPerThread; ++m) __stcs(reinterpret_cast<float4*>(state + (row0 + 32 * m) * kDim), s[m]);
  }
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
  if (!a.q || !a.k || !a.v || !a.g || !a.beta || !a.state_pool || !a.state_indices || !a.o)
    return bad_input("gdn::cuda::decode: every pointer of DecodeArgs is required");
  if (s.num_seqs == 0) return {};
  const float scale = s.scale > 0.f ? s.scale : 1.f / std::sqrt(float(s.K));
  const dim3 grid(s.num_seqs, s.HV, kDim / kCols);
  if (s.dtype == DType::f32)
    decode_kernel<float><<<grid, kThreads, 0, stream>>>(s, a, scale);
  else
    decode_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(s, a, scale);
  GDN_CUDA_LAUNCHED("gdn::cuda decode_kernel");
  return {};
}

}  // namespace gdn::cuda
