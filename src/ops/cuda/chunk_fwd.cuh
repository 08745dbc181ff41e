// Forward stages shared by the chunk forward and backward launchers.
#pragma once

#include <cstring>

#include "chunk_plan.cuh"
#include "gate.cuh"

namespace gdn::cuda::detail {

template <class T>
struct ChunkParams {
  const T *q, *k, *v;
  const float *g, *beta;
  int H, HV;
  float scale;
  bool l2norm;
};

// Per (chunk, value head) buffers. fp32: the cumulative gate [NC,HV,2,64] (hi, then lo; vector
// gate: [NC,HV,64,128]). In the input type T, the values that only feed mma operands (tile.cuh):
// A [NC,HV,64,64], W [NC,HV,64,128], Kd = K e^{γ_L − γ} [NC,HV,64,128], V' [NC,HV,64,128]
// (the state pass's U − W S; for the additive rule V itself), chunk-entry states h
// [NC,HV,128,128]; and U = A diag(β) V [NC,HV,64,128], which V' = U − W S reads in fp32
// arithmetic (in T it is half the bytes of the forward's largest intermediate; FLA keeps it in
// the input type too). A, W and U exist for the delta rule only (null otherwise). Rows beyond a
// chunk's length are zero. 16-bit T only: h_ext, an 8-bit extension of h [NC,HV,128,128] (below),
// so that h and h_ext carry S to ~16 bits for the gate gradient's Σ dS_next ⊙ S, which is not an
// mma operand (bench/gpu/bf16_gate_grad.py); null for fp32, where h is S. In T, P = Q Kᵀ ⊙ Γ
// (lower with the diagonal) [NC,HV,64,64]: the vector gate's formed once by prepare (gated by
// sub-chunks) and read by the output pass and the backward, the scalar gate's stored by the output
// pass for the backward; Q e^γ [NC,HV,64,128], stored by the output pass for the backward (where
// kFusedOutput, below, prepare stores P, for the fused output pass and the backward); vector gate and
// delta rule only, N = gated K Kᵀ (strictly lower) [NC,HV,64,64]. kFusedOutput keeps neither Kd nor
// Q e^γ (null): their readers take the tensors k and q themselves with prepare's per-row scales rs
// [NC,HV,2,64] (fp32; e^{γ_L − γ_i} / ‖k_i‖, then e^{γ_i} / ‖q_i‖; 0 past the chunk's rows), 32 KB
// fewer per chunk-head written and no more read (null otherwise). A, N, h_ext, Q e^γ and the scalar
// gate's P are read by the backward alone (kFusedOutput: A, N, h_ext, h and V'): null when none
// follows (ChunkForwardArgs::for_backward false), and the kernels skip their stores.
template <class T>
struct ForwardWorkspace {
  SeqInfo* seqs;
  int* chunk_seq;
  float* gam;
  T *u, *a, *w, *kd, *vn, *h, *p, *n;
  int8_t* h_ext;
  T* qg;      // Q e^γ for the backward's reverse state pass (null when no backward follows)
  float* rs;  // kFusedOutput: the row scales of k and q
  // The chain forward streamed (chunk_fwd.cu, forward_chain): prepare's chunks in the order of the
  // chain's steps (every sequence's first, then every second, ...) and a flag a chunk-head, set when
  // prepare has stored its A diag(β), P and row scales. Null otherwise.
  int* order;
  int* ready;
};

// The 8-bit extension of a 16-bit state element h = T(S): fp32 bit patterns are monotonic in the
// value for a given sign (which rounding keeps), so d = bits(S) − bits(fp32(h)) counts the fp32
// values between them, |d| ≤ 2^15 for bf16 (half its ulp) and 2^12 for fp16. e = round(d / 2^8)
// (2^5 for fp16) is stored as a signed byte (its 128 clamped to 127), and bits(h) + e · 2^8 is S
// to 2^-16 of itself (fp16: 2^-19; twice that for the 1 in 512 values just under the midpoint above
// h, whose code is clamped; fp16's subnormals keep h's precision), two integer operations each
// way. Half the bytes of S − h in T, which kept one bit more. Each aligned 32 columns of a row are
// stored in the mma fragments' order, [t][tile k][pair]: byte 8t + 2k + b is column 8k + 2t + b, so
// that a quad of lanes stores or loads its rows' 32 bytes (one sector) as 8 bytes a lane, with no
// shuffle.
// These helpers run on the host too, for the format's unit test (tests/test_state_ext.cu).
template <class T>
constexpr int kExtShift = std::is_same_v<T, bf16> ? 8 : 5;
// The bits of a value as another type of its size (std::bit_cast, which nvcc's C++17 lacks; the
// copy is a register move on the device).
template <class To, class From>
__host__ __device__ __forceinline__ To bit_cast(From x) {
  static_assert(sizeof(To) == sizeof(From), "same size");
  To y;
  memcpy(&y, &x, sizeof y);
  return y;
}
template <class T>
__host__ __device__ __forceinline__ float ext_value(float h, int e) {  // S from h and e
  return bit_cast<float>(bit_cast<int>(h) + (e << kExtShift<T>));
}
template <class T>
__host__ __device__ __forceinline__ uint32_t ext_code(float s, float h) {  // e as a byte
  const int d = bit_cast<int>(s) - bit_cast<int>(h);
  return uint32_t(max(-128, min((d + (1 << (kExtShift<T> - 1))) >> kExtShift<T>, 127))) & 0xffu;
}
// Byte b of w as a signed code.
__host__ __device__ __forceinline__ int ext_byte(uint2 w, int b) {
  const uint32_t x = b < 4 ? w.x : w.y;
  return int(x << (24 - 8 * (b % 4))) >> 24;
}
// The offset of column c's byte within its row (fragment order, above).
__host__ __device__ __forceinline__ int ext_column(int c) {
  return (c & ~31) + 8 * ((c & 7) >> 1) + 2 * ((c & 31) >> 3) + (c & 1);
}
// The extension of a warp's 16 rows of fp32 state (accumulator tiles at row m0, all NT tiles of
// the rows from column 0 of dst), rounded to T as h is.
template <class T, int NT>
__device__ __forceinline__ void store_state_ext(int8_t* dst, long stride, const float (&acc)[1][NT][4], int m0) {
  static_assert(NT % 4 == 0, "whole 32-column blocks");
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh)
#pragma unroll
    for (int blk = 0; blk < NT / 4; ++blk) {
      uint32_t w[2] = {0u, 0u};
#pragma unroll
      for (int b = 0; b < 8; ++b) {  // byte b: tile 4 blk + b / 2, column 2t + b % 2
        const float s = acc[0][4 * blk + b / 2][2 * hh + b % 2];
        w[b / 4] |= ext_code<T>(s, to_float(from_float<T>(s))) << (8 * (b % 4));
      }
      *reinterpret_cast<uint2*>(dst + (m0 + g + 8 * hh) * stride + 32 * blk + 8 * t) = make_uint2(w[0], w[1]);
    }
}

