// Chunkwise Gated DeltaNet forward (shared/DESIGN.md §2, chunk size 64), three kernels:
//   1. prepare   per (chunk, value head): cumulative gate, A = (I + StrictLower(diag(β) KKᵀ ⊙ Γ))⁻¹
//                by 16×16 blocks (chunk_fwd.cuh; stored when a backward follows), W = A diag(β e^γ) K,
//                U = A diag(β) V, Kd = K e^{γ_L − γ}; for the fused output (kFusedOutput: the delta
//                rule, scalar gate, 16-bit inputs) P = Q Kᵀ ⊙ Γ ⊙ LowerInclDiag, and in place of Kd
//                the row scales rs of k and q (e^{γ_L − γ} / ‖k‖, e^γ / ‖q‖; chunk_fwd.cuh).
//   2. states    per (sequence, value head, 32 or 64 value columns), sequential over chunks, the
//                state in registers and chunk c+1's W, Kd (kFusedOutput: k and its row scales), U
//                (c+1..c+3 with few sequences) copied in while chunk c computes:
//                stores the state entering each chunk (h, and for 16-bit inputs its 8-bit
//                extension h_ext, when a backward follows; from the registers), V' = U − W S,
//                S ← e^{γ_L} S + Kdᵀ V'.
//                kFusedOutput: a second group of 256 threads forms O = scale (e^γ ⊙ Q S + P V')
//                of chunk c − 1 beside the step of chunk c, from the state and V' the step left
//                in shared memory; h, h_ext and V' are stored only when a backward follows.
// The additive rule (template parameter U) is the same kernels without A, W and U: prepare
// stores V' = V (zero rows beyond the chunk), and the state pass streams it in place of W, U.
//   3. output    (not kFusedOutput) per (chunk, value head): O = scale (e^γ ⊙ Q S + P V'),
//                P = Q Kᵀ ⊙ Γ ⊙ LowerInclDiag; when a backward follows it also stores P and
//                Q e^γ, the reverse state pass's operands.
// The vector gate (template parameter G; GLA, KDA) keeps the cumulative gate per key dimension,
// a [64][128] tile: prepare forms the gated products P (first, from q in v's tile; v is copied
// while N is formed) and N (for L) by gate.cuh's sub-chunked scheme and stores them (output and
// backward read them), W, Kd and Q e^γ scale elements instead
// of rows, and the state decays row by row (e^{γ_L} per dimension).
// Stages 1–2 (the state pass without the output) are reused by the backward pass. The GDN forward
// of 16-bit inputs without a backward runs on sm_90a as one kernel instead where sequences × value
// heads fill the GPU, else as prepare (Chain: A diag(β), P and the row scales, no W or U) and the
// chain kernel (chunk_fwd_single.cu).
#include "chunk_fwd.cuh"

#include <cstddef>
#include <map>
#include <vector>

#include "core_tile.cuh"

