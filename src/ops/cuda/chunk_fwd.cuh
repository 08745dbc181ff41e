// Forward stages shared by the chunk forward and backward launchers.
#pragma once

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

// Per (chunk, value head) buffers. fp32: the cumulative gate [NC,HV,64] (vector gate:
// [NC,HV,64,128]) and U = A diag(β) V
// [NC,HV,64,128]. In the input type T, the values that only feed mma operands (tile.cuh):
// A [NC,HV,64,64], W [NC,HV,64,128], Kd = K e^{γ_L − γ} [NC,HV,64,128], V' [NC,HV,64,128]
// (the state pass's U − W S; for the additive rule V itself), chunk-entry states h
// [NC,HV,128,128]. A, W and U exist for the delta rule only (null otherwise). Rows beyond a
// chunk's length are zero. bf16 only: h_lo = S − h in bf16 [NC,HV,128,128], so
// that h + h_lo carries S to ~16 bits for the gate gradient's Σ dS_next ⊙ S, which is not an
// mma operand (bench/gpu/bf16_gate_grad.py); null for fp32, where h is S. Vector gate only (null
// otherwise), in T: the gated products P = gated Q Kᵀ (lower with the diagonal) and, for the delta
// rule, N = gated K Kᵀ (strictly lower), [NC,HV,64,64]: formed once by prepare, read by the output
// pass and the backward.
template <class T>
struct ForwardWorkspace {
  SeqInfo* seqs;
  int* chunk_seq;
  float *gam, *u;
  T *a, *w, *kd, *vn, *h, *h_lo, *p, *n;
};

// Inclusive cumulative sum of g over the chunk's tokens (0 beyond len; all 0 when g is null:
// no gate) and, when beta is given, beta (0 beyond len), into smem; one warp.
__device__ inline void load_gate_beta(float* gam, float* bet, const float* g, const float* beta, int start, int len,
                               int HV, int hv) {
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  const int r0 = 2 * lane, r1 = r0 + 1;
  const float x0 = g && r0 < len ? g[long(start + r0) * HV + hv] : 0.f;
  const float x1 = g && r1 < len ? g[long(start + r1) * HV + hv] : 0.f;
  float s = x0 + x1;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float y = __shfl_up_sync(0xffffffffu, s, o);
    if (lane >= o) s += y;
  }
  gam[r0] = s - x1;
  gam[r1] = s;
  if (beta) {
    bet[r0] = r0 < len ? beta[long(start + r0) * HV + hv] : 0.f;
    bet[r1] = r1 < len ? beta[long(start + r1) * HV + hv] : 0.f;
  }
}

// Row stride of the strictly lower matrix that invert_unit_lower reads: odd, so that a warp
// reading one column (32 rows) hits 32 banks.
constexpr int kLdL = kChunk + 1;

// Calls f(row, col, value) for every element of (I + ls)⁻¹, ls ([64][kLdL]) strictly lower
// triangular, zero on and above the diagonal. Columns are independent: warp w solves columns
// 8w..8w+7 by forward substitution, lane l holding rows l and l + 32; row j of a column is
// final once rows < j have been subtracted from it, and is then broadcast by a shuffle.
// 256 threads; a barrier after the last read of ls (f may overwrite it) and one at the end.
template <class F>
__device__ inline void invert_unit_lower(const float* ls, F&& f) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c0 = 8 * warp;
  float a[8][2];
#pragma unroll
  for (int cc = 0; cc < 8; ++cc) {
    a[cc][0] = lane == c0 + cc ? 1.f : 0.f;
    a[cc][1] = lane + 32 == c0 + cc ? 1.f : 0.f;
  }
  for (int j = 0; j < kChunk - 1; ++j) {
    const float l_lo = ls[lane * kLdL + j], l_hi = ls[(lane + 32) * kLdL + j];
#pragma unroll
    for (int cc = 0; cc < 8; ++cc) {
      const float aj = __shfl_sync(0xffffffffu, j < 32 ? a[cc][0] : a[cc][1], j & 31);
      a[cc][0] -= l_lo * aj;
      a[cc][1] -= l_hi * aj;
    }
  }
  __syncthreads();
#pragma unroll
  for (int cc = 0; cc < 8; ++cc) {
    f(lane, c0 + cc, a[cc][0]);
    f(lane + 32, c0 + cc, a[cc][1]);
  }
  __syncthreads();
}

template <class T>
ForwardWorkspace<T> carve_forward(Carve& cv, const ChunkPlan& plan, int HV, Update update, Gate gate);
Status upload_plan(const ChunkPlan& plan, SeqInfo* seqs, int* chunk_seq, cudaStream_t stream);

// Stages 1 and 2: gate cumsum, A, W, Kd, U, V' and the chunk states (and ht when non-null).
template <class T, Update U, Gate G>
Status forward_states(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace<T>& ws,
                      const float* h0, float* ht, cudaStream_t stream);

}  // namespace gdn::cuda::detail
