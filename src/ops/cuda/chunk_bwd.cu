// Chunkwise Gated DeltaNet backward. After the forward stages 1–2 (W, V', the chunk-entry
// states h; recomputed unless the workspace still holds them), five kernels; the math is bench/gpu/chunk_math_check.py, checked
// there against autograd of the recurrence in fp64:
//   1. intra_dv      per (chunk, value head, 64 columns): dV'_intra = scale Pᵀ dO, and the
//                    state pass's recurrence-free term scale Qgᵀ dO (Qg = Q e^γ)
//   2. state_bwd     per (sequence, value head, 32 columns), chunks in reverse: stores dS_next
//                    (the gradient of the state leaving each chunk), completes dV' = dV'_intra
//                    + Kd dS_next, and dS = e^{γ_L} dS_next + scale Qgᵀ dO − Wᵀ dV' (→ dh0)
//   3. state_grad    per (chunk, value head): the products with the states: dQ = scale e^γ dO Sᵀ,
//                    dW = −dV' Sᵀ, dK = e^{γ_L−γ} V' dS_nextᵀ, and e^{γ_L} Σ dS_next ⊙ S
//   4. intra_grad    per (chunk, value head): P, dP, the gradient through A, dQ, dK, dV, dβ, dg
//   5. qk_finish     per (token, q/k head): sums over grouped value heads, L2-norm backward
#include <type_traits>

#include "chunk_fwd.cuh"

