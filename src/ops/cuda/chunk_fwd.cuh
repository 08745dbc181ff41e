// Forward stages shared by the chunk forward and backward launchers.
#pragma once

#include "chunk_plan.cuh"

namespace gdn::cuda::detail {

template <class T>
struct ChunkParams {
  const T *q, *k, *v;
  const float *g, *beta;
  int H, HV;
  float scale;
  bool l2norm;
};

// Per (chunk, value head) buffers, all fp32: cumulative gate [NC,HV,64], A [NC,HV,64,64],
// W and U [NC,HV,64,128] (U holds V' after the state pass), chunk-entry states h [NC,HV,128,128].
struct ForwardWorkspace {
  SeqInfo* seqs;
  int* chunk_seq;
  float *gam, *a, *w, *u, *h;
};

// Inclusive cumulative sum of g over the chunk's tokens (0 beyond len) and beta (0 beyond
// len), into smem; one warp.
__device__ inline void load_gate_beta(float* gam, float* bet, const float* g, const float* beta, int start, int len,
                               int HV, int hv) {
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  const int r0 = 2 * lane, r1 = r0 + 1;
  const float x0 = r0 < len ? g[long(start + r0) * HV + hv] : 0.f;
  const float x1 = r1 < len ? g[long(start + r1) * HV + hv] : 0.f;
  float s = x0 + x1;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float y = __shfl_up_sync(0xffffffffu, s, o);
    if (lane >= o) s += y;
  }
  gam[r0] = s - x1;
  gam[r1] = s;
  if (bet) {
    bet[r0] = r0 < len ? beta[long(start + r0) * HV + hv] : 0.f;
    bet[r1] = r1 < len ? beta[long(start + r1) * HV + hv] : 0.f;
  }
}

// as = (I + ls)⁻¹ for ls strictly lower triangular ([64][kLdC] each, no aliasing), by forward
// substitution: row j of A is final once the rows above it have been subtracted. Needs 256
// threads; thread (rows rset + 4m, column col) keeps its 16 entries in registers. Ends with a
// barrier.
__device__ inline void invert_unit_lower(float* as, const float* ls) {
  const int col = threadIdx.x % kChunk, rset = threadIdx.x / kChunk;
  float a[16];
#pragma unroll
  for (int m = 0; m < 16; ++m) a[m] = (rset + 4 * m == col) ? 1.f : 0.f;
  if (rset == 0) as[col] = col == 0 ? 1.f : 0.f;
  for (int j = 0; j < kChunk - 1; ++j) {
    __syncthreads();
    const float ajc = as[j * kLdC + col];
#pragma unroll
    for (int m = 0; m < 16; ++m) {
      const int i = rset + 4 * m;
      if (i > j) a[m] -= ls[i * kLdC + j] * ajc;
      if (i == j + 1) as[i * kLdC + col] = a[m];
    }
  }
  __syncthreads();
}

ForwardWorkspace carve_forward(Carve& cv, const ChunkPlan& plan, int HV);
Status upload_plan(const ChunkPlan& plan, const ForwardWorkspace& ws, cudaStream_t stream);

// Stages 1 and 2: gate cumsum, W, U, V' and the chunk states (and ht when non-null).
template <class T>
Status forward_states(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace& ws,
                      const float* h0, float* ht, cudaStream_t stream);

}  // namespace gdn::cuda::detail
