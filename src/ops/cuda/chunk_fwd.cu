// Chunkwise Gated DeltaNet forward (shared/DESIGN.md §2, chunk size 64), three kernels:
//   1. prepare   per (chunk, value head): cumulative gate, A = (I + StrictLower(diag(β) KKᵀ ⊙ Γ))⁻¹
//                by forward substitution (stored for the backward pass), W = A diag(β e^γ) K, U = A diag(β) V.
//   2. states    per (sequence, value head, 32 value columns), sequential over chunks: stores
//                the state entering each chunk, V' = U − W S (over U), S ← e^{γ_L} S + Kdᵀ V'.
//   3. output    per (chunk, value head, 64 value columns): O = scale (e^γ ⊙ Q S + P V'),
//                P = Q Kᵀ ⊙ Γ ⊙ LowerInclDiag.
// Stages 1–2 are reused by the backward pass to recompute W, V' and the chunk states.
#include <type_traits>

#include "chunk_fwd.cuh"

namespace gdn::cuda::detail {

namespace {

constexpr int kThreads = 256;
constexpr int kStateCols = 32;  // value columns per block of the state pass
constexpr int kOutCols = 64;    // value columns per block of the output pass

template <class T>
__global__ void __launch_bounds__(kThreads) prepare_kernel(ChunkParams<T> p, ForwardWorkspace ws) {
  constexpr bool kExact = std::is_same_v<T, float>;
  extern __shared__ float4 smem4[];
  float* ks = reinterpret_cast<float*>(smem4);  // [64][kLd]  k, then k ⊙ e^γ
  float* vs = ks + kChunk * kLd;                 // [64][kLd]
  float* ls = vs + kChunk * kLd;                 // [64][kLdL] strict lower part of M
  float* as = ls + kChunk * kLdL;                // [64][kLdC] A, then A diag(β)
  float* gam = as + kChunk * kLdC;               // [64]
  float* bet = gam + kChunk;                     // [64]

  const int c = blockIdx.x / p.HV, hv = blockIdx.x % p.HV, h = hv / (p.HV / p.H);
  const ChunkRef ch = chunk_ref(ws.seqs, ws.chunk_seq, c);
  const int warp = threadIdx.x >> 5, tid = threadIdx.x;

  load_rows(ks, p.k + (long(ch.start) * p.H + h) * kDim, long(p.H) * kDim, ch.len, p.l2norm);
  load_rows(vs, p.v + (long(ch.start) * p.HV + hv) * kDim, long(p.HV) * kDim, ch.len, false);
  load_gate_beta(gam, bet, p.g, p.beta, ch.start, ch.len, p.HV, hv);
  __syncthreads();

  {  // L = StrictLower(diag(β) (K Kᵀ) ⊙ Γ)
    float acc[1][4][4];
    zero(acc);
    const int m0 = (warp % 4) * 16, n0 = (warp / 4) * 32;
    warp_mma<kExact>(acc, RowMajorK{ks, kLd}, RowMajorK{ks, kLd}, m0, n0, kDim);
    for_each(acc, m0, n0, [&](int i, int j, float x) {
      ls[i * kLdL + j] = i > j ? bet[i] * x * __expf(gam[i] - gam[j]) : 0.f;
    });
  }
  __syncthreads();

  invert_unit_lower(as, ls);
  {  // A (kept for the backward pass), then A diag(β) in place; k rows scaled by e^γ for W.
    float* a_out = ws.a + (long(c) * p.HV + hv) * kChunk * kChunk;
    for (int i = tid; i < kChunk * kChunk; i += kThreads) {
      float& x = as[(i / kChunk) * kLdC + i % kChunk];
      a_out[i] = x;
      x *= bet[i % kChunk];
    }
    for (int i = tid; i < kChunk * kDim; i += kThreads) {
      const int r = i / kDim;
      ks[r * kLd + i % kDim] *= __expf(gam[r]);
    }
  }
  __syncthreads();

  const long base = (long(c) * p.HV + hv) * kChunk * kDim;
  const int m0 = (warp % 2) * 32, n0 = (warp / 2) * 32;
  {
    float acc[2][4][4];
    zero(acc);
    warp_mma<kExact>(acc, RowMajorK{as, kLdC}, ColMajorK{vs, kLd}, m0, n0, kChunk);
    for_each(acc, m0, n0, [&](int i, int j, float x) { ws.u[base + i * kDim + j] = x; });
  }
  {
    float acc[2][4][4];
    zero(acc);
    warp_mma<kExact>(acc, RowMajorK{as, kLdC}, ColMajorK{ks, kLd}, m0, n0, kChunk);
    for_each(acc, m0, n0, [&](int i, int j, float x) { ws.w[base + i * kDim + j] = x; });
  }
  if (tid < kChunk) ws.gam[(long(c) * p.HV + hv) * kChunk + tid] = gam[tid];
}

template <class T>
__global__ void __launch_bounds__(kThreads) state_kernel(ChunkParams<T> p, ForwardWorkspace ws, const float* h0,
                                                         float* ht) {
  constexpr bool kExact = std::is_same_v<T, float>;
  constexpr int kLdS = kStateCols + kPad;
  extern __shared__ float4 smem4[];
  float* wsm = reinterpret_cast<float*>(smem4);  // [64][kLd]
  float* kd = wsm + kChunk * kLd;                 // [64][kLd]  k ⊙ e^{γ_L − γ}
  float* s = kd + kChunk * kLd;                   // [128][kLdS] state columns
  float* up = s + kDim * kLdS;                    // [64][kLdS]  U, then V'
  float* gam = up + kChunk * kLdS;                // [64]

  constexpr int kTiles = kDim / kStateCols;
  const int n = blockIdx.x / (p.HV * kTiles), hv = blockIdx.x / kTiles % p.HV, h = hv / (p.HV / p.H);
  const int v0 = blockIdx.x % kTiles * kStateCols;
  const int warp = threadIdx.x >> 5, tid = threadIdx.x;
  const SeqInfo seq = ws.seqs[n];
  const long state_base = (long(n) * p.HV + hv) * kDim * kDim + v0;

  for (int i = tid; i < kDim * kStateCols; i += kThreads) {
    const int r = i / kStateCols, cc = i % kStateCols;
    s[r * kLdS + cc] = h0 ? h0[state_base + r * kDim + cc] : 0.f;
  }
  const int chunks = (seq.eos - seq.bos + kChunk - 1) / kChunk;
  for (int ci = 0; ci < chunks; ++ci) {
    const int c = seq.first_chunk + ci, start = seq.bos + ci * kChunk, len = min(kChunk, seq.eos - start);
    const long base = (long(c) * p.HV + hv) * kChunk * kDim;
    __syncthreads();  // previous chunk done with every buffer
    load_f32(wsm, kLd, ws.w + base, kDim, kChunk, kDim);
    load_f32(up, kLdS, ws.u + base + v0, kDim, kChunk, kStateCols);
    load_rows(kd, p.k + (long(start) * p.H + h) * kDim, long(p.H) * kDim, len, p.l2norm);
    if (tid < kChunk) gam[tid] = ws.gam[(long(c) * p.HV + hv) * kChunk + tid];
    store_f32(ws.h + (long(c) * p.HV + hv) * kDim * kDim + v0, kDim, s, kLdS, kDim, kStateCols);
    wait_async();
    __syncthreads();
    const float gl = gam[len - 1];
    for (int i = tid; i < kChunk * kDim; i += kThreads) {
      const int r = i / kDim;
      kd[r * kLd + i % kDim] *= __expf(gl - gam[r]);
    }
    {  // V' = U − W S
      float acc[1][2][4];
      zero(acc);
      const int m0 = (warp % 4) * 16, n0 = (warp / 4) * 16;
      warp_mma<kExact>(acc, RowMajorK{wsm, kLd}, ColMajorK{s, kLdS}, m0, n0, kDim);
      for_each(acc, m0, n0, [&](int i, int j, float x) {
        const float vn = up[i * kLdS + j] - x;
        up[i * kLdS + j] = vn;
        ws.u[base + i * kDim + v0 + j] = vn;
      });
    }
    __syncthreads();
    {  // S ← e^{γ_L} S + Kdᵀ V'
      float acc[1][4][4];
      const int m0 = warp * 16, n0 = 0;
      const float decay = __expf(gl);
      for_each(acc, m0, n0, [&](int i, int j, float& x) { x = decay * s[i * kLdS + j]; });
      warp_mma<kExact>(acc, ColMajorK{kd, kLd}, ColMajorK{up, kLdS}, m0, n0, kChunk);
      for_each(acc, m0, n0, [&](int i, int j, float x) { s[i * kLdS + j] = x; });
    }
  }
  __syncthreads();
  if (ht) store_f32(ht + state_base, kDim, s, kLdS, kDim, kStateCols);
}

template <class T>
__global__ void __launch_bounds__(kThreads) output_kernel(ChunkParams<T> p, ForwardWorkspace ws, T* o) {
  constexpr bool kExact = std::is_same_v<T, float>;
  constexpr int kLdO = kOutCols + kPad;
  extern __shared__ float4 smem4[];
  float* qs = reinterpret_cast<float*>(smem4);  // [64][kLd]
  float* ks = qs + kChunk * kLd;                 // [64][kLd]
  float* s = ks + kChunk * kLd;                  // [128][kLdO]
  float* vp = s + kDim * kLdO;                   // [64][kLdO]
  float* pm = vp + kChunk * kLdO;                // [64][kLdC]
  float* gam = pm + kChunk * kLdC;               // [64]

  constexpr int kTiles = kDim / kOutCols;
  const int c = blockIdx.x / (p.HV * kTiles), hv = blockIdx.x / kTiles % p.HV, h = hv / (p.HV / p.H);
  const int v0 = blockIdx.x % kTiles * kOutCols;
  const ChunkRef ch = chunk_ref(ws.seqs, ws.chunk_seq, c);
  const int warp = threadIdx.x >> 5, tid = threadIdx.x;
  const long base = (long(c) * p.HV + hv) * kChunk * kDim;

  load_f32(s, kLdO, ws.h + (long(c) * p.HV + hv) * kDim * kDim + v0, kDim, kDim, kOutCols);
  load_f32(vp, kLdO, ws.u + base + v0, kDim, kChunk, kOutCols);
  load_rows(qs, p.q + (long(ch.start) * p.H + h) * kDim, long(p.H) * kDim, ch.len, p.l2norm);
  load_rows(ks, p.k + (long(ch.start) * p.H + h) * kDim, long(p.H) * kDim, ch.len, p.l2norm);
  if (tid < kChunk) gam[tid] = ws.gam[(long(c) * p.HV + hv) * kChunk + tid];
  wait_async();
  __syncthreads();

  const int m0 = (warp % 4) * 16, n0 = (warp / 4) * 32;
  {  // P = Q Kᵀ ⊙ Γ, lower triangle with the diagonal
    float acc[1][4][4];
    zero(acc);
    warp_mma<kExact>(acc, RowMajorK{qs, kLd}, RowMajorK{ks, kLd}, m0, n0, kDim);
    for_each(acc, m0, n0, [&](int i, int j, float x) {
      pm[i * kLdC + j] = j <= i ? x * __expf(gam[i] - gam[j]) : 0.f;
    });
  }
  float acc[1][4][4];
  zero(acc);
  warp_mma<kExact>(acc, RowMajorK{qs, kLd}, ColMajorK{s, kLdO}, m0, n0, kDim);
  for_each(acc, m0, n0, [&](int i, int, float& x) { x *= __expf(gam[i]); });
  __syncthreads();
  warp_mma<kExact>(acc, RowMajorK{pm, kLdC}, ColMajorK{vp, kLdO}, m0, n0, kChunk);
  const float scale = p.scale;
  for_each(acc, m0, n0, [&](int i, int j, float x) {
    if (i < ch.len) o[(long(ch.start + i) * p.HV + hv) * kDim + v0 + j] = from_float<T>(scale * x);
  });
}

constexpr size_t kPrepareSmem = (2 * kChunk * kLd + kChunk * (kLdL + kLdC) + 2 * kChunk) * sizeof(float);
constexpr size_t kStateSmem =
    (2 * kChunk * kLd + (kDim + kChunk) * (kStateCols + kPad) + kChunk) * sizeof(float);
constexpr size_t kOutputSmem =
    (2 * kChunk * kLd + (kDim + kChunk) * (kOutCols + kPad) + kChunk * kLdC + kChunk) * sizeof(float);

}  // namespace

ForwardWorkspace carve_forward(Carve& cv, const ChunkPlan& plan, int HV) {
  ForwardWorkspace ws;
  ws.seqs = cv.take<SeqInfo>(plan.N);
  ws.chunk_seq = cv.take<int>(plan.NC);
  const size_t heads = size_t(plan.NC) * HV;
  ws.gam = cv.take<float>(heads * kChunk);
  ws.a = cv.take<float>(heads * kChunk * kChunk);
  ws.w = cv.take<float>(heads * kChunk * kDim);
  ws.u = cv.take<float>(heads * kChunk * kDim);
  ws.h = cv.take<float>(heads * kDim * kDim);
  return ws;
}

Status upload_plan(const ChunkPlan& plan, const ForwardWorkspace& ws, cudaStream_t stream) {
  // Pageable host memory: the copy has taken the data when cudaMemcpyAsync returns.
  GDN_CUDA_TRY(cudaMemcpyAsync(ws.seqs, plan.seqs.data(), plan.seqs.size() * sizeof(SeqInfo),
                               cudaMemcpyHostToDevice, stream));
  if (plan.NC > 0)
    GDN_CUDA_TRY(cudaMemcpyAsync(ws.chunk_seq, plan.chunk_seq.data(), plan.chunk_seq.size() * sizeof(int),
                                 cudaMemcpyHostToDevice, stream));
  return {};
}

template <class T>
Status forward_states(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace& ws,
                      const float* h0, float* ht, cudaStream_t stream) {
  GDN_CUDA_TRY(cudaFuncSetAttribute(prepare_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(kPrepareSmem)));
  GDN_CUDA_TRY(cudaFuncSetAttribute(state_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(kStateSmem)));
  if (plan.NC > 0) {
    prepare_kernel<T><<<unsigned(plan.NC * p.HV), kThreads, kPrepareSmem, stream>>>(p, ws);
    GDN_CUDA_LAUNCHED("gdn::cuda prepare_kernel");
  }
  state_kernel<T><<<unsigned(plan.N * p.HV * (kDim / kStateCols)), kThreads, kStateSmem, stream>>>(p, ws, h0, ht);
  GDN_CUDA_LAUNCHED("gdn::cuda state_kernel");
  return {};
}

template <class T>
Status forward_output(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace& ws, T* o,
                      cudaStream_t stream) {
  if (plan.NC == 0) return {};
  GDN_CUDA_TRY(cudaFuncSetAttribute(output_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(kOutputSmem)));
  output_kernel<T><<<unsigned(plan.NC * p.HV * (kDim / kOutCols)), kThreads, kOutputSmem, stream>>>(p, ws, o);
  GDN_CUDA_LAUNCHED("gdn::cuda output_kernel");
  return {};
}

template Status forward_states<float>(const ChunkPlan&, const ChunkParams<float>&, const ForwardWorkspace&,
                                      const float*, float*, cudaStream_t);
template Status forward_states<__nv_bfloat16>(const ChunkPlan&, const ChunkParams<__nv_bfloat16>&,
                                              const ForwardWorkspace&, const float*, float*, cudaStream_t);

namespace {
template <class T>
Status forward_typed(const ChunkShape& s, const ChunkForwardArgs& a, void* workspace, size_t bytes,
                     cudaStream_t stream) {
  ChunkPlan plan(s);
  if (!plan.error.empty()) return bad_input(plan.error);
  if (!a.q || !a.k || !a.v || !a.g || !a.beta || !a.o)
    return bad_input("gdn::cuda::chunk_forward: q, k, v, g, beta and o are required");
  Carve cv{static_cast<char*>(workspace)};
  const ForwardWorkspace ws = carve_forward(cv, plan, s.HV);
  if (cv.used > bytes)
    return bad_input(gdn::cat("gdn::cuda::chunk_forward: workspace of ", bytes, " bytes, needs ", cv.used));
  const ChunkParams<T> p{static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v),
                         a.g, a.beta, s.H, s.HV, plan.scale, s.l2norm_qk};
  if (Status st = upload_plan(plan, ws, stream); !st.ok()) return st;
  if (Status st = forward_states(plan, p, ws, a.h0, a.ht, stream); !st.ok()) return st;
  return forward_output(plan, p, ws, static_cast<T*>(a.o), stream);
}
}  // namespace

}  // namespace gdn::cuda::detail

namespace gdn::cuda {

size_t chunk_forward_workspace_bytes(const ChunkShape& s) {
  detail::ChunkPlan plan(s);
  detail::Carve cv{nullptr};
  detail::carve_forward(cv, plan, s.HV);
  return cv.used;
}

Status chunk_forward(const ChunkShape& s, const ChunkForwardArgs& a, void* workspace, size_t bytes,
                     cudaStream_t stream) {
  return s.dtype == DType::f32 ? detail::forward_typed<float>(s, a, workspace, bytes, stream)
                               : detail::forward_typed<__nv_bfloat16>(s, a, workspace, bytes, stream);
}

}  // namespace gdn::cuda