namespace gdn::cuda::detail {

namespace {

constexpr int kThreads = kBlockThreads;  // the block size tile.cuh's copies are unrolled for
constexpr int kStateCols = 32;  // value columns per block of the state pass without the output

// Q e^γ of the scalar gate: the [64][128] tile q (row stride ld) with row r times e^{γ_r}, into a
// chunk's [64][128] block of the workspace; 256 threads.
template <class T>
__device__ void store_gated_rows(T* dst, const T* q, int ld, const float2* gam) {
  for (int i = threadIdx.x; i < kChunk * kDim / 4; i += kThreads) {
    const int r = i / (kDim / 4), j = 4 * (i % (kDim / 4));
    const float4 x = load4(q + r * ld + j);
    const float e = __expf(gam[r].x);
    store4(dst + r * kDim + j, make_float4(e * x.x, e * x.y, e * x.z, e * x.w));
  }
}

// The delta rule's tiles for L, A and W.
template <class T>
struct InverseSmem {
  union {
    T q[kChunk * tile_ld<T>(kDim)];  // Q, for P (kFusedOutput) before L is formed
    float l[kChunk * kLdL];          // L = StrictLower(diag(β) N), its diagonal blocks then inverted in place
    T w[kChunk * tile_ld<T>(kDim)];  // W, staged
  };
  T a[kChunk * tile_ld<T>(kChunk)];  // A, staged (vector gate: N before it)
};

template <class T, Update U, Gate G>
struct PrepareSmem {
  T k[kChunk * tile_ld<T>(kDim)];  // k; the delta rule's W operand β e^γ ⊙ k after N is formed
  Only<kDelta<U>, InverseSmem<T>> inv;
  Only<kVector<G>, float[kChunk * kLdG]> gv;                       // cumulative vector gate
  Only<kVector<G>, T[kChunk * tile_ld<T>(kDim)]> scratch;          // gated_lower's operands
  Only<kVector<G> && !kDelta<U>, T[kChunk * tile_ld<T>(kChunk)]> p;  // P, staged (delta rule: in inv.a)
  Only<!kVector<G>, float4[kChunk]> row_scale;  // scalar gate, per row: gate_row_scale
  Only<kFusedOutput<T, U, G>, float[2][kChunk]> rnorm;  // 1 / ‖k_r‖, 1 / ‖q_r‖ (with the L2 norm)
  float2 gam[kChunk];  // scalar gate: γ as hi + lo (chunk_fwd.cuh)
  float bet[kChunk];
  // v; the delta rule's U operand β ⊙ v likewise (vector gate: q first, for P). Last: the chain's
  // prepare, which reads no v, is launched without it (prepare_smem_bytes).
  alignas(16) T v[kChunk * tile_ld<T>(kDim)];
};
template <class T, Update U, Gate G, bool Chain>
constexpr int prepare_smem_bytes() {
  using PS = PrepareSmem<T, U, G>;
  return int(Chain ? offsetof(PS, v) : sizeof(PS));
}

// Scalar gate, bf16: 3 blocks per SM (at most 80 registers); fp32 tiles fit 2. The vector
// gate's tiles fit 2 (bf16) or 1 (fp32). The chain's, without v, 4 (at most 64 registers).
template <class T, Gate G, bool Chain = false>
constexpr int kPrepareBlocksPerSm = Chain ? 4 : kVector<G> ? (sizeof(T) == 2 ? 2 : 1) : sizeof(T) == 2 ? 3 : 2;

// Chain (the GDN forward of 16-bit inputs without a backward, for chain_kernel): no W, U, v or γ;
// A diag(β) (its products in tf32, as the single pass's) into ws.a and P into ws.p, both in the
// core layout (core_tile.cuh), and the row scales and decay of kChainRowScaleStride into ws.rs.
template <class T, Update U, Gate G, bool Chain = false>
__global__ void __launch_bounds__(kThreads, (kPrepareBlocksPerSm<T, G, Chain>))
    prepare_kernel(ChunkParams<T> p, ForwardWorkspace<T> ws) {
  static_assert(!Chain || kFusedOutput<T, U, G>, "the chain forward is the fused output's");
  constexpr int ldK = tile_ld<T>(kDim), ldC = tile_ld<T>(kChunk);
  extern __shared__ float4 smem4[];
  PrepareSmem<T, U, G>& sm = *reinterpret_cast<PrepareSmem<T, U, G>*>(smem4);

  const int c = Chain && ws.order ? ws.order[blockIdx.x / p.HV] : blockIdx.x / p.HV;
  const int hv = blockIdx.x % p.HV, h = hv / (p.HV / p.H);
  const ChunkRef ch = chunk_ref(ws.seqs, ws.chunk_seq, c);
  const int warp = threadIdx.x >> 5, tid = threadIdx.x;
  const long hc = long(c) * p.HV + hv;

  // k, v (and q) by cp.async, all in flight at once, then the L2 norm in place. The vector gate
  // takes q first in v's tile, for P, and v while it forms N.
  const T* q_rows = p.q + (long(ch.start) * p.H + h) * kDim;
  const T* v_rows = p.v + (long(ch.start) * p.HV + hv) * kDim;
  load_tile_zero_fill(sm.k, ldK, p.k + (long(ch.start) * p.H + h) * kDim, long(p.H) * kDim, ch.len, kDim);
  if constexpr (kVector<G>)
    load_tile_zero_fill(sm.v, ldK, q_rows, long(p.H) * kDim, ch.len, kDim);
  else if constexpr (!Chain)
    load_tile_zero_fill(sm.v, ldK, v_rows, long(p.HV) * kDim, ch.len, kDim);
  if constexpr (kFusedOutput<T, U, G>) load_tile_zero_fill(sm.inv.q, ldK, q_rows, long(p.H) * kDim, ch.len, kDim);
  commit_async();
  load_gate_beta(sm.gam, sm.bet, kVector<G> ? nullptr : p.g, p.beta, ch.start, ch.len, p.HV, hv);
  if constexpr (kVector<G>) load_gate_vec(sm.gv, p.g, ch.start, ch.len, p.HV, hv);
  wait_async();
  __syncthreads();
  if (p.l2norm) {
    if constexpr (kFusedOutput<T, U, G>) {
      normalize_rows(sm.k, ldK, sm.rnorm[0]);
      normalize_rows(sm.inv.q, ldK, sm.rnorm[1]);
    } else {
      normalize_rows(sm.k, ldK);
      if constexpr (kVector<G>) normalize_rows(sm.v, ldK);
    }
    __syncthreads();
  }
  if constexpr (kVector<G>) {  // P = gated Q Kᵀ for the output pass and the backward; then v over q
    T* pt;
    if constexpr (kDelta<U>)
      pt = sm.inv.a;
    else
      pt = sm.p;
    gated_lower(sm.v, sm.k, ldK, sm.gv, sm.scratch, true,
                [&](int i, int j, float x) { pt[i * ldC + j] = from_float<T>(x); });
    __syncthreads();
    load_tile_zero_fill(sm.v, ldK, v_rows, long(p.HV) * kDim, ch.len, kDim);
    commit_async();
    store_tile(ws.p + hc * kChunk * kChunk, kChunk, pt, ldC, kChunk, kChunk);
    if constexpr (kDelta<U>) __syncthreads();  // P is read: N goes over it
  }

  if constexpr (!kVector<G>) {
    if (tid < kChunk) {
      const float4 f = gate_row_scale(sm.gam[ch.len - 1], sm.gam[tid], kDelta<U> ? sm.bet[tid] : 0.f);
      sm.row_scale[tid] = f;
      if constexpr (kFusedOutput<T, U, G>) {  // Kd's and Q e^γ's rows as scales of k and q
        const bool row = tid < ch.len;
        float* rs = ws.rs + hc * (Chain ? kChainRowScaleStride : kRowScaleStride);
        const float rk = p.l2norm ? sm.rnorm[0][tid] : 1.f, rq = p.l2norm ? sm.rnorm[1][tid] : 1.f;
        rs[tid] = row ? f.x * rk : 0.f;
        rs[kChunk + tid] = row ? f.w * rq : 0.f;
        if constexpr (Chain) {
          rs[2 * kChunk + tid] = row ? f.w * rk : 0.f;
          if (tid == 0) rs[3 * kChunk] = __expf(sm.gam[ch.len - 1].x);
        }
      }
    }
  }
  if constexpr (kDelta<U> && kVector<G>) {  // N_ij = Σ_d k_id k_jd e^{γ_id − γ_jd} (j < i), L = diag(β) N
    gated_lower(sm.k, sm.k, ldK, sm.gv, sm.scratch, false, [&](int i, int j, float x) {
      sm.inv.l[i * kLdL + j] = sm.bet[i] * x;
      sm.inv.a[i * ldC + j] = from_float<T>(x);  // N, staged until inverse_rows writes A here
    });
    __syncthreads();
    if (ws.n) store_tile(ws.n + hc * kChunk * kChunk, kChunk, sm.inv.a, ldC, kChunk, kChunk);
  } else if constexpr (kDelta<U>) {  // L = StrictLower(diag(β) (K Kᵀ) ⊙ Γ)
    float acc[1][4][4];
    zero(acc);
    const int m0 = (warp % 4) * 16, n0 = (warp / 4) * 32;
    if constexpr (kFusedOutput<T, U, G>) {
      // P = Q Kᵀ ⊙ Γ (lower with the diagonal), staged over A's tile, for the fused output pass and
      // the backward.
      warp_mma(acc, row_major(sm.inv.q, ldK), row_major(sm.k, ldK), m0, n0, kDim);
      for_each_decayed_pair(acc, m0, n0, sm.gam, true, NoRowScale{},
                            [&](int i, int j, float v0, float v1) { store2(sm.inv.a + i * ldC + j, v0, v1); });
      zero(acc);
      __syncthreads();  // Q is read: L goes over it
    }
    warp_mma(acc, row_major(sm.k, ldK), row_major(sm.k, ldK), m0, n0, kDim);
    for_each_decayed_pair(acc, m0, n0, sm.gam, false, [&](int i) { return sm.bet[i]; },
                          [&](int i, int j, float v0, float v1) { store2(sm.inv.l + i * kLdL + j, v0, v1); });
  }
  if constexpr (kVector<G> && !kDelta<U>) wait_async();  // v (the delta rule waits for it at the inverse's barrier)
  __syncthreads();  // L, N and the row scales are complete; nothing reads K K^T's operands any more
  if constexpr (Chain)  // in the core layout that chain_kernel's wgmma reads, copied as it lies
    store_core_tile(ws.p + hc * kChunk * kChunk, sm.inv.a, ldC);
  else if constexpr (kFusedOutput<T, U, G>)
    store_tile(ws.p + hc * kChunk * kChunk, kChunk, sm.inv.a, ldC, kChunk, kChunk);

  // Kd = K e^{γ_L − γ} for the state passes (not kFusedOutput: there they scale k as they read it),
  // by threads [t0, t0 + n); for the delta rule the operands of W = A diag(β e^γ) K and
  // U = A diag(β) V are scaled in place.
  auto scale_rows = [&](int t0, int n) {
    for (int i = tid - t0; i < kChunk * kDim / 2; i += n) {
      const int r = i / (kDim / 2), j = 2 * (i % (kDim / 2));
      const float2 x = load2(sm.k + r * ldK + j);
      float2 d, e;  // e^{γ_L − γ}, β e^γ of the two elements
      if constexpr (kVector<G>) {
        const float2 gr = load2(sm.gv + r * kLdG + j), gL = load2(sm.gv + (ch.len - 1) * kLdG + j);
        const float b = kDelta<U> ? sm.bet[r] : 0.f;
        d = make_float2(__expf(gL.x - gr.x), __expf(gL.y - gr.y));
        e = make_float2(b * __expf(gr.x), b * __expf(gr.y));
      } else {
        const float4 f = sm.row_scale[r];
        d = make_float2(f.x, f.x);
        e = make_float2(f.y, f.y);
      }
      if constexpr (!kFusedOutput<T, U, G>) store2(ws.kd + hc * kChunk * kDim + r * kDim + j, d.x * x.x, d.y * x.y);
      if constexpr (kDelta<U>) {
        const float b = sm.bet[r];
        const float2 y = load2(sm.v + r * ldK + j);
        store2(sm.k + r * ldK + j, e.x * x.x, e.y * x.y);
        store2(sm.v + r * ldK + j, b * y.x, b * y.y);
      }
    }
  };
  const long base = hc * kChunk * kDim;
  if constexpr (Chain) {
    if (warp < 4) invert_diagonal_blocks(sm.inv.l);
    __syncthreads();
    if (warp < 4)
      inverse_rows<true>(sm.inv.l, [&](int i, int j, float x0, float x1) {
        store2(sm.inv.a + i * ldC + j, x0 * sm.bet[j], x1 * sm.bet[j + 1]);
      });
    __syncthreads();
    store_core_tile(ws.a + hc * kChunk * kChunk, sm.inv.a, ldC);
    if (ws.ready) {  // streamed: the chain kernel may copy this chunk-head's tiles
      __syncthreads();
      if (tid == 0) publish_flag(ws.ready + hc);
    }
  } else if constexpr (kDelta<U>) {
    // Warps 0–3 invert I + L while warps 4–7 scale.
    if (warp < 4) invert_diagonal_blocks(sm.inv.l);
    if constexpr (kVector<G>) wait_async();  // v
    __syncthreads();
    if (warp < 4)
      inverse_rows<false>(sm.inv.l, [&](int i, int j, float x0, float x1) { store2(sm.inv.a + i * ldC + j, x0, x1); });
    else
      scale_rows(kThreads / 2, kThreads / 2);
    __syncthreads();
    if (ws.a) store_tile(ws.a + hc * kChunk * kChunk, kChunk, sm.inv.a, ldC, kChunk, kChunk);  // for the backward
    // U = A (β V) and W = A (β e^γ K), warp w: columns 16 (w % 8) .. + 15 of both, all 64 rows. A
    // is block lower triangular: rows < 32 need only its first 32 columns.
    const int n0 = 16 * warp;
    {
      float top[2][2][4], bottom[2][2][4];
      zero(top);
      zero(bottom);
      warp_mma(top, row_major(sm.inv.a, ldC), col_major(sm.v, ldK), 0, n0, kChunk / 2);
      warp_mma(bottom, row_major(sm.inv.a, ldC), col_major(sm.v, ldK), kChunk / 2, n0, kChunk);
      // Straight from the accumulators (16-bit: a row's 16 columns in one 32-byte store of its 4 lanes).
      store_acc_rows(ws.u + base, kDim, top, 0, n0, [](int, float x) { return x; });
      store_acc_rows(ws.u + base, kDim, bottom, kChunk / 2, n0, [](int, float x) { return x; });
    }
    {
      float top[2][2][4], bottom[2][2][4];
      zero(top);
      zero(bottom);
      warp_mma(top, row_major(sm.inv.a, ldC), col_major(sm.k, ldK), 0, n0, kChunk / 2);
      warp_mma(bottom, row_major(sm.inv.a, ldC), col_major(sm.k, ldK), kChunk / 2, n0, kChunk);
      store_acc(sm.inv.w, ldK, top, 0, n0);  // over L, dead since the barrier above
      store_acc(sm.inv.w, ldK, bottom, kChunk / 2, n0);
    }
    __syncthreads();
    store_tile(ws.w + base, kDim, sm.inv.w, ldK, kChunk, kDim);
  } else {
    scale_rows(0, kThreads);
    store_tile(ws.vn + base, kDim, sm.v, ldK, kChunk, kDim);  // V' = V
  }
  if constexpr (kVector<G>) {
    store_tile(ws.gam + hc * kChunk * kDim, kDim, sm.gv, kLdG, kChunk, kDim);
  } else if (!Chain && tid < kChunk) {
    ws.gam[hc * kGateStride + tid] = sm.gam[tid].x;
    ws.gam[hc * kGateStride + kChunk + tid] = sm.gam[tid].y;
  }
}

// Buffers of this chunk and the next Stages − 1. The additive rule streams V' (= V) from
// prepare; the delta rule streams W and U and computes V' into vn. Out: the output warps'
// Q and P of chunks c − 1 (being read) and c (being copied), and the V' and state operands of
// chunks c − 1 and c (the state warps write those of c while the output warps read c − 1's).
template <class T, Update U, Gate G, int Stages, int Cols, bool Out>
struct StateSmem {
  static constexpr int kSlots = Out ? 2 : 1;
  Only<kDelta<U>, T[Stages][kChunk * tile_ld<T>(kDim)]> w;
  T kd[Stages][kChunk * tile_ld<T>(kDim)];  // Kd (kFusedOutput: K, times rk as its fragments load)
  Only<kFusedOutput<T, U, G>, float[Stages][kChunk]> rk;  // e^{γ_L − γ} / ‖k‖ per row
  Only<kDelta<U>, T[Stages][kChunk * tile_ld<T>(Cols)]> u;
  float gam[Stages][kVector<G> ? kDim : kChunk];  // the chunk's cumulative gate (scalar: hi); vector: its last row γ_L
  T vn[kDelta<U> ? kSlots : Stages][kChunk * tile_ld<T>(Cols)];  // V'
  T s[kSlots][kDim * tile_ld<T>(Cols)];                          // the state as an mma operand
  Only<Out, T[2][kChunk * tile_ld<T>(kDim)]> q;                  // Q
  Only<Out, float[2][kChunk]> rq;                                // e^γ / ‖q‖ per row
  Only<Out, T[2][kChunk * tile_ld<T>(kChunk)]> pm;               // P
  Only<Out, T[kChunk * tile_ld<T>(Cols)]> ot;                    // O, staged
};

// Chunks whose copies are in flight or landed: 2 (chunk c + 1 copied while chunk c computes) fits
// two blocks per SM. Where the grid leaves one block per SM anyway (few sequences), bf16 takes 4
// (193 KB for the delta rule): the copies of chunks c + 1 .. c + 3 in flight.
constexpr int kStages = 2;
template <class T>
constexpr int kDeepStages = sizeof(T) == 2 ? 4 : kStages;

// Blocks per SM that shared memory allows (bf16; fp32 fits fewer): the register budget for ptxas,
// which otherwise chose 64 registers and spilled for the delta rule's vector gate.
template <Update U, int Stages, bool Out>
constexpr int kStateBlocksPerSm = Out || Stages > kStages ? 1 : kDelta<U> ? 2 : 4;

// Per (sequence, value head, Cols value columns), chunk by chunk: V' = U − W S, S ← e^{γ_L} S +
// Kdᵀ V', the state in registers (warp w: rows 16w..16w+15, all Cols columns, fp32). Each step
// is two phases between block barriers: V', then the state's update. Out: a second group of 256
// threads forms O = scale (e^γ ⊙ Q S + P V') of chunk c − 1 in the same phases (e^γ ⊙ Q S, then
// P V'), from the operands the state warps left in shared memory a step before and P from prepare.
// kFusedOutput (Out's kernels, and the backward's recomputing one): k and q are read as the inputs
// hold them, each row times prepare's scale (rs) as Kd's fragments load and on Q S's rows; a Kd and
// Q e^γ in the workspace were 32 KB per chunk-head more through memory. Block barriers only:
// racecheck does not follow named ones (invert_diagonal_blocks).
template <class T, Update U, Gate G, int Stages, int Cols, bool Out>
__global__ void __launch_bounds__(Out ? 2 * kThreads : kThreads, kStateBlocksPerSm<U, Stages, Out>)
    state_kernel(ChunkParams<T> p, ForwardWorkspace<T> ws, const float* h0, float* ht, T* o) {
  static_assert(!Out || kFusedOutput<T, U, G>, "the fused output pass covers the GDN forward of 16-bit inputs");
  using Smem = StateSmem<T, U, G, Stages, Cols, Out>;
  constexpr int ldK = tile_ld<T>(kDim), ldS = tile_ld<T>(Cols), ldC = tile_ld<T>(kChunk);
  constexpr int kSlots = Smem::kSlots;
  extern __shared__ float4 smem4[];
  Smem& sm = *reinterpret_cast<Smem*>(smem4);

  constexpr int kTiles = kDim / Cols;
  const int n = blockIdx.x / (p.HV * kTiles), hv = blockIdx.x / kTiles % p.HV, h = hv / (p.HV / p.H);
  const int v0 = blockIdx.x % kTiles * Cols;
  const int warp = threadIdx.x >> 5;
  const bool state_warp = !Out || threadIdx.x < kThreads;
  const SeqInfo seq = ws.seqs[n];
  const long state_base = (long(n) * p.HV + hv) * kDim * kDim + v0;
  const int chunks = chunk_count(seq);
  auto head_chunk = [&](int ci) { return long(seq.first_chunk + ci) * p.HV + hv; };
  // Chunk ci's rows of q or k (kFusedOutput), zero past the sequence, and their scales rs + off.
  auto load_input_rows = [&](T* dst, float* scales, const T* x, int off, int ci, int tid) {
    const long row = (seq.bos + long(ci) * kChunk) * p.H + h;
    load_tile_zero_fill(dst, ldK, x + row * kDim, long(p.H) * kDim, chunk_len(seq, ci), kDim, tid);
    load_tile(scales, kChunk, ws.rs + head_chunk(ci) * kRowScaleStride + off, kChunk, 1, kChunk, tid);
  };

  auto prefetch = [&](int ci, int b) {
    const long hc = head_chunk(ci);
    if constexpr (kDelta<U>) {
      load_tile(sm.w[b], ldK, ws.w + hc * kChunk * kDim, kDim, kChunk, kDim);
      load_tile(sm.u[b], ldS, ws.u + hc * kChunk * kDim + v0, kDim, kChunk, Cols);
    } else {
      load_tile(sm.vn[b], ldS, ws.vn + hc * kChunk * kDim + v0, kDim, kChunk, Cols);
    }
    if constexpr (kFusedOutput<T, U, G>)
      load_input_rows(sm.kd[b], sm.rk[b], p.k, 0, ci, threadIdx.x);
    else
      load_tile(sm.kd[b], ldK, ws.kd + hc * kChunk * kDim, kDim, kChunk, kDim);
    if constexpr (kVector<G>) {
      load_tile(sm.gam[b], kDim, ws.gam + (hc * kChunk + chunk_len(seq, ci) - 1) * kDim, kDim, 1, kDim);
    } else {
      load_tile(sm.gam[b], kChunk, ws.gam + hc * kGateStride, kChunk, 1, kChunk);
    }
  };

  // Warp w holds state rows 16w..16w+15, all Cols columns, in fp32 for the whole sequence.
  const int s0 = 16 * warp;
  float st[1][Cols / 8][4];
  // The state entering chunk ci, from the registers by each warp alone: h (bf16(S) for bf16, as
  // store_acc rounds it into sm.s) and, for 16-bit inputs when a backward follows, its extension
  // h_ext (chunk_fwd.cuh). Issued as soon as the state is known, before the warps wait on the next
  // chunk's copies; whole sectors, h in 16-byte rows (4-byte stores from the accumulators cost the
  // state pass 25%, bench/gpu/NOTES.md, helper fuse), h_ext 8 bytes a lane in fragment order.
  // Null h (the fused forward without a backward): not stored.
  auto store_state = [&](int ci) {
    if (!ws.h) return;
    const long off = head_chunk(ci) * kDim * kDim + v0;
    store_acc_rows(ws.h + off, kDim, st, s0, 0, [](int, float x) { return x; });
    if constexpr (sizeof(T) == 2)
      if (ws.h_ext) store_state_ext<T>(ws.h_ext + off, kDim, st, s0);
  };
  // One group of copies per chunk, empty past the last, so that wait_async<Stages − 2> after chunk
  // c − 1's step always means chunk c's copies have landed.
  if (state_warp) {
    for (int ci = 0; ci < Stages - 1; ++ci) {
      if (ci < chunks) prefetch(ci, ci);
      commit_async();
    }
    for_each(st, s0, 0, [&](int i, int j, float& x) { x = h0 ? h0[state_base + i * kDim + j] : 0.f; });
    store_acc(sm.s[0], ldS, st, s0, 0);
    if (chunks > 0) store_state(0);
    wait_async<Stages - 2>();
  }
  // The output warps (Out): thread ot of 256, warp tile 16 × Cols/2 of O; Q (with its row scales)
  // and P of chunk ci copied into buffer ci % 2.
  const int ot = threadIdx.x - kThreads, om0 = (warp % 4) * 16, on0 = (warp / 4 % 2) * (Cols / 2);
  auto prefetch_output = [&](int ci) {
    if constexpr (Out) {
      load_input_rows(sm.q[ci % 2], sm.rq[ci % 2], p.q, kChunk, ci, ot);
      load_tile(sm.pm[ci % 2], ldC, ws.p + head_chunk(ci) * kChunk * kChunk, kChunk, kChunk, kChunk, ot);
    }
  };
  auto store_output = [&](int ci) {
    if constexpr (Out)
      store_tile(o + (long(seq.bos + ci * kChunk) * p.HV + hv) * kDim + v0, long(p.HV) * kDim, sm.ot, ldS,
                 chunk_len(seq, ci), Cols, ot);
  };
  if (!state_warp) {
    if (chunks > 0) prefetch_output(0);
    commit_async();
    wait_async();
  }
  __syncthreads();

  Only<Out, float[1][Cols / 16][4]> oacc;  // the output warps' tile of O
  for (int ci = 0; ci < chunks + (Out ? 1 : 0); ++ci) {
    const bool step = state_warp && ci < chunks;  // the state warps' step of chunk ci
    const bool out = !state_warp && ci > 0;       // the output warps' O of chunk ci − 1
    const int b = ci % Stages;
    T* vn = sm.vn[kDelta<U> ? ci % kSlots : b];
    // Phase 1. State warps: V' = U − W S. Output warps: the previous chunk's O leaves, e^γ ⊙ Q S.
    if (step) {
      if (ci + Stages - 1 < chunks) prefetch(ci + Stages - 1, (ci + Stages - 1) % Stages);
      commit_async();
      if constexpr (kDelta<U>) {
        float acc[1][Cols / 16][4];
        zero(acc);
        const int m0 = (warp % 4) * 16, n0 = (warp / 4) * (Cols / 2);
        warp_mma(acc, row_major(sm.w[b], ldK), col_major(sm.s[ci % kSlots], ldS), m0, n0, kDim);
        for_each_pair(acc, m0, n0, [&](int i, int j, float x0, float x1) {
          const float2 u = load2(sm.u[b] + i * ldS + j);
          store2(vn + i * ldS + j, u.x - x0, u.y - x1);
        });
      }
    }
    if constexpr (Out) {
      if (out) {
        if (ci > 1) store_output(ci - 2);
        if (ci < chunks) prefetch_output(ci);
        commit_async();
        zero(oacc);
        warp_mma(oacc, row_major(sm.q[(ci - 1) % 2], ldK), col_major(sm.s[(ci - 1) % 2], ldS), om0, on0, kDim);
        for_each(oacc, om0, on0, [&](int i, int, float& x) { x *= sm.rq[(ci - 1) % 2][i]; });
      }
    }
    __syncthreads();  // V' is complete, and every read of the state operand the step overwrites is done
    // Phase 2. State warps: S ← e^{γ_L} S + Kdᵀ V' (vector gate: row d decays by e^{γ_Ld}).
    // Output warps: + P V', O staged.
    if (step) {
      if (kDelta<U> && ws.vn)
        store_tile(ws.vn + head_chunk(ci) * kChunk * kDim + v0, kDim, vn, ldS, kChunk, Cols);
      if constexpr (kVector<G>) {
        for_each(st, s0, 0, [&](int i, int, float& x) { x *= __expf(sm.gam[b][i]); });
      } else {
        const float decay = __expf(sm.gam[b][chunk_len(seq, ci) - 1]);
        for_each(st, s0, 0, [&](int, int, float& x) { x *= decay; });
      }
      if constexpr (kFusedOutput<T, U, G>)
        warp_mma(st, ScaledColMajorK<T>{sm.kd[b], ldK, sm.rk[b], 1}, col_major(vn, ldS), s0, 0, kChunk);
      else
        warp_mma(st, col_major(sm.kd[b], ldK), col_major(vn, ldS), s0, 0, kChunk);
      store_acc(sm.s[(ci + 1) % kSlots], ldS, st, s0, 0);
      if (ci + 1 < chunks) store_state(ci + 1);
      wait_async<Stages - 2>();  // chunk ci + 1's copies
    }
    if constexpr (Out) {
      if (out) {
        warp_mma(oacc, row_major(sm.pm[(ci - 1) % 2], ldC), col_major(sm.vn[(ci - 1) % 2], ldS), om0, on0, kChunk);
        store_acc(sm.ot, ldS, oacc, om0, on0, p.scale);
        wait_async();  // chunk ci's Q and P
      }
    }
    __syncthreads();
  }
  if (state_warp && ht) store_acc(ht + state_base, kDim, st, s0, 0);
  if (!state_warp && chunks > 0) store_output(chunks - 1);
}

// One block per (chunk, value head), all 128 value columns: Q and K are loaded and P formed
// once per chunk. Blocks of 64 columns did both twice per chunk at 3 blocks/SM (bf16); this
// block needs 97 KB (2/SM) and was 12% faster on an H200 (bench/gpu/NOTES.md, helper fuse).
template <class T, Gate G, bool Out>
struct OutputSmem {
  T q[kChunk * tile_ld<T>(kDim)];  // Q (vector gate: then Q ⊙ e^γ), then O (staged)
  Only<!kVector<G>, T[kChunk * tile_ld<T>(kDim)]> k;
  Only<Out, T[kDim * tile_ld<T>(kDim)]> s;
  Only<Out, T[kChunk * tile_ld<T>(kDim)]> vn;
  T pm[kChunk * tile_ld<T>(kChunk)];  // P
  Only<!kVector<G>, float2[kChunk]> gam;
  Only<kVector<G>, float[kChunk * kLdG]> gv;
};

// Out false: P and Q e^γ alone, without the output's loads and products (the backward recomputing
// the forward).
template <class T, Gate G, bool Out>
__global__ void __launch_bounds__(kThreads) output_kernel(ChunkParams<T> p, ForwardWorkspace<T> ws, T* o) {
  constexpr int ldK = tile_ld<T>(kDim), ldC = tile_ld<T>(kChunk);
  extern __shared__ float4 smem4[];
  OutputSmem<T, G, Out>& sm = *reinterpret_cast<OutputSmem<T, G, Out>*>(smem4);

  const int c = blockIdx.x / p.HV, hv = blockIdx.x % p.HV, h = hv / (p.HV / p.H);
  const ChunkRef ch = chunk_ref(ws.seqs, ws.chunk_seq, c);
  const int warp = threadIdx.x >> 5, tid = threadIdx.x;
  const long hc = long(c) * p.HV + hv;

  if constexpr (Out) {
    load_tile(sm.s, ldK, ws.h + hc * kDim * kDim, kDim, kDim, kDim);
    load_tile(sm.vn, ldK, ws.vn + hc * kChunk * kDim, kDim, kChunk, kDim);
  }
  if constexpr (kVector<G>) {  // the gate tile, and P as prepare formed it
    load_tile(sm.gv, kLdG, ws.gam + hc * kChunk * kDim, kDim, kChunk, kDim);
    load_tile(sm.pm, ldC, ws.p + hc * kChunk * kChunk, kChunk, kChunk, kChunk);
  }
  commit_async();
  load_rows(sm.q, ldK, p.q + (long(ch.start) * p.H + h) * kDim, long(p.H) * kDim, ch.len, p.l2norm);
  if constexpr (!kVector<G>) {
    load_rows(sm.k, ldK, p.k + (long(ch.start) * p.H + h) * kDim, long(p.H) * kDim, ch.len, p.l2norm);
    load_gate_pairs(sm.gam, ws.gam + hc * kGateStride);
  }
  wait_async();
  __syncthreads();

  // Warp w: rows m0..m0+15 of P (columns n0..n0+31) and of O (columns o0..o0+63).
  const int m0 = (warp % 4) * 16, n0 = (warp / 4) * 32, o0 = (warp / 4) * 64;
  T* qg = ws.qg ? ws.qg + hc * kChunk * kDim : nullptr;
  if constexpr (kVector<G>) {  // Q ⊙ e^γ
    for (int i = tid; i < kChunk * kDim / 2; i += kThreads) {
      const int r = i / (kDim / 2), j = 2 * (i % (kDim / 2));
      const float2 x = load2(sm.q + r * ldK + j), g = load2(sm.gv + r * kLdG + j);
      store2(sm.q + r * ldK + j, x.x * __expf(g.x), x.y * __expf(g.y));
    }
    __syncthreads();
  } else {  // P = Q Kᵀ ⊙ Γ, lower triangle with the diagonal
    float acc[1][4][4];
    zero(acc);
    warp_mma(acc, row_major(sm.q, ldK), row_major(sm.k, ldK), m0, n0, kDim);
    for_each_decayed_pair(acc, m0, n0, sm.gam, true, NoRowScale{},
                          [&](int i, int j, float v0, float v1) { store2(sm.pm + i * ldC + j, v0, v1); });
  }
  float acc[1][8][4];
  if constexpr (Out) {
    zero(acc);
    warp_mma(acc, row_major(sm.q, ldK), col_major(sm.s, ldK), m0, o0, kDim);
    if constexpr (!kVector<G>) for_each(acc, m0, o0, [&](int i, int, float& x) { x *= __expf(sm.gam[i].x); });
  }
  if (qg) {  // Q e^γ for the backward (the scale is applied to its products there)
    if constexpr (kVector<G>) {
      store_tile(qg, kDim, sm.q, ldK, kChunk, kDim);
    } else {  // the rows scaled here, rounded as the vector gate's
      store_gated_rows(qg, sm.q, ldK, sm.gam);
    }
  }
  __syncthreads();  // P is complete, and every read of Q is done: O is staged over it
  if (!kVector<G> && ws.p) store_tile(ws.p + hc * kChunk * kChunk, kChunk, sm.pm, ldC, kChunk, kChunk);
  if constexpr (Out) {
    warp_mma(acc, row_major(sm.pm, ldC), col_major(sm.vn, ldK), m0, o0, kChunk);
    store_acc(sm.q, ldK, acc, m0, o0, p.scale);
    __syncthreads();
    store_tile(o + (long(ch.start) * p.HV + hv) * kDim, long(p.HV) * kDim, sm.q, ldK, ch.len, kDim);
  }
}

}  // namespace

template <class T>
ForwardWorkspace<T> carve_forward(Carve& cv, const ChunkPlan& plan, int HV, Update update, Gate gate) {
  ForwardWorkspace<T> ws;
  ws.seqs = cv.take<SeqInfo>(plan.N);
  ws.chunk_seq = cv.take<int>(plan.NC);
  const size_t heads = size_t(plan.NC) * HV;
  const bool delta = update == Update::delta;
  ws.gam = cv.take<float>(heads * (gate == Gate::vector ? kChunk * kDim : kGateStride));
  ws.u = delta ? cv.take<T>(heads * kChunk * kDim) : nullptr;
  ws.a = delta ? cv.take<T>(heads * kChunk * kChunk) : nullptr;
  ws.w = delta ? cv.take<T>(heads * kChunk * kDim) : nullptr;
  const bool row_scales = fused_output<T>(update, gate);  // in place of Kd and Q e^γ
  ws.kd = row_scales ? nullptr : cv.take<T>(heads * kChunk * kDim);
  ws.rs = row_scales ? cv.take<float>(heads * kChainRowScaleStride) : nullptr;  // the chain's the most
  ws.order = row_scales ? cv.take<int>(plan.NC) : nullptr;
  ws.ready = row_scales ? cv.take<int>(heads) : nullptr;
  ws.vn = cv.take<T>(heads * kChunk * kDim);
  ws.h = cv.take<T>(heads * kDim * kDim);
  ws.h_ext = sizeof(T) == 2 ? cv.take<int8_t>(heads * kDim * kDim) : nullptr;
  const bool vector = gate == Gate::vector;
  ws.p = cv.take<T>(heads * kChunk * kChunk);
  ws.n = vector && delta ? cv.take<T>(heads * kChunk * kChunk) : nullptr;
  ws.qg = row_scales ? nullptr : cv.take<T>(heads * kChunk * kDim);
  return ws;
}

Status upload_plan(const ChunkPlan& plan, SeqInfo* seqs, int* chunk_seq, cudaStream_t stream) {
  // Pageable host memory: the copy has taken the data when cudaMemcpyAsync returns.
  GDN_CUDA_TRY(cudaMemcpyAsync(seqs, plan.seqs.data(), plan.seqs.size() * sizeof(SeqInfo),
                               cudaMemcpyHostToDevice, stream));
  if (plan.NC > 0)
    GDN_CUDA_TRY(cudaMemcpyAsync(chunk_seq, plan.chunk_seq.data(), plan.chunk_seq.size() * sizeof(int),
                                 cudaMemcpyHostToDevice, stream));
  return {};
}

template <class T, Update U, Gate G, bool Chain = false>
Status launch_prepare(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace<T>& ws,
                      cudaStream_t stream) {
  const auto kernel = prepare_kernel<T, U, G, Chain>;
  constexpr int bytes = prepare_smem_bytes<T, U, G, Chain>();
  GDN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  if (plan.NC > 0) {
    kernel<<<unsigned(plan.NC * p.HV), kThreads, bytes, stream>>>(p, ws);
    GDN_CUDA_LAUNCHED("gdn::cuda prepare_kernel");
  }
  return {};
}

template <class T, Update U, Gate G, int Stages, int Cols, bool Out>
Status launch_states(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace<T>& ws,
                     const float* h0, float* ht, T* o, cudaStream_t stream) {
  using SS = StateSmem<T, U, G, Stages, Cols, Out>;
  const auto kernel = state_kernel<T, U, G, Stages, Cols, Out>;
  GDN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sizeof(SS))));
  const unsigned blocks = unsigned(plan.N * p.HV * (kDim / Cols));
  kernel<<<blocks, Out ? 2 * kThreads : kThreads, sizeof(SS), stream>>>(p, ws, h0, ht, o);
  GDN_CUDA_LAUNCHED("gdn::cuda state_kernel");
  return {};
}