// The scalar gate's cumulative sum γ_r of a chunk, kept per row as hi + lo (two fp32: hi = fp32(γ),
// lo = fp32(γ − hi)), summed in fp64. With every gate near −30 a chunk's γ reaches −2000, where
// fp32's spacing (2.4e-4) gives e^{γ_i − γ_j} ~1e-4 relative error, and dg (then a sum of such
// terms alone) as much (bench/gpu/gate_cumsum_precision.py); the difference of two hi + lo pairs
// is good to ~1e-7 of itself. e^γ alone takes hi: where it is not 0, |γ| < 88 and hi is within
// 4e-6 of γ. The workspace keeps the hi row and then the lo row of each (chunk, value head):
// the state passes read hi alone.
__device__ __forceinline__ float gate_diff(float2 a, float2 b) { return (a.x - b.x) + (a.y - b.y); }
__device__ __forceinline__ float2 split_gate(double x) {
  const float hi = float(x);
  return make_float2(hi, float(x - double(hi)));
}
constexpr int kGateStride = 2 * kChunk;  // floats per (chunk, value head) of the scalar gate
constexpr int kRowScaleStride = 2 * kChunk;  // floats per (chunk, value head) of rs: k's, q's
// The chain forward's row scales (chain_kernel), floats per (chunk, value head) of rs: rows 0..63
// e^{γ_L − γ} / ‖k‖, 64.. e^γ / ‖q‖ (those of rs above), 128.. e^γ / ‖k‖; then e^{γ_L}.
constexpr int kChainRowScaleStride = 4 * kChunk;