namespace gdn::cuda::detail {
namespace {

constexpr int kThreads = 256;
constexpr int kStateCols = 32;
constexpr int kLdS = kStateCols + kPad;
constexpr int kHalf = 64;
constexpr int kLdH = kHalf + kPad;

struct BackwardWorkspace {
  ForwardWorkspace fwd;  // left as the forward pass wrote it
  float* dw;             // [NC,HV,64,128]  dW
  float* dh;             // [NC,HV,128,128] gradient of the state leaving each chunk
  float* dvp;            // [NC,HV,64,128]  dV'
  float* dgl;            // [NC,HV]         e^{γ_L} Σ dS_next ⊙ S
  float *dq_hat, *dk_hat;  // [B*T,HV,128]  gradients of the normalised q, k per value head
};

template <class T>
struct BackwardParams {
  ChunkParams<T> p;
  const T* d_o;
  const float* dht;
  T *dq, *dk, *dv;
  float *dg, *dbeta, *dh0;
  int tokens;  // B * T
};

template <class T>
__global__ void __launch_bounds__(kThreads) intra_dv_kernel(BackwardParams<T> bp, BackwardWorkspace ws) {
  constexpr bool kExact = std::is_same_v<T, float>;
  const ChunkParams<T>& p = bp.p;
  extern __shared__ float4 smem4[];
  float* qs = reinterpret_cast<float*>(smem4);  // [64][kLd]
  float* ks = qs + kChunk * kLd;                 // [64][kLd]
  float* dos = ks + kChunk * kLd;                // [64][kLdH]
  float* pm = dos + kChunk * kLdH;               // [64][kLdC]
  float* gam = pm + kChunk * kLdC;               // [64]

  constexpr int kTiles = kDim / kHalf;
  const int c = blockIdx.x / (p.HV * kTiles), hv = blockIdx.x / kTiles % p.HV, h = hv / (p.HV / p.H);
  const int v0 = blockIdx.x % kTiles * kHalf;
  const ChunkRef ch = chunk_ref(ws.fwd.seqs, ws.fwd.chunk_seq, c);
  const int warp = threadIdx.x >> 5, tid = threadIdx.x;
  load_rows(qs, p.q + (long(ch.start) * p.H + h) * kDim, long(p.H) * kDim, ch.len, p.l2norm);
  load_rows(ks, p.k + (long(ch.start) * p.H + h) * kDim, long(p.H) * kDim, ch.len, p.l2norm);
  load_cols<kHalf>(dos, kLdH, bp.d_o + (long(ch.start) * p.HV + hv) * kDim + v0, long(p.HV) * kDim, ch.len);
  if (tid < kChunk) gam[tid] = ws.fwd.gam[(long(c) * p.HV + hv) * kChunk + tid];
  __syncthreads();
  const int m0 = (warp % 4) * 16, n0 = (warp / 4) * 32;
  {
    float acc[1][4][4];
    zero(acc);
    warp_mma<kExact>(acc, RowMajorK{qs, kLd}, RowMajorK{ks, kLd}, m0, n0, kDim);
    const float scale = p.scale;
    for_each(acc, m0, n0, [&](int i, int j, float x) {
      pm[i * kLdC + j] = j <= i ? scale * x * __expf(gam[i] - gam[j]) : 0.f;
    });
  }
  __syncthreads();
  {
    float acc[1][4][4];
    zero(acc);
    warp_mma<kExact>(acc, ColMajorK{pm, kLdC}, ColMajorK{dos, kLdH}, m0, n0, kChunk);
    float* out = ws.dvp + (long(c) * p.HV + hv) * kChunk * kDim + v0;
    for_each(acc, m0, n0, [&](int i, int j, float x) { out[i * kDim + j] = x; });
  }
  // The state pass's recurrence-free term scale (Q e^γ)ᵀ dO, parked in dh[c] (which the
  // state pass reads, then overwrites with dS_next).
  for (int i = tid; i < kChunk * kDim; i += kThreads) {
    const int r = i / kDim;
    qs[r * kLd + i % kDim] *= p.scale * __expf(gam[r]);
  }
  __syncthreads();
  float acc[1][8][4];
  zero(acc);
  warp_mma<kExact>(acc, ColMajorK{qs, kLd}, ColMajorK{dos, kLdH}, warp * 16, 0, kChunk);
  float* out = ws.dh + (long(c) * p.HV + hv) * kDim * kDim + v0;
  for_each(acc, warp * 16, 0, [&](int i, int j, float x) { out[i * kDim + j] = x; });
}

template <class T>
__global__ void __launch_bounds__(kThreads) state_bwd_kernel(BackwardParams<T> bp, BackwardWorkspace ws) {
  constexpr bool kExact = std::is_same_v<T, float>;
  const ChunkParams<T>& p = bp.p;
  extern __shared__ float4 smem4[];
  float* kd = reinterpret_cast<float*>(smem4);  // [64][kLd] k e^{γ_L − γ}
  float* wsm = kd + kChunk * kLd;                // [64][kLd]
  float* ds = wsm + kChunk * kLd;                // [128][kLdS]
  float* dvt = ds + kDim * kLdS;                 // [64][kLdS] dV' columns
  float* gam = dvt + kChunk * kLdS;              // [64]

  constexpr int kTiles = kDim / kStateCols;
  const int n = blockIdx.x / (p.HV * kTiles), hv = blockIdx.x / kTiles % p.HV, h = hv / (p.HV / p.H);
  const int v0 = blockIdx.x % kTiles * kStateCols;
  const int warp = threadIdx.x >> 5, tid = threadIdx.x;
  const SeqInfo seq = ws.fwd.seqs[n];
  const long state_base = (long(n) * p.HV + hv) * kDim * kDim + v0;
  for (int i = tid; i < kDim * kStateCols; i += kThreads) {
    const int r = i / kStateCols, cc = i % kStateCols;
    ds[r * kLdS + cc] = bp.dht ? bp.dht[state_base + r * kDim + cc] : 0.f;
  }
  const int chunks = (seq.eos - seq.bos + kChunk - 1) / kChunk;
  const int m0 = warp * 16;  // dS rows of this warp
  for (int ci = chunks - 1; ci >= 0; --ci) {
    const int c = seq.first_chunk + ci, start = seq.bos + ci * kChunk, len = min(kChunk, seq.eos - start);
    const long base = (long(c) * p.HV + hv) * kChunk * kDim;
    float* dh_c = ws.dh + (long(c) * p.HV + hv) * kDim * kDim + v0;
    __syncthreads();
    load_f32(wsm, kLd, ws.fwd.w + base, kDim, kChunk, kDim);
    load_f32(dvt, kLdS, ws.dvp + base + v0, kDim, kChunk, kStateCols);
    float acc[1][4][4];  // scale (Q e^γ)ᵀ dO from intra_dv, then dS
    for_each(acc, m0, 0, [&](int i, int j, float& x) { x = dh_c[i * kDim + j]; });
    load_rows(kd, p.k + (long(start) * p.H + h) * kDim, long(p.H) * kDim, len, p.l2norm);
    if (tid < kChunk) gam[tid] = ws.fwd.gam[(long(c) * p.HV + hv) * kChunk + tid];
    wait_async();
    __syncthreads();  // also orders the reads of dh[c] above before its overwrite below
    store_f32(dh_c, kDim, ds, kLdS, kDim, kStateCols);
    const float gl = gam[len - 1];
    for (int i = tid; i < kChunk * kDim; i += kThreads) {
      const int r = i / kDim;
      kd[r * kLd + i % kDim] *= __expf(gl - gam[r]);
    }
    __syncthreads();
    {  // dV' = dV'_intra + Kd dS_next
      float dacc[1][2][4];
      const int r0 = (warp % 4) * 16, n0 = (warp / 4) * 16;
      for_each(dacc, r0, n0, [&](int i, int j, float& x) { x = dvt[i * kLdS + j]; });
      warp_mma<kExact>(dacc, RowMajorK{kd, kLd}, ColMajorK{ds, kLdS}, r0, n0, kDim);
      for_each(dacc, r0, n0, [&](int i, int j, float x) {
        dvt[i * kLdS + j] = x;
        ws.dvp[base + i * kDim + v0 + j] = x;
      });
    }
    __syncthreads();
    {  // dS = e^{γ_L} dS_next + scale (Q e^γ)ᵀ dO − Wᵀ dV'
      float accw[1][4][4];
      const float decay = __expf(gl);
      for_each(acc, m0, 0, [&](int i, int j, float& x) { x += decay * ds[i * kLdS + j]; });
      zero(accw);
      warp_mma<kExact>(accw, ColMajorK{wsm, kLd}, ColMajorK{dvt, kLdS}, m0, 0, kChunk);
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[0][nt][e] -= accw[0][nt][e];
      for_each(acc, m0, 0, [&](int i, int j, float x) { ds[i * kLdS + j] = x; });
    }
  }
  __syncthreads();
  if (bp.dh0) store_f32(bp.dh0 + state_base, kDim, ds, kLdS, kDim, kStateCols);
}

template <class T>
__global__ void __launch_bounds__(kThreads) state_grad_kernel(BackwardParams<T> bp, BackwardWorkspace ws) {
  constexpr bool kExact = std::is_same_v<T, float>;
  const ChunkParams<T>& p = bp.p;
  extern __shared__ float4 smem4[];
  float* sb = reinterpret_cast<float*>(smem4);  // [128][kLd] S, then dS_next
  float* x0 = sb + kDim * kLd;                   // [64][kLd]  dO, then V'
  float* x1 = x0 + kChunk * kLd;                 // [64][kLd]  dV'
  float* gam = x1 + kChunk * kLd;                // [64]
  float* red = gam + kChunk;                     // [8]

  const int c = blockIdx.x / p.HV, hv = blockIdx.x % p.HV;
  const ChunkRef ch = chunk_ref(ws.fwd.seqs, ws.fwd.chunk_seq, c);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, tid = threadIdx.x;
  const long base = (long(c) * p.HV + hv) * kChunk * kDim;
  const long sbase = (long(c) * p.HV + hv) * kDim * kDim;
  load_f32(sb, kLd, ws.fwd.h + sbase, kDim, kDim, kDim);
  load_f32(x1, kLd, ws.dvp + base, kDim, kChunk, kDim);
  load_rows(x0, bp.d_o + (long(ch.start) * p.HV + hv) * kDim, long(p.HV) * kDim, ch.len, false);
  if (tid < kChunk) gam[tid] = ws.fwd.gam[(long(c) * p.HV + hv) * kChunk + tid];
  wait_async();
  __syncthreads();
  const float gl = gam[ch.len - 1];
  const int m0 = (warp % 2) * 32, n0 = (warp / 2) * 32;
  float* dq_rows = ws.dq_hat + (long(ch.start) * p.HV + hv) * kDim;
  float* dk_rows = ws.dk_hat + (long(ch.start) * p.HV + hv) * kDim;
  const long row_stride = long(p.HV) * kDim;
  {
    float acc[2][4][4];
    zero(acc);
    warp_mma<kExact>(acc, RowMajorK{x0, kLd}, RowMajorK{sb, kLd}, m0, n0, kDim);
    const float scale = p.scale;
    for_each(acc, m0, n0, [&](int i, int j, float x) {
      if (i < ch.len) dq_rows[i * row_stride + j] = scale * __expf(gam[i]) * x;
    });
  }
  {
    float acc[2][4][4];
    zero(acc);
    warp_mma<kExact>(acc, RowMajorK{x1, kLd}, RowMajorK{sb, kLd}, m0, n0, kDim);
    for_each(acc, m0, n0, [&](int i, int j, float x) { ws.dw[base + i * kDim + j] = -x; });
  }
  {  // e^{γ_L} Σ dS_next ⊙ S
    const float* dsn = ws.dh + sbase;
    float s = 0.f;
#pragma unroll 16
    for (int i = tid; i < kDim * kDim; i += kThreads) s += dsn[i] * sb[(i / kDim) * kLd + i % kDim];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) red[warp] = s;
  }
  __syncthreads();
  if (tid == 0) {
    float s = 0.f;
    for (int w = 0; w < kThreads / 32; ++w) s += red[w];
    ws.dgl[long(c) * p.HV + hv] = __expf(gl) * s;
  }
  load_f32(sb, kLd, ws.dh + sbase, kDim, kDim, kDim);
  load_f32(x0, kLd, ws.fwd.u + base, kDim, kChunk, kDim);
  wait_async();
  __syncthreads();
  float acc[2][4][4];
  zero(acc);
  warp_mma<kExact>(acc, RowMajorK{x0, kLd}, RowMajorK{sb, kLd}, m0, n0, kDim);
  for_each(acc, m0, n0, [&](int i, int j, float x) {
    if (i < ch.len) dk_rows[i * row_stride + j] = __expf(gl - gam[i]) * x;
  });
}

template <class T>
__global__ void __launch_bounds__(kThreads, 1) intra_grad_kernel(BackwardParams<T> bp, BackwardWorkspace ws) {
  constexpr bool kExact = std::is_same_v<T, float>;
  const ChunkParams<T>& p = bp.p;
  extern __shared__ float4 smem4[];
  float* x0 = reinterpret_cast<float*>(smem4);  // [64][kLd] Q, then dV'
  float* x1 = x0 + kChunk * kLd;                 // [64][kLd] K
  float* x2 = x1 + kChunk * kLd;                 // [64][kLd] dO, then V
  float* x3 = x2 + kChunk * kLd;                 // [64][kLd] V', then dW
  float* y0 = x3 + kChunk * kLd;                 // [64][kLdC] P, then dA, then F
  float* y1 = y0 + kChunk * kLdC;                // [64][kLdC] dP ⊙ Γ, then dA Aᵀ
  float* y2 = y1 + kChunk * kLdC;                // [64][kLdC] StrictLower(K Kᵀ ⊙ Γ)
  float* y3 = y2 + kChunk * kLdC;                // [64][kLdC] A (from the forward pass)
  float* gam = y3 + kChunk * kLdC;               // [64]
  float* bet = gam + kChunk;                     // [64]
  float* dgam = bet + kChunk;                    // [64] gradient of the cumulative gate
  float* dbet = dgam + kChunk;                   // [64]
  float* kdsum = dbet + kChunk;                  // [64] Σ_k K ⊙ dK_state per row

  const int c = blockIdx.x / p.HV, hv = blockIdx.x % p.HV, h = hv / (p.HV / p.H);
  const ChunkRef ch = chunk_ref(ws.fwd.seqs, ws.fwd.chunk_seq, c);
  const int warp = threadIdx.x >> 5, tid = threadIdx.x;
  const long base = (long(c) * p.HV + hv) * kChunk * kDim;
  const long row_stride = long(p.HV) * kDim;
  float* dq_rows = ws.dq_hat + (long(ch.start) * p.HV + hv) * kDim;
  float* dk_rows = ws.dk_hat + (long(ch.start) * p.HV + hv) * kDim;

  load_f32(x3, kLd, ws.fwd.u + base, kDim, kChunk, kDim);
  load_f32(y3, kLdC, ws.fwd.a + (long(c) * p.HV + hv) * kChunk * kChunk, kChunk, kChunk, kChunk);
  load_rows(x0, p.q + (long(ch.start) * p.H + h) * kDim, long(p.H) * kDim, ch.len, p.l2norm);
  load_rows(x1, p.k + (long(ch.start) * p.H + h) * kDim, long(p.H) * kDim, ch.len, p.l2norm);
  load_rows(x2, bp.d_o + (long(ch.start) * p.HV + hv) * kDim, row_stride, ch.len, false);
  load_gate_beta(gam, bet, p.g, p.beta, ch.start, ch.len, p.HV, hv);
  if (tid < kChunk) dgam[tid] = dbet[tid] = kdsum[tid] = 0.f;
  wait_async();
  __syncthreads();

  // 64x128 products: warp tile 32x32. 64x64 products: warp tile 16x32.
  const int m0 = (warp % 2) * 32, n0 = (warp / 2) * 32;
  const int s0 = (warp % 4) * 16, t0 = (warp / 4) * 32;
  float dq[2][4][4], dk[2][4][4];
  for_each(dq, m0, n0, [&](int i, int j, float& x) { x = i < ch.len ? dq_rows[i * row_stride + j] : 0.f; });
  for_each(dk, m0, n0, [&](int i, int j, float& x) { x = i < ch.len ? dk_rows[i * row_stride + j] : 0.f; });
  // Gate gradients of the state terms: Qg = Q e^γ and Kd = K e^{γ_L − γ}.
  add_row_sums(dq, m0, n0, dgam, [&](int i, int j, float x) { return x * x0[i * kLd + j]; });
  add_row_sums(dk, m0, n0, kdsum, [&](int i, int j, float x) { return x * x1[i * kLd + j]; });
  {
    float acc[1][4][4];
    zero(acc);
    warp_mma<kExact>(acc, RowMajorK{x0, kLd}, RowMajorK{x1, kLd}, s0, t0, kDim);
    for_each(acc, s0, t0, [&](int i, int j, float x) {
      y0[i * kLdC + j] = j <= i ? x * __expf(gam[i] - gam[j]) : 0.f;
    });
    zero(acc);
    warp_mma<kExact>(acc, RowMajorK{x1, kLd}, RowMajorK{x1, kLd}, s0, t0, kDim);
    for_each(acc, s0, t0, [&](int i, int j, float x) {
      y2[i * kLdC + j] = j < i ? x * __expf(gam[i] - gam[j]) : 0.f;
    });
  }
  __syncthreads();
  {  // dP = scale dO V'ᵀ (lower with diagonal); dγ += rowsum(dP ⊙ P) − colsum(dP ⊙ P)
    float acc[1][4][4];
    zero(acc);
    warp_mma<kExact>(acc, RowMajorK{x2, kLd}, RowMajorK{x3, kLd}, s0, t0, kDim);
    const float scale = p.scale;
    for_each(acc, s0, t0, [&](int i, int j, float& x) {
      x = j <= i ? scale * x : 0.f;
      const float r = x * y0[i * kLdC + j];
      if (j < i) atomicAdd(dgam + j, -r);
      y1[i * kLdC + j] = j <= i ? x * __expf(gam[i] - gam[j]) : 0.f;
      x = j < i ? r : 0.f;  // the diagonal's row and column terms cancel
    });
    add_row_sums(acc, s0, t0, dgam, [](int, int, float x) { return x; });
  }
  __syncthreads();
  warp_mma<kExact>(dq, RowMajorK{y1, kLdC}, ColMajorK{x1, kLd}, m0, n0, kChunk);  // dQ += (dP ⊙ Γ) K
  warp_mma<kExact>(dk, ColMajorK{y1, kLdC}, ColMajorK{x0, kLd}, m0, n0, kChunk);  // dK += (dP ⊙ Γ)ᵀ Q
  __syncthreads();

  load_f32(x0, kLd, ws.dvp + base, kDim, kChunk, kDim);
  load_f32(x3, kLd, ws.dw + base, kDim, kChunk, kDim);
  load_rows(x2, p.v + (long(ch.start) * p.HV + hv) * kDim, row_stride, ch.len, false);
  wait_async();
  __syncthreads();
  {  // dA = (dW Kᵀ diag(e^γ) + dV' Vᵀ) diag(β)
    float acc[1][4][4], acc2[1][4][4];
    zero(acc);
    zero(acc2);
    warp_mma<kExact>(acc, RowMajorK{x3, kLd}, RowMajorK{x1, kLd}, s0, t0, kDim);
    warp_mma<kExact>(acc2, RowMajorK{x0, kLd}, RowMajorK{x2, kLd}, s0, t0, kDim);
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = t0 + 8 * nt + 2 * ((tid & 31) & 3) + (e & 1);
        acc[0][nt][e] = (acc[0][nt][e] * __expf(gam[j]) + acc2[0][nt][e]) * bet[j];
      }
    for_each(acc, s0, t0, [&](int i, int j, float x) { y0[i * kLdC + j] = x; });
  }
  __syncthreads();
  {  // X = dA Aᵀ
    float acc[1][4][4];
    zero(acc);
    warp_mma<kExact>(acc, RowMajorK{y0, kLdC}, RowMajorK{y3, kLdC}, s0, t0, kChunk);
    for_each(acc, s0, t0, [&](int i, int j, float x) { y1[i * kLdC + j] = x; });
  }
  __syncthreads();
  {  // dM = −Aᵀ X, strictly lower; M_ij = β_i (K Kᵀ)_ij Γ_ij
    float acc[1][4][4];
    zero(acc);
    warp_mma<kExact>(acc, ColMajorK{y3, kLdC}, ColMajorK{y1, kLdC}, s0, t0, kChunk);
    float racc[1][4][4];
    for_each(acc, s0, t0, [&](int i, int j, float& x) { x = j < i ? -x : 0.f; });
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) racc[0][nt][e] = acc[0][nt][e];
    add_row_sums(racc, s0, t0, dbet, [&](int i, int j, float x) { return x * y2[i * kLdC + j]; });
    for_each(racc, s0, t0, [&](int i, int j, float& x) {
      x *= bet[i] * y2[i * kLdC + j];
      if (j < i) atomicAdd(dgam + j, -x);
    });
    add_row_sums(racc, s0, t0, dgam, [](int, int, float x) { return x; });
    for_each(acc, s0, t0, [&](int i, int j, float x) {
      y0[i * kLdC + j] = j < i ? bet[i] * x * __expf(gam[i] - gam[j]) : 0.f;
    });
  }
  {  // W = A diag(β e^γ) K: Tw = Aᵀ dW
    float acc[2][4][4];
    zero(acc);
    warp_mma<kExact>(acc, ColMajorK{y3, kLdC}, ColMajorK{x3, kLd}, m0, n0, kChunk);
    add_row_sums(acc, m0, n0, dbet,
                 [&](int i, int j, float x) { return __expf(gam[i]) * x * x1[i * kLd + j]; });
    add_row_sums(acc, m0, n0, dgam,
                 [&](int i, int j, float x) { return bet[i] * __expf(gam[i]) * x * x1[i * kLd + j]; });
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = m0 + 16 * mt + ((tid & 31) >> 2) + 8 * (e >> 1);
          dk[mt][nt][e] += bet[i] * __expf(gam[i]) * acc[mt][nt][e];
        }
  }
  {  // U = A diag(β) V: Tu = Aᵀ dV'
    float acc[2][4][4];
    zero(acc);
    warp_mma<kExact>(acc, ColMajorK{y3, kLdC}, ColMajorK{x0, kLd}, m0, n0, kChunk);
    add_row_sums(acc, m0, n0, dbet, [&](int i, int j, float x) { return x * x2[i * kLd + j]; });
    T* dv_rows = bp.dv + (long(ch.start) * p.HV + hv) * kDim;
    for_each(acc, m0, n0, [&](int i, int j, float x) {
      if (i < ch.len) dv_rows[i * row_stride + j] = from_float<T>(bet[i] * x);
    });
  }
  __syncthreads();
  warp_mma<kExact>(dk, RowMajorK{y0, kLdC}, ColMajorK{x1, kLd}, m0, n0, kChunk);  // dK += F K
  warp_mma<kExact>(dk, ColMajorK{y0, kLdC}, ColMajorK{x1, kLd}, m0, n0, kChunk);  // dK += Fᵀ K
  for_each(dq, m0, n0, [&](int i, int j, float x) {
    if (i < ch.len) dq_rows[i * row_stride + j] = x;
  });
  for_each(dk, m0, n0, [&](int i, int j, float x) {
    if (i < ch.len) dk_rows[i * row_stride + j] = x;
  });
  __syncthreads();
  if (tid == 0) {
    // Kd = K e^{γ_L − γ}: −Σ K ⊙ dK_state on each row, +their total on γ_L; then the state
    // decay's term; then g is the reverse cumulative sum of dγ.
    float total = ws.dgl[long(c) * p.HV + hv];
    for (int i = 0; i < ch.len; ++i) {
      dgam[i] -= kdsum[i];
      total += kdsum[i];
    }
    dgam[ch.len - 1] += total;
    float acc = 0.f;
    for (int i = ch.len - 1; i >= 0; --i) {
      acc += dgam[i];
      bp.dg[long(ch.start + i) * p.HV + hv] = acc;
      bp.dbeta[long(ch.start + i) * p.HV + hv] = dbet[i];
    }
  }
}