template <class T, Update U, Gate G>
Status forward_states(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace<T>& ws,
                      const float* h0, float* ht, cudaStream_t stream) {
  if (Status st = launch_prepare<T, U, G>(plan, p, ws, stream); !st.ok()) return st;
  if constexpr (kDeepStages<T> != kStages) {
    int sms = 0;
    if (Status st = current_sm_count(sms); !st.ok()) return st;
    if (plan.N * p.HV * (kDim / kStateCols) <= sms)
      return launch_states<T, U, G, kDeepStages<T>, kStateCols, false>(plan, p, ws, h0, ht, nullptr, stream);
  }
  return launch_states<T, U, G, kStages, kStateCols, false>(plan, p, ws, h0, ht, nullptr, stream);
}

template <class T, Gate G>
Status forward_output(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace<T>& ws, T* o,
                      cudaStream_t stream) {
  if (plan.NC == 0) return {};
  const auto kernel = o ? output_kernel<T, G, true> : output_kernel<T, G, false>;
  const int bytes = int(o ? sizeof(OutputSmem<T, G, true>) : sizeof(OutputSmem<T, G, false>));
  GDN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  kernel<<<unsigned(plan.NC * p.HV), kThreads, bytes, stream>>>(p, ws, o);
  GDN_CUDA_LAUNCHED("gdn::cuda output_kernel");
  return {};
}