// for_each_pair over a causal product's accumulators decayed by the scalar gate: f(i, j, v0, v1)
// with v the entries (i, j), (i, j + 1), each row_scale(i) · x e^{γ_i − γ_j} where j < i (and
// j == i with `diagonal`: P, dP), else 0 (L, M: strictly lower). Each thread's row and column gates
// are read once: read per entry between the caller's stores (which the compiler may not read
// across), those shared loads were ~19% of prepare's stall samples (bench/gpu/NOTES.md,
// twenty-second session). The exponential is formed for every entry and the mask selects (above
// the diagonal it may be inf, never selected): a branch around it cost a convergence barrier per
// entry (with -ftz, prepare −7% and intra_grad −4%).
template <int MT, int NT, class S, class F>
__device__ __forceinline__ void for_each_decayed_pair(float (&acc)[MT][NT][4], int m0, int n0, const float2* gam,
                                                      bool diagonal, S&& row_scale, F&& f) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  float2 gc[NT][2];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 2; ++e) gc[nt][e] = gam[n0 + 8 * nt + 2 * t + e];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int i = m0 + 16 * mt + g + 8 * h;
      const float2 gi = gam[i];
      const float rs = row_scale(i);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int j = n0 + 8 * nt + 2 * t;
        float v[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const bool below = j + e < i || (diagonal && j + e == i);
          const float x = (rs * acc[mt][nt][2 * h + e]) * __expf(gate_diff(gi, gc[nt][e]));
          v[e] = below ? x : 0.f;
        }
        f(i, j, v[0], v[1]);
      }
    }
}
struct NoRowScale {  // for_each_decayed_pair's row scale where there is none
  __device__ float operator()(int) const { return 1.f; }
};

// Row r's scalars of the scalar gate, from γ_r, the chunk's last γ_L and β_r: e^{γ_L − γ_r} (Kd),
// β_r e^{γ_r} (W's operand), β_r (U's), e^{γ_r} (Q e^γ).
__device__ __forceinline__ float4 gate_row_scale(float2 gL, float2 gr, float beta) {
  const float e = __expf(gr.x);
  return make_float4(__expf(gate_diff(gL, gr)), beta * e, beta, e);
}

// Rows r < 64 of γ from the workspace (gam: its [2,64] block); 64 threads.
__device__ inline void load_gate_pairs(float2* gam, const float* ws_gam) {
  if (threadIdx.x < kChunk) gam[threadIdx.x] = make_float2(ws_gam[threadIdx.x], ws_gam[kChunk + threadIdx.x]);
}

// One warp's share of a chunk's g and β: lane l holds rows 2l and 2l + 1 (0 beyond len; g 0 when
// null: no gate; β 0 when null). Fetched apart from the sum, so that a caller can issue the loads
// a step before it needs them (the single-pass forward).
struct GateRows {
  float g0, g1, b0, b1;
};
__device__ inline GateRows fetch_gate_beta(const float* g, const float* beta, int start, int len, int HV, int hv) {
  const int r0 = 2 * (threadIdx.x & 31), r1 = r0 + 1;
  auto at = [&](const float* x, int r) { return x && r < len ? x[long(start + r) * HV + hv] : 0.f; };
  return {at(g, r0), at(g, r1), at(beta, r0), at(beta, r1)};
}
// The inclusive cumulative sum of the rows' g over the chunk as hi + lo pairs (summed in fp64),
// and β (when with_beta), into smem; one warp.
__device__ inline void scan_gate_beta(const GateRows& x, float2* gam, float* bet, bool with_beta) {
  const int lane = threadIdx.x & 31, r0 = 2 * lane, r1 = r0 + 1;
  const double x1 = x.g1;
  double s = double(x.g0) + x1;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_up_sync(0xffffffffu, s, o);
    if (lane >= o) s += y;
  }
  gam[r0] = split_gate(s - x1);
  gam[r1] = split_gate(s);
  if (with_beta) {
    bet[r0] = x.b0;
    bet[r1] = x.b1;
  }
}
// Both at once, by warp 0.
__device__ inline void load_gate_beta(float2* gam, float* bet, const float* g, const float* beta, int start, int len,
                                      int HV, int hv) {
  if (threadIdx.x >= 32) return;
  scan_gate_beta(fetch_gate_beta(g, beta, start, len, HV, hv), gam, bet, beta != nullptr);
}

