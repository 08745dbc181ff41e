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

// Per (chunk, value head) buffers, all fp32: cumulative gate [NC,HV,64], W and U [NC,HV,64,128]
// (U holds V' after the state pass), chunk-entry states h [NC,HV,128,128].
struct ForwardWorkspace {
  SeqInfo* seqs;
  int* chunk_seq;
  float *gam, *w, *u, *h;
};

ForwardWorkspace carve_forward(Carve& cv, const ChunkPlan& plan, int HV);
Status upload_plan(const ChunkPlan& plan, const ForwardWorkspace& ws, cudaStream_t stream);

// Stages 1 and 2: gate cumsum, W, U, V' and the chunk states (and ht when non-null).
template <class T>
Status forward_states(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace& ws,
                      const float* h0, float* ht, cudaStream_t stream);

}  // namespace gdn::cuda::detail