// The GDN forward of 16-bit inputs: prepare (P and the row scales included), then the state pass with the
// output fused in. Blocks of 64 value columns where they fill the GPU (half the L2 reads of W and
// Kd per state column; 2 stages fit), else of 32 (3 stages: 210 KB).
template <class T, Update U, Gate G>
Status forward_fused(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace<T>& ws,
                     const float* h0, float* ht, T* o, int sms, cudaStream_t stream) {
  if (Status st = launch_prepare<T, U, G>(plan, p, ws, stream); !st.ok()) return st;
  if (wide_state_blocks(long(plan.N) * p.HV, sms))
    return launch_states<T, U, G, kStages, 64, true>(plan, p, ws, h0, ht, o, stream);
  return launch_states<T, U, G, kStages + 1, 32, true>(plan, p, ws, h0, ht, o, stream);
}

template ForwardWorkspace<float> carve_forward<float>(Carve&, const ChunkPlan&, int, Update, Gate);
template ForwardWorkspace<bf16> carve_forward<bf16>(Carve&, const ChunkPlan&, int, Update, Gate);
template ForwardWorkspace<f16> carve_forward<f16>(Carve&, const ChunkPlan&, int, Update, Gate);
#define GDN_FORWARD_STATES(T, U, G)                                                                              \
  template Status forward_states<T, U, G>(const ChunkPlan&, const ChunkParams<T>&, const ForwardWorkspace<T>&, \
                                          const float*, float*, cudaStream_t);