// Row stride of the fp32 tile that the inversion of I + L works in: ≡ 8 (mod 32) words, so that the
// fp32 pairs of an mma accumulator (rows g, columns 2t, t < 4) stored or read by a half-warp hit
// 32 distinct banks.
constexpr int kLdL = kChunk + 8;
constexpr int kBlock = 16;  // the block size of the inversion (inverse_rows)

namespace inverse {

// The inverse's 16×16 products have fp32 operands, kept as one of two kinds of A fragment:
//   - split (kTf32 false; the two-kernel prepare, whose A the backward reads): bf16 hi + lo, three
//     products (hi·hi + hi·lo + lo·hi) as tile.cuh's fp32 path, ~1e-5; r[0] the hi, r[1] the lo
//     fragment of mma.m16n8k16;
//   - tf32 (the single pass, whose A diag(β) is rounded to the 16-bit input type once formed and
//     feeds no backward): two mma.m16n8k8 (operands truncated, ≤ 1e-3) and no splitting, r[h]
//     the k columns 8h..8h+7. Their k order is ours to choose (the same for B): slot t holds
//     column 2t, slot t + 4 column 2t + 1, so that an accumulator tile (elements (g, 2t),
//     (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1)) is a fragment as it stands.
//   In prepare, tf32 left the training forward's time as it was and doubled the bf16 dg's error
//   (3e-3 → 7e-3) in two cases (bench/gpu/NOTES.md, seventeenth session).
struct Frag {
  uint32_t r[2][4];
};

// The fragment of the 16×16 accumulator pair acc[0][0..1] (tile.cuh acc_a_pair).
template <bool kTf32>
__device__ __forceinline__ Frag acc_frag(const float (&acc)[1][2][4]) {
  Frag f;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    if constexpr (kTf32) {
#pragma unroll
      for (int h = 0; h < 2; ++h) f.r[h][e] = as_tf32(acc[0][h][(e >> 1) + 2 * (e & 1)]);  // c0, c2, c1, c3
    } else {
      split_bf16(acc_a_pair(acc, 0, e), f.r[0][e], f.r[1][e]);
    }
  }
  return f;
}
// The same from a 16×16 block of an fp32 tile at (r0, c0).
template <bool kTf32>
__device__ __forceinline__ Frag tile_frag(const float* l, int r0, int c0) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  Frag f;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    if constexpr (kTf32) {  // e: rows g, g + 8 (e & 1) of k half e >> 1
      const float2 x = load2(l + (r0 + g + 8 * (e & 1)) * kLdL + c0 + 8 * (e >> 1) + 2 * t);
      f.r[e >> 1][e & 1] = as_tf32(x.x);
      f.r[e >> 1][2 + (e & 1)] = as_tf32(x.y);
    } else {
      split_bf16(load2(l + (r0 + g + 8 * (e & 1)) * kLdL + c0 + 2 * t + 8 * (e >> 1)), f.r[0][e], f.r[1][e]);
    }
  }
  return f;
}
// acc[0][0..1] (16×16) += a · X, X the 16×16 block of the fp32 tile at (r0, c0).
template <bool kTf32>
__device__ __forceinline__ void mma_block(float (&acc)[1][2][4], const Frag& a, const float* l, int r0, int c0) {
  const ColMajorK<float> b{l, kLdL};  // element (n, k) of the operand: X[k][n]
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    if constexpr (kTf32) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float2 x = b.pair(c0 + 8 * nt + g, r0 + 8 * h + 2 * t);  // slots t, t + 4
        mma_tf32(acc[0][nt], a.r[h], as_tf32(x.x), as_tf32(x.y));
      }
    } else {
      uint32_t bh0, bl0, bh1, bl1;
      split_bf16(b.pair(c0 + 8 * nt + g, r0 + 2 * t), bh0, bl0);
      split_bf16(b.pair(c0 + 8 * nt + g, r0 + 2 * t + 8), bh1, bl1);
      mma_bf16(acc[0][nt], a.r[0], bh0, bh1);
      mma_bf16(acc[0][nt], a.r[0], bl0, bl1);
      mma_bf16(acc[0][nt], a.r[1], bh0, bh1);
    }
  }
}