// One warp per (token, q/k head): dx = r (dy − y (y · dy)), y = x r, r = 1/sqrt(|x|² + 1e-6),
// dy summed over the value heads of the group.
template <class T>
__global__ void qk_finish_kernel(BackwardParams<T> bp, BackwardWorkspace ws) {
  const ChunkParams<T>& p = bp.p;
  const long row = long(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= long(bp.tokens) * p.H) return;
  const long tok = row / p.H;
  const int h = int(row % p.H), group = p.HV / p.H;
  for (int which = 0; which < 2; ++which) {
    const T* x = (which == 0 ? p.q : p.k) + row * kDim + 4 * lane;
    const float* hat = (which == 0 ? ws.dq_hat : ws.dk_hat) + (tok * p.HV + long(h) * group) * kDim + 4 * lane;
    float xv[4], dy[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int i = 0; i < 4; ++i) xv[i] = to_float(x[i]);
    for (int gi = 0; gi < group; ++gi) {
      const float4 d = *reinterpret_cast<const float4*>(hat + gi * kDim);
      dy[0] += d.x, dy[1] += d.y, dy[2] += d.z, dy[3] += d.w;
    }
    float dx[4] = {dy[0], dy[1], dy[2], dy[3]};
    if (p.l2norm) {
      float ss = 0.f;
#pragma unroll
      for (int i = 0; i < 4; ++i) ss += xv[i] * xv[i];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
      const float r = rsqrtf(ss + 1e-6f);
      float yd = 0.f;
#pragma unroll
      for (int i = 0; i < 4; ++i) yd += xv[i] * r * dy[i];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) yd += __shfl_xor_sync(0xffffffffu, yd, o);
#pragma unroll
      for (int i = 0; i < 4; ++i) dx[i] = r * (dy[i] - xv[i] * r * yd);
    }
    T* out = (which == 0 ? bp.dq : bp.dk) + row * kDim + 4 * lane;
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = from_float<T>(dx[i]);
  }
}