#define GDN_FORWARD_STATES_ALL(T)                            \
  GDN_FORWARD_STATES(T, Update::delta, Gate::scalar)         \
  GDN_FORWARD_STATES(T, Update::additive, Gate::scalar)      \
  GDN_FORWARD_STATES(T, Update::delta, Gate::vector)         \
  GDN_FORWARD_STATES(T, Update::additive, Gate::vector)
GDN_FORWARD_STATES_ALL(float)
GDN_FORWARD_STATES_ALL(bf16)
GDN_FORWARD_STATES_ALL(f16)
#undef GDN_FORWARD_STATES_ALL
#undef GDN_FORWARD_STATES
#define GDN_FORWARD_OUTPUT(T)                                                                                     \
  template Status forward_output<T, Gate::scalar>(const ChunkPlan&, const ChunkParams<T>&,                       \
                                                  const ForwardWorkspace<T>&, T*, cudaStream_t);               \
  template Status forward_output<T, Gate::vector>(const ChunkPlan&, const ChunkParams<T>&,                       \
                                                  const ForwardWorkspace<T>&, T*, cudaStream_t);
GDN_FORWARD_OUTPUT(float)
GDN_FORWARD_OUTPUT(bf16)
GDN_FORWARD_OUTPUT(f16)
#undef GDN_FORWARD_OUTPUT