// Warp b: the diagonal block D_b = I + L_bb of l replaced by D_b⁻¹, by forward substitution in
// fp32; lane c (mod 16) solves column c, 15 dependent steps, L's rows read as broadcasts.
__device__ __forceinline__ void invert_diagonal_block(float* l, int b) {
  const int lane = threadIdx.x & 31, c = lane & (kBlock - 1);
  float* d = l + kBlock * b * (kLdL + 1);
  float x[kBlock];
#pragma unroll
  for (int r = 0; r < kBlock; ++r) {
    float s = r == c ? 1.f : 0.f;
#pragma unroll
    for (int k = 0; k < r; ++k) s -= d[r * kLdL + k] * x[k];  // x[r − 1] last: the chain is one FMA a row
    x[r] = s;
  }
  __syncwarp();
  if (lane < kBlock) {
#pragma unroll
    for (int r = 0; r < kBlock; ++r) d[r * kLdL + c] = x[r];
  }
}

// Row block B of A = (I + L)⁻¹, right to left, from A (I + L) = I:
//   A_Bj = −(D_B⁻¹ L_Bj + Σ_{j<k<B} A_Bk L_kj) D_j⁻¹   (j < B),
// the A_Bk kept as fragments; f(i, j, v0, v1) for the pairs of the row block (the accumulator
// layout), zeros right of D_B⁻¹ included.
template <int B, bool kTf32, class F>
__device__ __forceinline__ void inverse_row(const float* l, F&& f) {
  constexpr int r0 = kBlock * B;
  const Frag d = tile_frag<kTf32>(l, r0, r0);
  Frag a[B + 1];
#pragma unroll
  for (int j = B - 1; j >= 0; --j) {
    float s[1][2][4], x[1][2][4];
    zero(s);
    zero(x);
    mma_block<kTf32>(s, d, l, r0, kBlock * j);
    // A_Bk of the previous step (k = j + 1) last: the terms before it wait on nothing.
#pragma unroll
    for (int k = B - 1; k > j; --k) mma_block<kTf32>(s, a[k], l, kBlock * k, kBlock * j);
    for_each(s, 0, 0, [](int, int, float& v) { v = -v; });
    mma_block<kTf32>(x, acc_frag<kTf32>(s), l, kBlock * j, kBlock * j);
    for_each_pair(x, r0, kBlock * j, f);
    a[j] = acc_frag<kTf32>(x);
  }
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int cb = B; cb < kChunk / kBlock; ++cb)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int i = r0 + g + 8 * h, j = kBlock * cb + 8 * nt + 2 * t;
        const float2 v = cb == B ? load2(l + i * kLdL + j) : make_float2(0.f, 0.f);
        f(i, j, v.x, v.y);
      }
}

}  // namespace inverse

// A = (I + L)⁻¹ for L strictly lower triangular, l ([64][kLdL] fp32), by blocks, in two steps
// that the caller separates by a block barrier (warps 0–3 take part, the others may work on
// other data meanwhile): invert_diagonal_blocks, warp b replaces D_b = I + L_bb by its inverse
// (forward substitution); then inverse_rows, warp b forms row block b of A from small
// tensor-core products (inverse::inverse_row) and calls f(i, j, v0, v1) for every pair (i, j),
// (i, j + 1) of A, each once. The caller synchronises before others read l or what f wrote.
// A block barrier, not a named barrier of the four warps: compute-sanitizer's racecheck does
// not follow the latter and reported every later read of A as a hazard; the block barrier
// costs the training forward 0–0.7% (bench/gpu/NOTES.md, racecheck).
__device__ inline void invert_diagonal_blocks(float* l) { inverse::invert_diagonal_block(l, threadIdx.x >> 5); }