constexpr size_t kIntraDvSmem = (2 * kChunk * kLd + kChunk * kLdH + kChunk * kLdC + kChunk) * sizeof(float);
constexpr size_t kStateBwdSmem = (2 * kChunk * kLd + (kDim + kChunk) * kLdS + kChunk) * sizeof(float);
constexpr size_t kStateGradSmem = ((kDim + 2 * kChunk) * kLd + kChunk + 8) * sizeof(float);
constexpr size_t kIntraGradSmem = (4 * kChunk * kLd + 4 * kChunk * kLdC + 5 * kChunk) * sizeof(float);

BackwardWorkspace carve_backward(Carve& cv, const ChunkPlan& plan, const ChunkShape& s) {
  BackwardWorkspace ws;
  ws.fwd = carve_forward(cv, plan, s.HV);
  const size_t heads = size_t(plan.NC) * s.HV;
  ws.dw = cv.take<float>(heads * kChunk * kDim);
  ws.dh = cv.take<float>(heads * kDim * kDim);
  ws.dvp = cv.take<float>(heads * kChunk * kDim);
  ws.dgl = cv.take<float>(heads);
  const size_t rows = size_t(s.B) * s.T * s.HV * kDim;
  ws.dq_hat = cv.take<float>(rows);
  ws.dk_hat = cv.take<float>(rows);
  return ws;
}