namespace {
// The chain forward's second stream, of the greatest priority, and its fork and join events, of this
// host thread on the current device: created at the first use, kept for the process.
struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
};
Status side_stream(SideStream*& out) {
  thread_local std::map<int, SideStream> per_device;
  int device = 0;
  GDN_CUDA_TRY(cudaGetDevice(&device));
  SideStream& side = per_device[device];
  if (!side.stream) {
    int least = 0, greatest = 0;
    GDN_CUDA_TRY(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    GDN_CUDA_TRY(cudaStreamCreateWithPriority(&side.stream, cudaStreamNonBlocking, greatest));
    GDN_CUDA_TRY(cudaEventCreateWithFlags(&side.fork, cudaEventDisableTiming));
    GDN_CUDA_TRY(cudaEventCreateWithFlags(&side.join, cudaEventDisableTiming));
  }
  out = &side;
  return {};
}

// The chain forward is streamed where the longest sequence has this many chunks or more: below,
// its steps hide little of prepare (the threshold of the two pieces that streaming replaced).
constexpr int kStreamedChunks = 8;

// The chain forward (launch_chain). Where its blocks take at most half the SMs and sequences are
// long, streamed: prepare walks the chunk-heads in the order of the chain's steps (ws.order) and
// publishes each (ws.ready), and the chain kernel runs beside it on the side stream, copying a
// chunk's tiles once they are published. The forward then takes about the longer of the chain
// kernel and prepare on the SMs the chain leaves (at most twice prepare alone), where it took their
// sum: at 2×8192×16 on an H100, 0.260 → 0.208 ms (chain kernel 173 µs on 64 SMs, prepare alone 107;
// bench/gpu/NOTES.md, twenty-fifth session); two pieces of the sequences, each chain kernel beside
// the next piece's prepare, took 0.257. It cannot deadlock: prepare waits for nothing and is enqueued
// first, so that a device that runs kernels one at a time (a profiler's replay) completes it before
// the chain starts; beside each other, the chain's blocks leave prepare half the SMs, and the side
// stream's priority gives them their SMs as prepare's first blocks end. Else prepare, then the
// chain kernel.
template <class T, Update U, Gate G>
Status forward_chain(const ChunkPlan& plan, const ChunkParams<T>& p, ForwardWorkspace<T> ws, const float* h0,
                     float* ht, T* o, int sms, cudaStream_t stream) {
  const long blocks = long(plan.N) * p.HV * (kDim / kChainCols);
  if (2 * blocks > sms || plan.longest < kStreamedChunks) {
    ws.order = ws.ready = nullptr;
    if (Status st = launch_prepare<T, U, G, true>(plan, p, ws, stream); !st.ok()) return st;
    return launch_chain<T>(plan, p, ws, h0, ht, o, stream);
  }
  SideStream* side = nullptr;
  if (Status st = side_stream(side); !st.ok()) return st;
  const std::vector<int> order = chunks_in_step_order(plan);  // pageable: copied when cudaMemcpyAsync returns
  GDN_CUDA_TRY(cudaMemcpyAsync(ws.order, order.data(), order.size() * sizeof(int), cudaMemcpyHostToDevice, stream));
  GDN_CUDA_TRY(cudaMemsetAsync(ws.ready, 0, size_t(plan.NC) * p.HV * sizeof(int), stream));
  GDN_CUDA_TRY(cudaEventRecord(side->fork, stream));
  GDN_CUDA_TRY(cudaStreamWaitEvent(side->stream, side->fork));
  if (Status st = launch_prepare<T, U, G, true>(plan, p, ws, stream); !st.ok()) return st;
  if (Status st = launch_chain<T>(plan, p, ws, h0, ht, o, side->stream); !st.ok()) return st;
  GDN_CUDA_TRY(cudaEventRecord(side->join, side->stream));
  GDN_CUDA_TRY(cudaStreamWaitEvent(stream, side->join));
  return {};
}

template <class T, Update U, Gate G>
Status forward_typed(const ChunkShape& s, const ChunkForwardArgs& a, void* workspace, size_t bytes,
                     cudaStream_t stream) {
  constexpr const char* fn = "gdn::cuda::chunk_forward";
  ChunkPlan plan(s);
  if (!plan.error.empty()) return bad_input(plan.error);
  if (!a.q || !a.k || !a.v || !a.o) return bad_input(gdn::cat(fn, ": q, k, v and o are required"));
  for (const std::string& e : {beta_error(fn, U, a.beta, "beta"), gate_error(fn, G, a.g),
                               alignment_error(fn, "q, k and v", {a.q, a.k, a.v})})
    if (!e.empty()) return bad_input(e);
  Carve cv{static_cast<char*>(workspace)};
  ForwardWorkspace<T> ws = carve_forward<T>(cv, plan, s.HV, U, G);
  if (cv.used > bytes)
    return bad_input(gdn::cat("gdn::cuda::chunk_forward: workspace of ", bytes, " bytes, needs ", cv.used));
  // The GDN forward of 16-bit inputs without a backward, where the sm_90a kernels are built: the
  // single pass where its blocks fill the SMs, else the chain forward.
  int sms = 0;
  if (Status st = current_sm_count(sms); !st.ok()) return st;
  const bool sm90a = kFusedOutput<T, U, G> && !a.for_backward && single_pass_built();
  const bool single = sm90a && single_pass_pays(long(plan.N) * s.HV, sms), chain = sm90a && !single;
  if (!chain) ws.order = ws.ready = nullptr;
  if (!a.for_backward) {  // the backward's alone: not stored (the vector gate's output pass reads P)
    if (!chain) ws.a = nullptr;
    ws.n = nullptr;
    ws.h_ext = nullptr;
    if constexpr (kFusedOutput<T, U, G>) {
      ws.h = nullptr;
      ws.vn = nullptr;  // the fused output pass reads P, q and the row scales instead
    } else {
      ws.qg = nullptr;
      if constexpr (!kVector<G>) ws.p = nullptr;
    }
  }
  const ChunkParams<T> p{static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v),
                         a.g, a.beta, s.H, s.HV, plan.scale, s.l2norm_qk};
  if (Status st = upload_plan(plan, ws.seqs, ws.chunk_seq, stream); !st.ok()) return st;
  if constexpr (kFusedOutput<T, U, G>) {
    if (single) return forward_single_pass<T>(plan, p, ws.seqs, a.h0, a.ht, static_cast<T*>(a.o), stream);
    if (chain) return forward_chain<T, U, G>(plan, p, ws, a.h0, a.ht, static_cast<T*>(a.o), sms, stream);
    return forward_fused<T, U, G>(plan, p, ws, a.h0, a.ht, static_cast<T*>(a.o), sms, stream);
  } else {
    if (Status st = forward_states<T, U, G>(plan, p, ws, a.h0, a.ht, stream); !st.ok()) return st;
    return forward_output<T, G>(plan, p, ws, static_cast<T*>(a.o), stream);
  }
}
}  // namespace

}  // namespace gdn::cuda::detail

namespace gdn::cuda {

size_t chunk_forward_workspace_bytes(const ChunkShape& s) {
  detail::ChunkPlan plan(s);
  detail::Carve cv{nullptr};
  detail::with_element_type(s.dtype, [&](auto t) {
    detail::carve_forward<decltype(t)>(cv, plan, s.HV, s.update, s.gate);
    return 0;
  });
  return cv.used;
}

Status chunk_forward(const ChunkShape& s, const ChunkForwardArgs& a, void* workspace, size_t bytes,
                     cudaStream_t stream) {
  return detail::dispatch(s.dtype, s.update, s.gate, [&](auto t, auto u, auto g) {
    return detail::forward_typed<decltype(t), decltype(u)::value, decltype(g)::value>(s, a, workspace, bytes, stream);
  });
}

}  // namespace gdn::cuda