// kTf32: the products in tf32 (inverse::Frag).
template <bool kTf32, class F>
__device__ inline void inverse_rows(const float* l, F&& f) {
  switch (threadIdx.x >> 5) {
    case 0: inverse::inverse_row<0, kTf32>(l, f); break;
    case 1: inverse::inverse_row<1, kTf32>(l, f); break;
    case 2: inverse::inverse_row<2, kTf32>(l, f); break;
    default: inverse::inverse_row<3, kTf32>(l, f); break;
  }
}

// The GDN forward of 16-bit inputs (delta rule, scalar gate) fuses the output pass into the state
// pass, where h and V' need not leave the block (the output pass alone read them back, 48 KB per
// chunk-head, after the state pass wrote them); its prepare forms P and the row scales rs.
template <class T>
constexpr bool fused_output(Update u, Gate g) {
  return k16Bit<T> && u == Update::delta && g == Gate::scalar;
}
template <class T, Update U, Gate G>
constexpr bool kFusedOutput = fused_output<T>(U, G);

template <class T>
ForwardWorkspace<T> carve_forward(Carve& cv, const ChunkPlan& plan, int HV, Update update, Gate gate);
Status upload_plan(const ChunkPlan& plan, SeqInfo* seqs, int* chunk_seq, cudaStream_t stream);

// Stages 1 and 2: gate cumsum, A, W, Kd, U, V' and the chunk states (and ht when non-null).
template <class T, Update U, Gate G>
Status forward_states(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace<T>& ws,
                      const float* h0, float* ht, cudaStream_t stream);

// Blocks of 64 value columns for a state pass (the forward's with the output fused in, the
// backward's reverse pass) where sequences × value heads × 2 of them fill the SMs: one copy of the
// chunk's shared tiles serves twice the columns (half their L2 reads). Else blocks of 32.
inline bool wide_state_blocks(long heads, int sms) { return heads * (kDim / 64) >= sms; }

// The GDN forward of 16-bit inputs when no backward follows: one kernel (chunk_fwd_single.cu), a
// block per (sequence, value head) that walks its chunks alone. It pays where those blocks fill 85%
// or more of the SM slots of the waves they take (one block per SM): below that, the chain forward's
// chunk-parallel prepare wins (H100, forward alone: 0.68 ms single pass, 0.35 chain for 32
// sequence-heads of 8192 tokens; 0.18 against 0.26 at 128 sequence-heads of 2048 tokens;
// bench/gpu/NOTES.md, twenty-second session).
inline bool single_pass_pays(long heads, int sms) {
  const long waves = (heads + sms - 1) / sms;
  return heads >= 0.85 * double(waves * sms);
}
// Whether forward_single_pass has code for this device: it needs sm_90a (wgmma, setmaxnreg), and
// the build may target others (CMAKE_CUDA_ARCHITECTURES).
bool single_pass_built();
template <class T>
Status forward_single_pass(const ChunkPlan& plan, const ChunkParams<T>& p, const SeqInfo* seqs, const float* h0,
                           float* ht, T* o, cudaStream_t stream);

// The GDN forward of 16-bit inputs without a backward where the single pass does not pay: prepare
// (Chain: A diag(β), P and the row scales; no W or U), then chain_kernel (chunk_fwd_single.cu), a
// block per (sequence, value head, 64 value columns) whose one warpgroup steps the chunks on wgmma.
// sm_90a only, as the single pass.
constexpr int kChainCols = 64;  // value columns a chain_kernel block: one warpgroup's
template <class T>
Status launch_chain(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace<T>& ws, const float* h0,
                    float* ht, T* o, cudaStream_t stream);

// Stage 3: o = scale (e^γ ⊙ Q S + P V'); also P and Q e^γ for the backward where ws.p, ws.qg are
// set. o == null: those two alone (the backward recomputing the forward).
template <class T, Gate G>
Status forward_output(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace<T>& ws, T* o,
                      cudaStream_t stream);

}  // namespace gdn::cuda::detail