template <class K>
Status allow_smem(K kernel, size_t bytes) {
  GDN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  return {};
}

template <class T>
Status backward_typed(const ChunkShape& s, const ChunkBackwardArgs& a, void* workspace, size_t bytes,
                      cudaStream_t stream) {
  ChunkPlan plan(s);
  if (!plan.error.empty()) return bad_input(plan.error);
  if (!a.q || !a.k || !a.v || !a.g || !a.beta || !a.d_o || !a.dq || !a.dk || !a.dv || !a.dg || !a.dbeta)
    return bad_input("gdn::cuda::chunk_backward: q, k, v, g, beta, d_o, dq, dk, dv, dg and dbeta are required");
  if (a.h0 && !a.dh0) return bad_input("gdn::cuda::chunk_backward: h0 is given, so dh0 is required");
  Carve cv{static_cast<char*>(workspace)};
  const BackwardWorkspace ws = carve_backward(cv, plan, s);
  if (cv.used > bytes)
    return bad_input(gdn::cat("gdn::cuda::chunk_backward: workspace of ", bytes, " bytes, needs ", cv.used));
  BackwardParams<T> bp;
  bp.p = {static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v), a.g, a.beta,
          s.H, s.HV, plan.scale, s.l2norm_qk};
  bp.d_o = static_cast<const T*>(a.d_o);
  bp.dht = a.dht;
  bp.dq = static_cast<T*>(a.dq), bp.dk = static_cast<T*>(a.dk), bp.dv = static_cast<T*>(a.dv);
  bp.dg = a.dg, bp.dbeta = a.dbeta, bp.dh0 = a.h0 ? a.dh0 : nullptr;
  bp.tokens = s.B * s.T;

  if (!a.workspace_has_forward) {
    if (Status st = upload_plan(plan, ws.fwd, stream); !st.ok()) return st;
    if (Status st = forward_states(plan, bp.p, ws.fwd, a.h0, nullptr, stream); !st.ok()) return st;
  }
  for (Status st : {allow_smem(intra_dv_kernel<T>, kIntraDvSmem), allow_smem(state_bwd_kernel<T>, kStateBwdSmem),
                    allow_smem(state_grad_kernel<T>, kStateGradSmem),
                    allow_smem(intra_grad_kernel<T>, kIntraGradSmem)})
    if (!st.ok()) return st;
  if (plan.NC > 0) {
    intra_dv_kernel<T><<<unsigned(plan.NC * s.HV * (kDim / kHalf)), kThreads, kIntraDvSmem, stream>>>(bp, ws);
    GDN_CUDA_LAUNCHED("gdn::cuda intra_dv_kernel");
  }
  state_bwd_kernel<T><<<unsigned(plan.N * s.HV * (kDim / kStateCols)), kThreads, kStateBwdSmem, stream>>>(bp, ws);
  GDN_CUDA_LAUNCHED("gdn::cuda state_bwd_kernel");
  if (plan.NC > 0) {
    state_grad_kernel<T><<<unsigned(plan.NC * s.HV), kThreads, kStateGradSmem, stream>>>(bp, ws);
    GDN_CUDA_LAUNCHED("gdn::cuda state_grad_kernel");
    intra_grad_kernel<T><<<unsigned(plan.NC * s.HV), kThreads, kIntraGradSmem, stream>>>(bp, ws);
    GDN_CUDA_LAUNCHED("gdn::cuda intra_grad_kernel");
    const long rows = long(bp.tokens) * s.H;
    qk_finish_kernel<T><<<unsigned((rows + 7) / 8), kThreads, 0, stream>>>(bp, ws);
    GDN_CUDA_LAUNCHED("gdn::cuda qk_finish_kernel");
  }
  return {};
}

}  // namespace
}  // namespace gdn::cuda::detail

namespace gdn::cuda {

size_t chunk_backward_workspace_bytes(const ChunkShape& s) {
  detail::ChunkPlan plan(s);
  detail::Carve cv{nullptr};
  detail::carve_backward(cv, plan, s);
  return cv.used;
}

Status chunk_backward(const ChunkShape& s, const ChunkBackwardArgs& a, void* workspace, size_t bytes,
                      cudaStream_t stream) {
  return s.dtype == DType::f32 ? detail::backward_typed<float>(s, a, workspace, bytes, stream)
                               : detail::backward_typed<__nv_bfloat16>(s, a, workspace, bytes, stream);
}

}  // namespace gdn::cuda
