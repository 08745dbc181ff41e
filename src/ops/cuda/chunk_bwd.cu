// Chunkwise Gated DeltaNet backward. After the forward stages 1–3's intermediates (W, V', the
// chunk-entry states h, P and Q e^γ; recomputed, the output itself skipped, unless the workspace
// still holds them), two to four kernels (the math is bench/gpu/chunk_math_check.py, checked there
// against autograd of the recurrence in fp64):
//   1. state_bwd     per (sequence, value head, 32 or 64 columns), chunks in reverse: stores dS_next
//                    (the gradient of the state leaving each chunk; scalar gate: in the input
//                    type, with its columns' part of Σ dS_next ⊙ S in fp32), forms dV' = scale Pᵀ dO
//                    + Kd dS_next, and dS = e^{γ_L} dS_next + scale Qgᵀ dO − Wᵀ dV' (→ dh0),
//                    Qg = Q e^γ (the delta rule's 16-bit scalar gate reads k and q with the
//                    forward's row scales rs in place of Kd and Qg: Kd dS_next's rows scaled
//                    after the product, Qg's as its fragments load); the two recurrence-free
//                    products beside the chain's (a separate intra_dv kernel formed them before,
//                    and its 96 KB of fp32 per chunk-head went through memory twice)
//   2. state_grad    vector gate only, per (chunk, value head): the products with the states:
//                    dQ = scale e^γ dO Sᵀ, dW = −dV' Sᵀ, dK = e^{γ_L−γ} V' dS_nextᵀ, e^{γ_L} Σ dS_next ⊙ S
//   3. intra_grad    per (chunk, value head): (scalar gate: state_grad's products first, in the same
//                    block) P, dP, the gradient through A, dQ, dK, dV, dβ, dg; scalar gate: also
//                    the L2-norm backward, dq and dk; grouped value heads (2..8 per q/k head, sm_90)
//                    run as a thread block cluster per (chunk, q/k head) that sums the group's dQ,
//                    dK through distributed shared memory first
//   4. qk_finish     per (token, q/k head), for the vector gate and other grouped value heads:
//                    sums over the group, L2-norm backward
// The additive rule (template parameter U; V' = V, no W) drops the terms through W and A: the
// state pass's −Wᵀ dV' (it writes dV = dV' itself), dW, and intra_grad's dA, dβ and the W, U
// gradients. The vector gate (template parameter G) scales elements where the scalar gate scales
// rows, decays dS row by row, reads P and N as prepare formed them, and has its own intra_grad
// (intra_grad_vector_kernel): the gated products' gradients by gate.cuh's sub-chunks, the gate
// gradient per element, in registers.
#include <cooperative_groups.h>

#include "chunk_fwd.cuh"

namespace gdn::cuda::detail {
namespace {

constexpr int kThreads = kBlockThreads;  // the block size tile.cuh's copies are unrolled for
constexpr int kStateCols = 32;
constexpr int kStateTiles = kDim / kStateCols;  // column blocks of a state in the reverse state pass

// The forward's buffers (left as the forward pass wrote it), then the backward's, fp32
// except dW, dV' and the scalar gate's dS_next, which only feed mma operands (in the input
// type: rounded once, where they are written).
template <class T>
struct BackwardWorkspace {
  ForwardWorkspace<T> fwd;
  T* dw;                   // [NC,HV,64,128]  dW (vector gate and delta rule; null otherwise)
  float* dh;               // [NC,HV,128,128] gradient of the state leaving each chunk (vector gate)
  T* dsn;                  // [NC,HV,128,128] the same in the input type (scalar gate: only an mma operand)
  float* dss;              // [NC,HV,4]       scalar gate: Σ dS_next ⊙ S per 32-column block of the state
  T* dvp;                  // [NC,HV,64,128]  dV' (delta rule)
  float* dgl;              // [NC,HV,128]     vector gate: e^{γ_Ld} Σ_v dS_next ⊙ S per state row d
  float *dq_hat, *dk_hat;  // [B*T,HV,128]    gradients of the normalised q, k per value head (vector
                           //                 gate, grouped value heads not summed in a cluster; null
                           //                 otherwise)
};

template <class T>
struct BackwardParams {
  ChunkParams<T> p;
  const T* d_o;
  const float* dht;
  T *dq, *dk, *dv;
  float *dg, *dbeta, *dh0;
  int tokens;  // B * T
  // Scalar gate: the value heads whose dQ, dK intra_grad's thread block cluster sums before the
  // L2-norm backward: 1 (HV == H), HV / H (a cluster per group), or 0 (dQ, dK to dq_hat, dk_hat
  // for qk_finish_kernel).
  int qk_group;
};

// Chunks whose copies are in flight or landed: 2 for 16-bit tiles (chunk c − 1 copied while chunk c
// computes; 149 KB for the delta rule at 32 columns, 169 KB at 64, one block per SM), 1 for fp32 (its
// double-buffered tiles would need 277 KB).
template <class T>
constexpr int kBwdStages = sizeof(T) == 2 ? 2 : 1;

// A block of the reverse state pass covers Cols value columns of a state with Cols / 32 groups of
// kThreads threads, each group 32 columns (the chunk's W, Kd, Q e^γ and P are shared: copied once
// for both groups, half the L2 reads per column at 64).
template <int Cols>
constexpr int kStateGroups = Cols / kStateCols;

// Two adjacent state elements as stored: a 16-bit pair, or two floats.
template <class T>
using StatePair = std::conditional_t<sizeof(T) == 4, float2, std::conditional_t<std::is_same_v<T, bf16>, __nv_bfloat162, __half2>>;

template <class T, Update U, Gate G, int Cols>
struct StateBwdSmem {
  static constexpr int S = kBwdStages<T>;
  Only<kDelta<U>, T[S][kChunk * tile_ld<T>(kDim)]> w;
  T kd[S][kChunk * tile_ld<T>(kDim)];        // Kd (kFusedOutput: K, its rows times rs[0])
  T qg[S][kChunk * tile_ld<T>(kDim)];        // Q e^γ, as the forward formed it (kFusedOutput: Q, times rs[1])
  Only<kFusedOutput<T, U, G>, float[S][2][kChunk]> rs;  // prepare's row scales of k and q
  T pm[S][kChunk * tile_ld<T>(kChunk)];      // P
  T d_o[S][kChunk * tile_ld<T>(Cols)];       // dO columns, zero past the sequence
  float gam[S][kVector<G> ? kDim : kChunk];  // vector gate: the last row γ_L
  float red[kStateGroups<Cols> * kThreads / 32];
  T dvt[kChunk * tile_ld<T>(Cols)];  // dV' columns as an mma operand
  T ds[kDim * tile_ld<T>(Cols)];     // dS as an mma operand
};

template <class T, Update U, Gate G, int Cols>
__global__ void __launch_bounds__(kStateGroups<Cols> * kThreads, 1)
    state_bwd_kernel(BackwardParams<T> bp, BackwardWorkspace<T> ws) {
  constexpr int ldK = tile_ld<T>(kDim), ldS = tile_ld<T>(Cols), ldC = tile_ld<T>(kChunk);
  constexpr int Stages = kBwdStages<T>, Groups = kStateGroups<Cols>, kTiles = kDim / Cols;
  const ChunkParams<T>& p = bp.p;
  extern __shared__ float4 smem4[];
  StateBwdSmem<T, U, G, Cols>& sm = *reinterpret_cast<StateBwdSmem<T, U, G, Cols>*>(smem4);

  const int n = blockIdx.x / (p.HV * kTiles), hv = blockIdx.x / kTiles % p.HV, h = hv / (p.HV / p.H);
  const int tile = blockIdx.x % kTiles, v0 = tile * Cols;
  // Group `group` (threads gt = 0..255 of it, warps lw = 0..7) owns columns c0..c0 + 31 of the block's.
  const int group = threadIdx.x / kThreads, gt = threadIdx.x % kThreads, lw = gt >> 5;
  const int c0 = kStateCols * group;
  const SeqInfo seq = ws.fwd.seqs[n];
  const long state_base = (long(n) * p.HV + hv) * kDim * kDim + v0;
  const int chunks = chunk_count(seq);

  // The scalar gate's rows by cp.async's zero fill; the vector gate's as before (tile.cuh: it lost 4–7%).
  auto load_rows_of = [&](auto... args) {
    if constexpr (kVector<G>)
      load_tile_zero_tail(args...);
    else
      load_tile_zero_fill(args...);
  };
  auto prefetch = [&](int ci, int b) {  // the first group copies W and Kd (K), the last the rest
    const long hc = long(seq.first_chunk + ci) * p.HV + hv;
    const int len = chunk_len(seq, ci);
    const long start = seq.bos + long(ci) * kChunk, qk_rows = (start * p.H + h) * kDim;
    if (group == 0) {
      if constexpr (kDelta<U>) load_tile(sm.w[b], ldK, ws.fwd.w + hc * kChunk * kDim, kDim, kChunk, kDim, gt);
      if constexpr (kFusedOutput<T, U, G>)
        load_rows_of(sm.kd[b], ldK, p.k + qk_rows, long(p.H) * kDim, len, kDim, gt);
      else
        load_tile(sm.kd[b], ldK, ws.fwd.kd + hc * kChunk * kDim, kDim, kChunk, kDim, gt);
    }
    if (group == Groups - 1) {
      if constexpr (kFusedOutput<T, U, G>) {
        load_rows_of(sm.qg[b], ldK, p.q + qk_rows, long(p.H) * kDim, len, kDim, gt);
        load_tile(sm.rs[b][0], kRowScaleStride, ws.fwd.rs + hc * kRowScaleStride, kRowScaleStride, 1,
                  kRowScaleStride, gt);
      } else {
        load_tile(sm.qg[b], ldK, ws.fwd.qg + hc * kChunk * kDim, kDim, kChunk, kDim, gt);
      }
      load_tile(sm.pm[b], ldC, ws.fwd.p + hc * kChunk * kChunk, kChunk, kChunk, kChunk, gt);
      load_rows_of(sm.d_o[b], ldS, bp.d_o + (start * p.HV + hv) * kDim + v0, long(p.HV) * kDim, len, Cols, gt);
      if constexpr (kVector<G>)
        load_tile(sm.gam[b], kDim, ws.fwd.gam + (hc * kChunk + len - 1) * kDim, kDim, 1, kDim, gt);
      else
        load_tile(sm.gam[b], kChunk, ws.fwd.gam + hc * kGateStride, kChunk, 1, kChunk, gt);  // hi
    }
  };
  // Scalar gate: the state entering chunk ci (h, and h_ext for 16-bit inputs) at the thread's dS
  // elements, for the decay's gate term Σ dS_next ⊙ S, read into registers a step before the step
  // that sums it (copies into shared memory, as tiles or each thread its own pairs, were slower at
  // 64 columns; bench/gpu/NOTES.md). 16-bit: 16 bytes of h in each of the thread's two rows
  // (columns 8t..8t + 7 of the group's 32), turned into its pairs by quad_transpose at use, and
  // the 8 bytes of h_ext a row that are already the pairs' (fragment order); fp32: the pairs.
  using Pairs = std::conditional_t<sizeof(T) == 2, uint4[2], StatePair<T>[4][2]>;
  using ExtPairs = std::conditional_t<sizeof(T) == 2, uint2[2], char>;
  auto load_state = [&](int ci, Pairs& hp, ExtPairs& lp) {
    if constexpr (!kVector<G>) {
      const int lane = threadIdx.x & 31;
      const long row =
          (long(seq.first_chunk + ci) * p.HV + hv) * kDim * kDim + v0 + (16 * lw + (lane >> 2)) * kDim + c0;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        if constexpr (sizeof(T) == 2) {
          const long e = row + 8 * hh * kDim + 8 * (lane & 3);
          hp[hh] = *reinterpret_cast<const uint4*>(ws.fwd.h + e);
          lp[hh] = *reinterpret_cast<const uint2*>(ws.fwd.h_ext + e);
        } else {
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
            hp[nt][hh] =
                *reinterpret_cast<const StatePair<T>*>(ws.fwd.h + row + 8 * hh * kDim + 8 * nt + 2 * (lane & 3));
        }
      }
    }
  };
  Pairs sh_next;  // the next step's
  ExtPairs sh_ext_next;
  // One group of copies per step (empty once the sequence's first chunk is copied), so that
  // wait_async<Stages − 2> in step r (chunk chunks − 1 − r) always means that chunk's copies landed.
  for (int r = 0; r < (Stages > 1 ? Stages - 1 : 1); ++r) {
    if (r < chunks) prefetch(chunks - 1 - r, r);
    commit_async();
  }
  load_state(chunks - 1, sh_next, sh_ext_next);

  // Warp lw of a group holds dS rows 16 lw..16 lw + 15, the group's 32 columns, in fp32 for the
  // whole sequence.
  const int s0 = 16 * lw;
  float ds[1][4][4];
  for_each(ds, s0, c0, [&](int i, int j, float& x) { x = bp.dht ? bp.dht[state_base + i * kDim + j] : 0.f; });
  store_acc(sm.ds, ldS, ds, s0, c0);
  for (int r = 0; r < chunks; ++r) {
    const int ci = chunks - 1 - r, b = r % Stages, c = seq.first_chunk + ci;
    const int len = chunk_len(seq, ci);
    const long hc = long(c) * p.HV + hv;
    Pairs sh;  // chunk ci's
    ExtPairs sh_ext;
    if constexpr (!kVector<G>) {
      memcpy(sh, sh_next, sizeof(sh)), memcpy(&sh_ext, &sh_ext_next, sizeof(sh_ext));
      if (ci > 0) load_state(ci - 1, sh_next, sh_ext_next);
    }
    wait_async<(Stages > 2 ? Stages - 2 : 0)>();
    __syncthreads();  // chunk ci's copies and dS are visible; step r − 1 is done with its buffer
    if constexpr (Stages > 1) {
      if (r + Stages - 1 < chunks) prefetch(ci - (Stages - 1), (r + Stages - 1) % Stages);
      commit_async();
    }
    // dS_next: the vector gate's in fp32 from the registers; the scalar gate's as sm.ds holds it
    // (the same rounding), 16 bytes a thread instead of the fragments' 4.
    if constexpr (kVector<G>)
      store_acc(ws.dh + hc * kDim * kDim + v0, kDim, ds, s0, c0);
    else
      store_tile(ws.dsn + hc * kDim * kDim + v0 + c0, kDim, sm.ds + c0, ldS, kDim, kStateCols, gt);
    {  // dV' = scale Pᵀ dO + Kd dS_next
      float dv[1][2][4];
      const int m0 = (lw % 4) * 16, n0 = c0 + (lw / 4) * 16;
      zero(dv);
      warp_mma(dv, col_major(sm.pm[b], ldC), col_major(sm.d_o[b], ldS), m0, n0, kChunk);
      if constexpr (kFusedOutput<T, U, G>) {  // Kd dS_next = diag(rs[0]) (K dS_next)
        float kds[1][2][4];
        zero(kds);
        warp_mma(kds, row_major(sm.kd[b], ldK), col_major(sm.ds, ldS), m0, n0, kDim);
        for_each_index<1, 2>(m0, n0, [&](int, int nt, int e, int i, int) {
          dv[0][nt][e] = p.scale * dv[0][nt][e] + sm.rs[b][0][i] * kds[0][nt][e];
        });
      } else {
        for_each(dv, m0, n0, [&](int, int, float& x) { x *= p.scale; });
        warp_mma(dv, row_major(sm.kd[b], ldK), col_major(sm.ds, ldS), m0, n0, kDim);
      }
      if constexpr (kDelta<U>) {
        store_acc(sm.dvt, ldS, dv, m0, n0);  // to memory from there, below
      } else {  // V' = V: dV' is dV
        const long start = seq.bos + long(ci) * kChunk, row_stride = long(p.HV) * kDim;
        T* dv_rows = bp.dv + (start * p.HV + hv) * kDim + v0;
        store_acc_rows(dv_rows, row_stride, dv, m0, n0, [](int, float x) { return x; }, len);
      }
    }
    // The recurrence-free term scale (Q e^γ)ᵀ dO of dS, while the other warps finish dV'.
    float free_term[1][4][4];
    zero(free_term);
    if constexpr (kFusedOutput<T, U, G>)
      warp_mma(free_term, ScaledColMajorK<T>{sm.qg[b], ldK, sm.rs[b][1], 1}, col_major(sm.d_o[b], ldS), s0, c0, kChunk);
    else
      warp_mma(free_term, col_major(sm.qg[b], ldK), col_major(sm.d_o[b], ldS), s0, c0, kChunk);
    if constexpr (!kVector<G>) {  // this group's part of Σ dS_next ⊙ S, in fp32 from the registers
      float part = 0.f;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float2 sv[4];  // S at tile nt's pair of the thread's columns, row hh
        if constexpr (sizeof(T) == 2) {
          quad_row_pairs<T>(sh[hh], sv);
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
            sv[nt] = make_float2(ext_value<T>(sv[nt].x, ext_byte(sh_ext[hh], 2 * nt)),
                                 ext_value<T>(sv[nt].y, ext_byte(sh_ext[hh], 2 * nt + 1)));
        } else {
#pragma unroll
          for (int nt = 0; nt < 4; ++nt) sv[nt] = load2(reinterpret_cast<const T*>(&sh[nt][hh]));
        }
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) part += ds[0][nt][2 * hh] * sv[nt].x + ds[0][nt][2 * hh + 1] * sv[nt].y;
      }
      part = warp_sum(part);
      if ((threadIdx.x & 31) == 0) sm.red[threadIdx.x >> 5] = part;
    }
    __syncthreads();  // every read of sm.ds is done before it is overwritten below; sm.dvt complete
    if constexpr (kDelta<U>)
      store_tile(ws.dvp + hc * kChunk * kDim + v0 + c0, kDim, sm.dvt + c0, ldS, kChunk, kStateCols, gt);
    if constexpr (!kVector<G>)
      if (gt == 0) {  // the group's warps' parts in a fixed order: the sum is the same every run
        float t = 0.f;
        for (int w = 0; w < kThreads / 32; ++w) t += sm.red[group * (kThreads / 32) + w];
        ws.dss[hc * kStateTiles + tile * Groups + group] = t;
      }
    {  // dS = e^{γ_L} dS_next + scale (Q e^γ)ᵀ dO − Wᵀ dV' (no W for the additive rule)
      float wdv[1][4][4];
      zero(wdv);
      if constexpr (kDelta<U>) warp_mma(wdv, col_major(sm.w[b], ldK), col_major(sm.dvt, ldS), s0, c0, kChunk);
      const int row = s0 + ((threadIdx.x & 31) >> 2);  // rows row and row + 8 (vector gate: decay per row)
      const float decay = __expf(sm.gam[b][kVector<G> ? row : len - 1]);
      const float decay8 = kVector<G> ? __expf(sm.gam[b][row + 8]) : decay;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          ds[0][nt][e] = (e < 2 ? decay : decay8) * ds[0][nt][e] + p.scale * free_term[0][nt][e] - wdv[0][nt][e];
      store_acc(sm.ds, ldS, ds, s0, c0);
    }
    if constexpr (Stages == 1) {
      __syncthreads();  // every read of the one buffer is done
      if (ci > 0) prefetch(ci - 1, 0);
      commit_async();
    }
  }
  if (bp.dh0) store_acc(bp.dh0 + state_base, kDim, ds, s0, c0);
}

// The vector gate's products with the states (the scalar gate's intra_grad_kernel forms them
// itself): dQ = scale e^γ ⊙ dO Sᵀ and dK = e^{γ_L − γ} ⊙ V' dS_nextᵀ to dq_hat / dk_hat,
// dW = −dV' Sᵀ (delta rule), and per state row d e^{γ_Ld} Σ_v dS_next ⊙ S.
template <class T, Update U>
struct StateGradSmem {
  T sb[kDim * tile_ld<T>(kDim)];   // S, then dS_next
  T x0[kChunk * tile_ld<T>(kDim)];  // dO, then V'
  Only<kDelta<U>, T[kChunk * tile_ld<T>(kDim)]> x1;  // dV' (for dW)
  float gv[kChunk * kLdG];                           // cumulative gate (bf16: still 2 blocks/SM)
};

template <class T, Update U>
__global__ void __launch_bounds__(kThreads) state_grad_kernel(BackwardParams<T> bp, BackwardWorkspace<T> ws) {
  constexpr int ldK = tile_ld<T>(kDim);
  const ChunkParams<T>& p = bp.p;
  extern __shared__ float4 smem4[];
  StateGradSmem<T, U>& sm = *reinterpret_cast<StateGradSmem<T, U>*>(smem4);

  const int c = blockIdx.x / p.HV, hv = blockIdx.x % p.HV;
  const ChunkRef ch = chunk_ref(ws.fwd.seqs, ws.fwd.chunk_seq, c);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, tid = threadIdx.x;
  const long hc = long(c) * p.HV + hv;
  const long base = hc * kChunk * kDim, sbase = hc * kDim * kDim;
  // Every tile by cp.async at once (dO zero past the chunk's end).
  load_tile(sm.sb, ldK, ws.fwd.h + sbase, kDim, kDim, kDim);
  if constexpr (kDelta<U>) load_tile(sm.x1, ldK, ws.dvp + base, kDim, kChunk, kDim);
  load_tile(sm.gv, kLdG, ws.fwd.gam + base, kDim, kChunk, kDim);
  load_tile_zero_fill(sm.x0, ldK, bp.d_o + (long(ch.start) * p.HV + hv) * kDim, long(p.HV) * kDim, ch.len, kDim);
  commit_async();
  wait_async();
  __syncthreads();
  const float* gv_last = sm.gv + (ch.len - 1) * kLdG;
  const int m0 = (warp % 2) * 32, n0 = (warp / 2) * 32;
  float* dq_rows = ws.dq_hat + (long(ch.start) * p.HV + hv) * kDim;
  float* dk_rows = ws.dk_hat + (long(ch.start) * p.HV + hv) * kDim;
  const long row_stride = long(p.HV) * kDim;
  {
    float acc[2][4][4];
    zero(acc);
    warp_mma(acc, row_major(sm.x0, ldK), row_major(sm.sb, ldK), m0, n0, kDim);
    const float scale = p.scale;
    for_each_pair(acc, m0, n0, [&](int i, int j, float x0, float x1) {
      if (i >= ch.len) return;
      const float2 g = load2(sm.gv + i * kLdG + j);
      store2(dq_rows + i * row_stride + j, scale * __expf(g.x) * x0, scale * __expf(g.y) * x1);
    });
  }
  if constexpr (kDelta<U>) {
    float acc[2][4][4];
    zero(acc);
    warp_mma(acc, row_major(sm.x1, ldK), row_major(sm.sb, ldK), m0, n0, kDim);
    store_acc(ws.dw + base, kDim, acc, m0, n0, -1.f);
  }
  __syncthreads();  // S read by every warp: now replaced by dS_next
  load_tile(sm.x0, ldK, ws.fwd.vn + base, kDim, kChunk, kDim);
  commit_async();
  {  // per row d of the state e^{γ_Ld} Σ_v dS_next ⊙ S (S from h and h_ext for 16-bit T), and
     // dS_next into sb over S (each thread its own elements)
    const float* dsn = ws.dh + sbase;
#pragma unroll 4
    for (int i = tid; i < kDim * kDim / 4; i += kThreads) {  // warp w: rows w, w + 8, ...; a lane 4 columns
      const int r = i / (kDim / 4), j = 4 * (i % (kDim / 4));
      const float4 d = *reinterpret_cast<const float4*>(dsn + r * kDim + j);
      float4 x = load4(sm.sb + r * ldK + j);
      if constexpr (sizeof(T) == 2) {  // columns j, j + 1 and j + 2, j + 3 are two pairs of h_ext
        const int8_t* ext = ws.fwd.h_ext + sbase + r * kDim;
        const char2 e0 = *reinterpret_cast<const char2*>(ext + ext_column(j));
        const char2 e1 = *reinterpret_cast<const char2*>(ext + ext_column(j + 2));
        x = make_float4(ext_value<T>(x.x, e0.x), ext_value<T>(x.y, e0.y), ext_value<T>(x.z, e1.x),
                        ext_value<T>(x.w, e1.y));
      }
      const float row_sum = warp_sum(d.x * x.x + d.y * x.y + d.z * x.z + d.w * x.w);
      store4(sm.sb + r * ldK + j, d);
      if (lane == 0) ws.dgl[hc * kDim + r] = __expf(gv_last[r]) * row_sum;
    }
  }
  wait_async();
  __syncthreads();
  float acc[2][4][4];
  zero(acc);
  warp_mma(acc, row_major(sm.x0, ldK), row_major(sm.sb, ldK), m0, n0, kDim);
  for_each_pair(acc, m0, n0, [&](int i, int j, float x0, float x1) {
    if (i >= ch.len) return;
    const float2 g = load2(sm.gv + i * kLdG + j), gL = load2(gv_last + j);
    store2(dk_rows + i * row_stride + j, __expf(gL.x - g.x) * x0, __expf(gL.y - g.y) * x1);
  });
}

template <class T, Update U>
struct IntraGradSmem {
  T x0[kChunk * tile_ld<T>(kDim)];  // delta: dV', then dW; additive: S, dS_next (rows 0..63), then Q
  T x1[kChunk * tile_ld<T>(kDim)];  // K (additive: S, dS_next rows 64..127 first)
  T x2[kChunk * tile_ld<T>(kDim)];  // dO, then dV' (delta)
  T x3[kChunk * tile_ld<T>(kDim)];  // V', then V (delta)
  // At the end dQ and dK in fp32 over x0|x1 and x2|x3. Delta rule: S, then dS_next over y0..y3.
  T y0[kChunk * tile_ld<T>(kChunk)];  // P, then A (from the forward pass)
  T y1[kChunk * tile_ld<T>(kChunk)];  // dP ⊙ Γ, then dA, then F + Fᵀ
  T y2[kChunk * tile_ld<T>(kChunk)];  // Q over y2|y3, then StrictLower(K Kᵀ ⊙ Γ)
  T y3[kChunk * tile_ld<T>(kChunk)];  // then dA Aᵀ
  // At the end (both rules) the L2-norm backward's q, k rows over y0..y3.
  float2 gam[kChunk];  // γ as hi + lo (chunk_fwd.cuh)
  float bet[kChunk];
  float dgam[kChunk];   // gradient of the cumulative gate
  float dbet[kChunk];
  float dbg[kChunk];    // the part of dβ that also enters dγ times β (the dM and Tw row sums)
  float kdsum[kChunk];  // Σ_k k̂ ⊙ dK_state per row
  float rq[kChunk], rk[kChunk];  // reciprocal row norms of q and k (fp32; 1 without the L2 norm)
};

// Row m0 + 16 mt + g + 8 hh of x at column n0, for add_row_dots: rows past len read row len − 1
// (and are dropped), so that there is no branch and all loads are in flight at once (a branch per
// row put 8 round trips on the path: 6% of intra_grad's stall samples).
template <class T>
__device__ __forceinline__ const T* row_dots_row(const T* x, long x_stride, int len, int m0, int n0, int mt, int hh) {
  return x + min(m0 + 16 * mt + int(threadIdx.x & 31) / 4 + 8 * hh, len - 1) * x_stride + n0;
}
// What add_row_dots reads of 16-bit x: 16 bytes of each of the lane's 4 rows (columns n0 + 8t..8t +
// 7), loaded where the caller issues them: ahead of a burst of tile copies, which the loads would
// otherwise queue behind (5% of intra_grad's stall samples). fp32 x: nothing (add_row_dots reads
// its pairs itself).
struct RowPieces {
  uint4 v[2][2];
};
template <class T>
__device__ __forceinline__ RowPieces load_row_pieces(const T* x, long x_stride, int len, int m0, int n0) {
  RowPieces p{};
  if constexpr (k16Bit<T>) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
        p.v[mt][hh] = *reinterpret_cast<const uint4*>(row_dots_row(x, x_stride, len, m0, n0, mt, hh) + 8 * (threadIdx.x & 3));
  }
  return p;
}

// dst[i] += r_i Σ_j x_ij a_ij over the lane's elements (i, j) of the 32×32 accumulator tile at
// (m0, n0), rows i < len, x in global memory ([*, 128] rows): the row dots of a gradient with the
// rows of q or k normalised in fp32. One atomic instruction per warp. 16-bit x: the pieces of
// load_row_pieces, into the fragment's pairs by quad_transpose (a quarter of the loads of the pairs
// themselves: intra_grad −2% with 32 value heads, unchanged otherwise); fp32: the pairs.
template <class T>
__device__ __forceinline__ void add_row_dots(const float (&a)[2][4][4], const T* x, long x_stride,
                                             const RowPieces& pieces, const float* r, float* dst, int len, int m0,
                                             int n0) {
  const int t = threadIdx.x & 3;
  float part[4] = {};  // rows m0 + 16 mt + g + 8 hh at [2 mt + hh]
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float2 xv[4];  // tile nt's columns 2t, 2t + 1 of the row
      if constexpr (k16Bit<T>) {
        quad_row_pairs<T>(pieces.v[mt][hh], xv);
      } else {
        const T* row = row_dots_row(x, x_stride, len, m0, n0, mt, hh);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) xv[nt] = load2(row + 8 * nt + 2 * t);
      }
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) part[2 * mt + hh] += xv[nt].x * a[mt][nt][2 * hh] + xv[nt].y * a[mt][nt][2 * hh + 1];
    }
  emit_quad_sums<2>(part, m0, [&](int row, float s) {
    if (row < len) atomicAdd(dst + row, r[row] * s);
  });
}

// Thread block clusters (sm_90; intra_grad_kernel runs them only where the host found its code
// compiled for sm_90, cluster_group_sum): a barrier of every thread of the cluster in two halves
// (the shared memory stores of a block before its arrival are visible to all of the cluster's
// blocks after their wait), and the address of `p` (this block's shared memory) in the shared
// memory of the cluster's block `rank`.
__device__ __forceinline__ void cluster_arrive() {
#if __CUDA_ARCH__ >= 900
  cooperative_groups::this_cluster().barrier_arrive();
#else
  __trap();
#endif
}
__device__ __forceinline__ void cluster_wait() {
#if __CUDA_ARCH__ >= 900
  cooperative_groups::this_cluster().barrier_wait();
#else
  __trap();
#endif
}
__device__ __forceinline__ const float* cluster_peer(const float* p, int rank) {
#if __CUDA_ARCH__ >= 900
  return cooperative_groups::this_cluster().map_shared_rank(p, rank);
#else
  __trap();
  return p;
#endif
}

// Per (chunk, value head), the scalar gate's gradients of everything but the state pass:
//   the products with the states: dQ = scale e^γ dO Sᵀ, dW = −dV' Sᵀ, dK = e^{γ_L−γ} V' dS_nextᵀ,
//   e^{γ_L} Σ dS_next ⊙ S (the reverse state pass's sums), and the gate terms q̂ · dQ, k̂ · dK of
//   Qg = Q e^γ and Kd = K e^{γ_L − γ} (q̂, k̂ in fp32);
//   the intra-chunk terms: P, dP, the gradient through A, W and U (delta rule); dV, dβ, dg;
//   the L2-norm backward, dq and dk: with grouped value heads the blocks of a group (consecutive
//   blockIdx, value heads hv of one q/k head) form a cluster and sum their dQ, dK through
//   distributed shared memory first (bp.qk_group), or write them to dq_hat, dk_hat for
//   qk_finish_kernel to sum (qk_group 0).
template <class T, Update U>
__global__ void __launch_bounds__(kThreads, 2) intra_grad_kernel(BackwardParams<T> bp, BackwardWorkspace<T> ws) {
  constexpr int ldK = tile_ld<T>(kDim), ldC = tile_ld<T>(kChunk);
  const ChunkParams<T>& p = bp.p;
  extern __shared__ float4 smem4[];
  IntraGradSmem<T, U>& sm = *reinterpret_cast<IntraGradSmem<T, U>*>(smem4);
  static_assert(sizeof(sm.y0) * (kDelta<U> ? 4 : 0) + sizeof(sm.x0) * (kDelta<U> ? 0 : 2) >=
                    sizeof(T) * kDim * tile_ld<T>(kDim), "S fits over y0..y3 (delta rule) or x0|x1 (additive)");
  static_assert(!kDelta<U> || 2 * sizeof(sm.y0) >= sizeof(sm.x0), "Q fits over y2|y3");
  T* st;  // S, then dS_next: [128][ldK]
  T* qt;  // Q: [64][ldK]
  if constexpr (kDelta<U>) {
    st = sm.y0, qt = sm.y2;
  } else {
    st = sm.x0, qt = sm.x0;
  }
  const T *x1 = sm.x1, *x2 = sm.x2;
  const float2* gam = sm.gam;
  float *bet = sm.bet, *dgam = sm.dgam, *dbet = sm.dbet;

  const int c = blockIdx.x / p.HV, hv = blockIdx.x % p.HV, h = hv / (p.HV / p.H);
  const ChunkRef ch = chunk_ref(ws.fwd.seqs, ws.fwd.chunk_seq, c);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, tid = threadIdx.x;
  const long hc = long(c) * p.HV + hv;
  const long base = hc * kChunk * kDim, sbase = hc * kDim * kDim;
  const long row_stride = long(p.HV) * kDim, qk_stride = long(p.H) * kDim;
  const T* q_rows = p.q + (long(ch.start) * p.H + h) * kDim;
  const T* k_rows = p.k + (long(ch.start) * p.H + h) * kDim;

  // Two groups of copies: the first products' operands, then V' and K, which land during them.
  load_tile(st, ldK, ws.fwd.h + sbase, kDim, kDim, kDim);
  if constexpr (kDelta<U>) load_tile(sm.x0, ldK, ws.dvp + base, kDim, kChunk, kDim);
  load_tile_zero_fill(sm.x2, ldK, bp.d_o + (long(ch.start) * p.HV + hv) * kDim, row_stride, ch.len, kDim);
  commit_async();
  load_tile(sm.x3, ldK, ws.fwd.vn + base, kDim, kChunk, kDim);
  if constexpr (kDelta<U>) load_tile_zero_fill(sm.x1, ldK, k_rows, qk_stride, ch.len, kDim);
  commit_async();
  load_gate_beta(sm.gam, bet, p.g, p.beta, ch.start, ch.len, p.HV, hv);
  if (tid < kChunk) dgam[tid] = dbet[tid] = sm.dbg[tid] = sm.kdsum[tid] = 0.f;
  wait_async<1>();
  __syncthreads();

  // 64x128 products: warp tile 32x32. 64x64 products: warp tile 16x32.
  const int m0 = (warp % 2) * 32, n0 = (warp / 2) * 32;
  const int s0 = (warp % 4) * 16, t0 = (warp / 4) * 32;
  // The 16x32 tiles of warps 4 and 5 lie wholly above the diagonal of the 64x64 products, where the
  // causal ones (dP, M, dM, and what of dA matters) are zero: those warps skip them.
  const bool above = t0 >= s0 + 16;
  const float2 gl = gam[ch.len - 1];
  float dq[2][4][4], dk[2][4][4];
  zero(dq);
  warp_mma(dq, row_major(x2, ldK), row_major(st, ldK), m0, n0, kDim);  // dO Sᵀ
  float dw[2][4][4];
  if constexpr (kDelta<U>) {
    zero(dw);
    warp_mma(dw, row_major(sm.x0, ldK), row_major(st, ldK), m0, n0, kDim);  // dV' Sᵀ
  }
  wait_async();
  __syncthreads();  // S (and dV') are read; V' and K landed
  // dS_next over S, as the reverse state pass stored it (it also summed Σ dS_next ⊙ S, in fp32).
  load_tile(st, ldK, ws.dsn + sbase, kDim, kDim, kDim);
  commit_async();
  // K's L2 norm in place (read after the barrier below).
  if constexpr (kDelta<U>) normalize_rows_if(sm.x1, ldK, p.l2norm, sm.rk);
  if constexpr (kDelta<U>) store_acc(sm.x0, ldK, dw, m0, n0, -1.f);  // dW
  for_each(dq, m0, n0, [&](int i, int, float& x) { x *= p.scale * __expf(gam[i].x); });
  wait_async();
  __syncthreads();  // dS_next complete
  zero(dk);
  warp_mma(dk, row_major(sm.x3, ldK), row_major(st, ldK), m0, n0, kDim);  // V' dS_nextᵀ
  for_each(dk, m0, n0, [&](int i, int, float& x) { x *= __expf(gate_diff(gl, gam[i])); });
  __syncthreads();  // dS_next is read: Q (and K) over it, and P = Q Kᵀ ⊙ Γ as the forward formed it
  load_tile(sm.y0, ldC, ws.fwd.p + hc * kChunk * kChunk, kChunk, kChunk, kChunk);
  load_tile_zero_fill(qt, ldK, q_rows, qk_stride, ch.len, kDim);
  if constexpr (!kDelta<U>) load_tile_zero_fill(sm.x1, ldK, k_rows, qk_stride, ch.len, kDim);
  commit_async();
  wait_async();
  __syncthreads();
  // Q's L2 norm in place (and K's for the additive rule; each warp its rows), read after the dP
  // phase's barrier.
  normalize_rows_if(qt, ldK, p.l2norm, sm.rq);
  if constexpr (!kDelta<U>) normalize_rows_if(sm.x1, ldK, p.l2norm, sm.rk);
  {  // dP = scale dO V'ᵀ (lower with diagonal); dγ += rowsum(dP ⊙ P) − colsum(dP ⊙ P)
    float acc[1][4][4];
    zero(acc);
    if (!above) warp_mma(acc, row_major(x2, ldK), row_major(sm.x3, ldK), s0, t0, kDim);
    const float scale = p.scale;
    for_each_decayed_pair(acc, s0, t0, gam, true, [&](int) { return scale; },
                          [&](int i, int j, float a, float b) { store2(sm.y1 + i * ldC + j, a, b); });  // dP ⊙ Γ
    for_each_pair(acc, s0, t0, [&](int i, int j, float& a, float& b) {
      const float2 pm = load2(sm.y0 + i * ldC + j);
      a = j < i ? scale * a * pm.x : 0.f;  // the diagonal's row and column terms cancel
      b = j + 1 < i ? scale * b * pm.y : 0.f;
    });
    add_row_sums(acc, s0, t0, dgam, [](int, int, float a, float b) { return a + b; });
    add_col_sums(acc, s0, t0, dgam, [](int, int, float x) { return -x; });
  }
  // The rows of q and k for the state parts' gate terms, ahead of the copies and the barrier.
  const RowPieces q_pieces = load_row_pieces(q_rows, qk_stride, ch.len, m0, n0);
  const RowPieces k_pieces = load_row_pieces(k_rows, qk_stride, ch.len, m0, n0);
  __syncthreads();  // P, dO and V' are read; Q (and K) normalised
  if constexpr (kDelta<U>) {  // the gradient through A, W and U needs A, dV' and V: copied during dQ, dK +=
    load_tile(sm.y0, ldC, ws.fwd.a + hc * kChunk * kChunk, kChunk, kChunk, kChunk);
    load_tile(sm.x2, ldK, ws.dvp + base, kDim, kChunk, kDim);
    load_tile_zero_fill(sm.x3, ldK, p.v + (long(ch.start) * p.HV + hv) * kDim, row_stride, ch.len, kDim);
    commit_async();
  }
  // The gate terms of the state parts, then the intra-chunk products.
  add_row_dots(dq, q_rows, qk_stride, q_pieces, sm.rq, dgam, ch.len, m0, n0);
  add_row_dots(dk, k_rows, qk_stride, k_pieces, sm.rk, sm.kdsum, ch.len, m0, n0);
  // The products with triangular operands stop (or start) at the warp's diagonal: dP ⊙ Γ and A are
  // lower triangular, rows m0.. of (dP ⊙ Γ) K need k < m0 + 32, of (dP ⊙ Γ)ᵀ Q and Aᵀ X k ≥ m0.
  warp_mma(dq, row_major(sm.y1, ldC), col_major(x1, ldK), m0, n0, m0 + 32);     // dQ += (dP ⊙ Γ) K
  warp_mma(dk, col_major(sm.y1, ldC), col_major(qt, ldK), m0, n0, kChunk, m0);  // dK += (dP ⊙ Γ)ᵀ Q
  if constexpr (kDelta<U>) {  // the gradient through A, W and U
    wait_async();
    __syncthreads();  // Q and dP ⊙ Γ are read; A, dV' and V landed
    {  // M = StrictLower(K Kᵀ ⊙ Γ), for the dM phase's sums
      float acc[1][4][4];
      zero(acc);
      if (!above) warp_mma(acc, row_major(x1, ldK), row_major(x1, ldK), s0, t0, kDim);
      for_each_decayed_pair(acc, s0, t0, gam, false, NoRowScale{},
                            [&](int i, int j, float a, float b) { store2(sm.y2 + i * ldC + j, a, b); });
    }
    const T *dw = sm.x0, *dvp = sm.x2, *v = sm.x3;
    {  // dA = (dW Kᵀ diag(e^γ) + dV' Vᵀ) diag(β), lower part: A is lower triangular, so StrictLower(Aᵀ
       // dA Aᵀ) below does not depend on dA's strictly upper part
      float acc[1][4][4], acc2[1][4][4];
      zero(acc);
      zero(acc2);
      if (!above) {
        warp_mma(acc, row_major(dw, ldK), row_major(x1, ldK), s0, t0, kDim);
        warp_mma(acc2, row_major(dvp, ldK), row_major(v, ldK), s0, t0, kDim);
      }
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int j = t0 + 8 * nt + 2 * (lane & 3) + (e & 1);
          acc[0][nt][e] = (acc[0][nt][e] * __expf(gam[j].x) + acc2[0][nt][e]) * bet[j];
        }
      store_acc(sm.y1, ldC, acc, s0, t0);
    }
    __syncthreads();
    {  // X = dA Aᵀ
      float acc[1][4][4];
      zero(acc);
      // k ≥ s0 + 16 would take only dA's strictly upper part (dM does not depend on it), k ≥ t0 + 32
      // only A's zeros.
      warp_mma(acc, row_major(sm.y1, ldC), row_major(sm.y0, ldC), s0, t0, min(s0 + 16, t0 + 32));
      store_acc(sm.y3, ldC, acc, s0, t0);
    }
    __syncthreads();
    {  // dM = −Aᵀ X, strictly lower; M_ij = β_i (K Kᵀ)_ij Γ_ij
      float acc[1][4][4];
      zero(acc);
      if (!above) warp_mma(acc, col_major(sm.y0, ldC), col_major(sm.y3, ldC), s0, t0, kChunk, s0);
      for_each(acc, s0, t0, [&](int i, int j, float& x) { x = j < i ? -x : 0.f; });
      // u = dM ⊙ (K Kᵀ ⊙ Γ): dβ_i += Σ_j u_ij, dγ_i += β_i Σ_j u_ij (both by dbg), dγ_j −= Σ_i β_i u_ij
      float u[1][4][4];
      memcpy(u, acc, sizeof(u));
      for_each_pair(u, s0, t0, [&](int i, int j, float& a, float& b) {
        const float2 m = load2(sm.y2 + i * ldC + j);
        a *= m.x, b *= m.y;
      });
      add_row_sums(u, s0, t0, sm.dbg, [](int, int, float a, float b) { return a + b; });
      add_col_sums(u, s0, t0, dgam, [&](int i, int, float x) { return -bet[i] * x; });
      // F + Fᵀ (F strictly lower): dK takes F K + Fᵀ K as one product.
      for_each_decayed_pair(acc, s0, t0, gam, false, [&](int i) { return bet[i]; },
                            [&](int i, int j, float a, float b) {
                              const T f[2] = {from_float<T>(a), from_float<T>(b)};
#pragma unroll
                              for (int e = 0; e < 2; ++e)
                                if (j + e <= i) sm.y1[i * ldC + j + e] = sm.y1[(j + e) * ldC + i] = f[e];
                            });
    }
    {  // W = A diag(β e^γ) K: Tw = Aᵀ dW
      float acc[2][4][4];
      zero(acc);
      warp_mma(acc, col_major(sm.y0, ldC), col_major(dw, ldK), m0, n0, kChunk, m0);
      for_row_sums(  // dβ_i += e^γ_i Σ_j Tw_ij k_ij, dγ_i += β_i e^γ_i Σ_j Tw_ij k_ij (by dbg)
          acc, m0, n0,
          [&](int i, int j, float a, float b) {
            const float2 k = load2(x1 + i * ldK + j);
            return a * k.x + b * k.y;
          },
          [&](int i, float s) { atomicAdd(sm.dbg + i, __expf(gam[i].x) * s); });
      for_each_index<2, 4>(m0, n0, [&](int mt, int nt, int e, int i, int) {
        dk[mt][nt][e] += bet[i] * __expf(gam[i].x) * acc[mt][nt][e];
      });
    }
    {  // U = A diag(β) V: Tu = Aᵀ dV'
      float acc[2][4][4];
      zero(acc);
      warp_mma(acc, col_major(sm.y0, ldC), col_major(dvp, ldK), m0, n0, kChunk, m0);
      add_row_sums(acc, m0, n0, dbet, [&](int i, int j, float a, float b) {
        const float2 x = load2(v + i * ldK + j);
        return a * x.x + b * x.y;
      });
      T* dv_rows = bp.dv + (long(ch.start) * p.HV + hv) * kDim;
      store_acc_rows(dv_rows, row_stride, acc, m0, n0, [&](int i, float x) { return bet[i] * x; }, ch.len);
    }
    __syncthreads();
    warp_mma(dk, row_major(sm.y1, ldC), col_major(x1, ldK), m0, n0, kChunk);  // dK += (F + Fᵀ) K
  }
  const int group = bp.qk_group;
  const int rank = group > 1 ? hv % group : 0;  // the block's rank in its cluster (blockIdx.x % G)
  const int first_row = 8 * rank + warp, row_step = 8 * max(group, 1);
  // The L2-norm backward's x: the warp's rows of q and k as stored, every load issued here, ahead of
  // the barrier (rows past the chunk read its last row), and staged in the free y tiles after warp
  // 0's scan below, each thread its own values; a load per row in the loop put 16 round trips on
  // the path (12% of intra_grad's stall samples), a register array indexed in a loop went to local
  // memory (+12% DRAM traffic).
  constexpr int kRowsPerWarp = kChunk / 8;
  using Raw4 = std::conditional_t<sizeof(T) == 2, uint2, float4>;  // four elements as stored
  static_assert(sizeof(Raw4) * kRowsPerWarp * 2 * kThreads <= 4 * sizeof(sm.y0), "the rows fit over y0..y3");
  const bool l2_rows = p.l2norm && group > 0;
  Raw4 x[kRowsPerWarp][2];
  if (l2_rows) {
#pragma unroll
    for (int it = 0; it < kRowsPerWarp; ++it)
      if (it * row_step < kChunk) {  // warp-uniform: the rows of this block's rank
        const long at = min(first_row + it * row_step, ch.len - 1) * qk_stride + 4 * lane;
        x[it][0] = *reinterpret_cast<const Raw4*>(q_rows + at);
        x[it][1] = *reinterpret_cast<const Raw4*>(k_rows + at);
      }
  }
  __syncthreads();  // every tile read; dγ, dβ and the Kd row sums complete
  // dQ and dK in fp32 over the tiles (x0|x1 and x2|x3, all read), then whole rows per warp (a
  // lane 4 columns), summed over the group's blocks in rank order: block `rank` of a cluster of
  // G = qk_group finishes rows 8 rank + warp, + 8 G, ...; the L2-norm backward dx = r (dy − ŷ (ŷ ·
  // dy)), ŷ = r x, and dq, dk in the input type. qk_group 0: each block its own rows to dq_hat, dk_hat.
  constexpr int ldF = kDim + 8;  // the fragments' pair stores of a half-warp hit 32 banks
  static_assert(kChunk * ldF * sizeof(float) <= 2 * sizeof(sm.x0), "dQ (dK) fits over two tiles");
  float* dq_f = reinterpret_cast<float*>(sm.x0);
  float* dk_f = reinterpret_cast<float*>(sm.x2);
  // Warp 0's lanes 0..3: the reverse state pass's Σ dS_next ⊙ S of the 4 column blocks, loaded
  // here so that the stores below cover its latency.
  const float dss = warp == 0 && lane < kStateTiles ? ws.dss[hc * kStateTiles + lane] : 0.f;
  store_acc(dq_f, ldF, dq, m0, n0);
  store_acc(dk_f, ldF, dk, m0, n0);
  if (group > 1) cluster_arrive();  // the peers read the tiles once every block has arrived
  if (warp == 0) {
    // Kd = K e^{γ_L − γ}: −Σ k̂ ⊙ dK_state on each row, +their total on γ_L; then the state
    // decay's term e^{γ_L} Σ dS_next ⊙ S on γ_L; then g is the reverse cumulative sum of dγ (a
    // suffix scan over the lanes' row pairs: lane l holds rows 2l, 2l + 1).
    const int r0 = 2 * lane, r1 = r0 + 1;
    const float total = warp_sum(sm.kdsum[r0] + sm.kdsum[r1] + __expf(gl.x) * dss);
    auto dgam_row = [&](int r) {
      const float d = dgam[r] - sm.kdsum[r] + (r == ch.len - 1 ? total : 0.f);
      return kDelta<U> ? d + bet[r] * sm.dbg[r] : d;
    };
    const float d0 = r0 < ch.len ? dgam_row(r0) : 0.f;
    const float d1 = r1 < ch.len ? dgam_row(r1) : 0.f;
    float suffix = d0 + d1;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float y = __shfl_down_sync(0xffffffffu, suffix, o);
      if (lane + o < 32) suffix += y;
    }
    const long tok0 = long(ch.start + r0) * p.HV + hv, tok1 = tok0 + p.HV;
    if (bp.dg && r0 < ch.len) bp.dg[tok0] = suffix;
    if (bp.dg && r1 < ch.len) bp.dg[tok1] = suffix - d0;
    if constexpr (kDelta<U>) {
      if (r0 < ch.len) bp.dbeta[tok0] = dbet[r0] + sm.dbg[r0];
      if (r1 < ch.len) bp.dbeta[tok1] = dbet[r1] + sm.dbg[r1];
    }
  }
  Raw4* raw = reinterpret_cast<Raw4*>(sm.y0) + tid;  // [row it][q, k][thread]
  if (l2_rows) {
#pragma unroll
    for (int it = 0; it < kRowsPerWarp; ++it)
      if (it * row_step < kChunk) raw[(2 * it) * kThreads] = x[it][0], raw[(2 * it + 1) * kThreads] = x[it][1];
  }
  if (group > 1)
    cluster_wait();
  else
    __syncthreads();
  // Row first_row + it · row_step of dQ and dK (this block's tiles, and the cluster peers'), its
  // L2-norm backward and its stores; a row past the chunk reads rows that exist and stores nothing.
  auto finish_row = [&](int it) {
    const int r = first_row + it * row_step;
    float4 d[2];  // the row of dQ, then of dK
#pragma unroll
    for (int which = 0; which < 2; ++which) {
      const float* tile = (which == 0 ? dq_f : dk_f) + r * ldF + 4 * lane;
      d[which] = *reinterpret_cast<const float4*>(group > 1 ? cluster_peer(tile, 0) : tile);
      for (int peer = 1; peer < group; ++peer) {
        const float4 e = *reinterpret_cast<const float4*>(cluster_peer(tile, peer));
        d[which].x += e.x, d[which].y += e.y, d[which].z += e.z, d[which].w += e.w;
      }
    }
    if (group == 0) {
      if (r < ch.len) {
        store4(ws.dq_hat + (long(ch.start + r) * p.HV + hv) * kDim + 4 * lane, d[0]);
        store4(ws.dk_hat + (long(ch.start + r) * p.HV + hv) * kDim + 4 * lane, d[1]);
      }
      return;
    }
    if (p.l2norm) {  // both rows' dots in one reduction chain
      float4 x[2];
      float dot[2];
#pragma unroll
      for (int which = 0; which < 2; ++which) {
        x[which] = load4(reinterpret_cast<const T*>(&raw[(2 * it + which) * kThreads]));
        dot[which] =
            x[which].x * d[which].x + x[which].y * d[which].y + x[which].z * d[which].z + x[which].w * d[which].w;
      }
      const float2 dots = warp_sum2(dot[0], dot[1]);
#pragma unroll
      for (int which = 0; which < 2; ++which) {
        const float rn = (which == 0 ? sm.rq : sm.rk)[r];
        const float ry = rn * rn * (which == 0 ? dots.x : dots.y);
        const float4 a = d[which], b = x[which];
        d[which] =
            make_float4(rn * (a.x - b.x * ry), rn * (a.y - b.y * ry), rn * (a.z - b.z * ry), rn * (a.w - b.w * ry));
      }
    }
    if (r < ch.len) {
      const long at = (long(ch.start) * p.H + h) * kDim + r * qk_stride + 4 * lane;
      store4(bp.dq + at, d[0]);
      store4(bp.dk + at, d[1]);
    }
  };
  if (group == 1) {  // no peers: two rows a step, their reduction chains interleaved (no branch between)
#pragma unroll 2
    for (int it = 0; it < kRowsPerWarp; ++it) finish_row(it);
  } else {
#pragma unroll 1
    for (int it = 0; it < kRowsPerWarp && first_row + it * row_step < ch.len; ++it) finish_row(it);
  }
  if (group > 1) {  // the peers read this block's tiles until here
    cluster_arrive();
    cluster_wait();
  }
}

// The vector gate's intra-chunk gradients (GLA, KDA) per (chunk, value head): the terms of
// intra_grad_kernel, each gated product's gradient by gated_lower_backward, and the gradient of
// the cumulative gate γ kept per element in registers (the warp's 32×32 tile of the chunk):
//   dγ = q̂ ⊙ dQ_state − k̂ ⊙ dK_state (state parts; q̂, k̂ normalised in fp32) + the gated
//        products' terms (P; for the delta rule N) + β e^γ ⊙ Tw ⊙ k (W, delta rule);
//   dγ_L += e^{γ_L} ⊙ Σ_v dS_next ⊙ S + Σ_i k̂_i ⊙ dK_state_i (the decay and Kd);
//   dg = the reverse cumulative sum of dγ over the chunk's rows, per dimension.
// One block per SM: the [64][128] gate tile and the register tiles of dQ, dK and dγ.
// V is copied with the first tiles where they leave room for it (16-bit); fp32 tiles fill 217 KB
// without it, so V goes over K ⊙ e^γ once that is read.
template <class T, Update U>
constexpr bool kVPrefetched = kDelta<U> && sizeof(T) == 2;
template <class T, Update U>
struct IntraGradVectorSmem {
  union {
    struct {
      T x0[kChunk * tile_ld<T>(kDim)];  // Q, then dV' (delta rule)
      T x2[kChunk * tile_ld<T>(kDim)];  // dO, then scratch: gated products, K ⊙ e^γ (delta rule; fp32: then V)
    } a;
    float dgt[kChunk * kLdG];  // dγ, staged for the scan
  };
  T x1[kChunk * tile_ld<T>(kDim)];                     // K
  T x3[kChunk * tile_ld<T>(kDim)];                     // V', then dW (delta rule)
  Only<kVPrefetched<T, U>, T[kChunk * tile_ld<T>(kDim)]> v;  // V
  T y0[kChunk * tile_ld<T>(kChunk)];                   // dP, then dA, X = dA Aᵀ, dN
  Only<kDelta<U>, T[kChunk * tile_ld<T>(kChunk)]> y2;  // N = the gated K Kᵀ, strictly lower (from prepare)
  Only<kDelta<U>, T[kChunk * tile_ld<T>(kChunk)]> y3;  // A (from the forward pass)
  float gv[kChunk * kLdG];                             // cumulative gate
  float bet[kChunk], dbet[kChunk], rq[kChunk], rk[kChunk];
  float kdsum[kDim];  // Σ_i k̂_i ⊙ dK_state_i
};

template <class T, Update U>
__global__ void __launch_bounds__(kThreads, 1) intra_grad_vector_kernel(BackwardParams<T> bp, BackwardWorkspace<T> ws) {
  constexpr int ldK = tile_ld<T>(kDim), ldC = tile_ld<T>(kChunk);
  const ChunkParams<T>& p = bp.p;
  extern __shared__ float4 smem4[];
  IntraGradVectorSmem<T, U>& sm = *reinterpret_cast<IntraGradVectorSmem<T, U>*>(smem4);
  static_assert(sizeof(sm.a) >= sizeof(sm.dgt), "dγ is staged over x0 and x2");
  static_assert(sizeof(IntraGradVectorSmem<T, U>) <= 227 * 1024, "more than an sm_90 block's shared memory");

  const int c = blockIdx.x / p.HV, hv = blockIdx.x % p.HV, h = hv / (p.HV / p.H);
  const ChunkRef ch = chunk_ref(ws.fwd.seqs, ws.fwd.chunk_seq, c);
  const int warp = threadIdx.x >> 5, tid = threadIdx.x;
  const long hc = long(c) * p.HV + hv, base = hc * kChunk * kDim;
  const long row_stride = long(p.HV) * kDim, qk_stride = long(p.H) * kDim;
  const T* q_rows = p.q + (long(ch.start) * p.H + h) * kDim;
  const T* k_rows = p.k + (long(ch.start) * p.H + h) * kDim;
  float* dq_rows = ws.dq_hat + (long(ch.start) * p.HV + hv) * kDim;
  float* dk_rows = ws.dk_hat + (long(ch.start) * p.HV + hv) * kDim;

  // Every tile by cp.async at once (q, k and dO zero past the chunk's end, as load_rows left
  // them), the state parts' global reads into registers meanwhile, then the L2 norm in place.
  load_tile(sm.x3, ldK, ws.fwd.vn + base, kDim, kChunk, kDim);
  load_tile(sm.gv, kLdG, ws.fwd.gam + base, kDim, kChunk, kDim);
  if constexpr (kDelta<U>) {
    load_tile(sm.y3, ldC, ws.fwd.a + hc * kChunk * kChunk, kChunk, kChunk, kChunk);
    load_tile(sm.y2, ldC, ws.fwd.n + hc * kChunk * kChunk, kChunk, kChunk, kChunk);
  }
  const T* v_rows = p.v + (long(ch.start) * p.HV + hv) * kDim;
  if constexpr (kVPrefetched<T, U>) load_tile_zero_fill(sm.v, ldK, v_rows, row_stride, ch.len, kDim);
  load_tile_zero_fill(sm.a.x0, ldK, q_rows, qk_stride, ch.len, kDim);
  load_tile_zero_fill(sm.x1, ldK, k_rows, qk_stride, ch.len, kDim);
  load_tile_zero_fill(sm.a.x2, ldK, bp.d_o + (long(ch.start) * p.HV + hv) * kDim, row_stride, ch.len, kDim);
  commit_async();

  // 64x128 products: warp tile 32x32 (the accumulators below). 64x64 products: warp tile 16x32.
  const int m0 = (warp % 2) * 32, n0 = (warp / 2) * 32;
  const int s0 = (warp % 4) * 16, t0 = (warp / 4) * 32;
  // The state parts (state_grad_kernel) in dq, dk; q and k raw for their gate terms.
  float dq[2][4][4], dk[2][4][4], dg[2][4][4], qv[2][4][4], kv[2][4][4];
  for_each_index<2, 4>(m0, n0, [&](int mt, int nt, int e, int i, int d) {
    if (e % 2) return;  // pairs
    float2 a = make_float2(0.f, 0.f), b = a, x = a, y = a;
    if (i < ch.len) {
      a = load2(dq_rows + i * row_stride + d), b = load2(dk_rows + i * row_stride + d);
      x = load2(q_rows + i * qk_stride + d), y = load2(k_rows + i * qk_stride + d);
    }
    dq[mt][nt][e] = a.x, dq[mt][nt][e + 1] = a.y, dk[mt][nt][e] = b.x, dk[mt][nt][e + 1] = b.y;
    qv[mt][nt][e] = x.x, qv[mt][nt][e + 1] = x.y, kv[mt][nt][e] = y.x, kv[mt][nt][e + 1] = y.y;
  });
  if (tid < kChunk) {
    if constexpr (kDelta<U>) sm.bet[tid] = tid < ch.len ? p.beta[long(ch.start + tid) * p.HV + hv] : 0.f;
    sm.dbet[tid] = 0.f;
  }
  if (tid < kDim) sm.kdsum[tid] = 0.f;
  wait_async();
  __syncthreads();
  normalize_rows_if(sm.a.x0, ldK, p.l2norm, sm.rq);  // reciprocal row norms in fp32 (1 without the L2 norm)
  normalize_rows_if(sm.x1, ldK, p.l2norm, sm.rk);
  __syncthreads();

  {  // the state parts' gate terms, with q̂, k̂ normalised in fp32
    for_each_index<2, 4>(m0, n0, [&](int mt, int nt, int e, int i, int) {
      kv[mt][nt][e] *= sm.rk[i] * dk[mt][nt][e];  // the Kd term
      dg[mt][nt][e] = sm.rq[i] * qv[mt][nt][e] * dq[mt][nt][e] - kv[mt][nt][e];
    });
    add_col_sums(kv, m0, n0, sm.kdsum, [](int, int, float x) { return x; });
  }
  {  // dP = scale dO V'ᵀ, lower with the diagonal
    float acc[1][4][4];
    zero(acc);
    warp_mma(acc, row_major(sm.a.x2, ldK), row_major(sm.x3, ldK), s0, t0, kDim);
    const float scale = p.scale;
    for_each(acc, s0, t0, [&](int i, int j, float x) { sm.y0[i * ldC + j] = from_float<T>(j <= i ? scale * x : 0.f); });
  }
  __syncthreads();  // dP complete; dO read (x2 becomes scratch)
  gated_lower_backward(sm.y0, ldC, sm.a.x0, sm.x1, ldK, sm.gv, sm.a.x2, dq, dk, dg);  // P = gated Q Kᵀ

  if constexpr (kDelta<U>) {  // the gradient through A, W and U
    __syncthreads();  // Q, dP and the scratch are read
    load_tile(sm.x3, ldK, ws.dw + base, kDim, kChunk, kDim);
    load_tile(sm.a.x0, ldK, ws.dvp + base, kDim, kChunk, kDim);
    commit_async();
    for (int e = tid; e < kChunk * kDim / 2; e += kThreads) {  // K ⊙ e^γ into the scratch
      const int r = e / (kDim / 2), j = 2 * (e % (kDim / 2));
      const float2 x = load2(sm.x1 + r * ldK + j), g = load2(sm.gv + r * kLdG + j);
      store2(sm.a.x2 + r * ldK + j, x.x * __expf(g.x), x.y * __expf(g.y));
    }
    wait_async();
    __syncthreads();
    float acc[1][4][4];  // dA = (dW (K ⊙ e^γ)ᵀ + dV' Vᵀ) diag(β)
    zero(acc);
    warp_mma(acc, row_major(sm.x3, ldK), row_major(sm.a.x2, ldK), s0, t0, kDim);
    const T* v_tile;
    if constexpr (kVPrefetched<T, U>) {
      v_tile = sm.v;
    } else {
      __syncthreads();  // K ⊙ e^γ is read: V over it
      load_rows(sm.a.x2, ldK, v_rows, row_stride, ch.len, false);
      __syncthreads();
      v_tile = sm.a.x2;
    }
    warp_mma(acc, row_major(sm.a.x0, ldK), row_major(v_tile, ldK), s0, t0, kDim);
    for_each(acc, s0, t0, [&](int, int j, float& x) { x *= sm.bet[j]; });
    store_acc(sm.y0, ldC, acc, s0, t0);
    __syncthreads();
    zero(acc);  // X = dA Aᵀ, over dA
    warp_mma(acc, row_major(sm.y0, ldC), row_major(sm.y3, ldC), s0, t0, kChunk);
    __syncthreads();
    store_acc(sm.y0, ldC, acc, s0, t0);
    __syncthreads();
    zero(acc);  // dM = −Aᵀ X, strictly lower; M = diag(β) N; dN = diag(β) dM, over X
    warp_mma(acc, col_major(sm.y3, ldC), col_major(sm.y0, ldC), s0, t0, kChunk);
    for_each(acc, s0, t0, [&](int i, int j, float& x) { x = j < i ? -x : 0.f; });
    add_row_sums(acc, s0, t0, sm.dbet, [&](int i, int j, float a, float b) {
      const float2 x = load2(sm.y2 + i * ldC + j);
      return a * x.x + b * x.y;
    });
    __syncthreads();
    for_each(acc, s0, t0, [&](int i, int j, float x) { sm.y0[i * ldC + j] = from_float<T>(sm.bet[i] * x); });
    {  // W = A diag(β) (K ⊙ e^γ): Tw = Aᵀ dW
      float tw[2][4][4];
      zero(tw);
      warp_mma(tw, col_major(sm.y3, ldC), col_major(sm.x3, ldK), m0, n0, kChunk);
      for_each_index<2, 4>(m0, n0, [&](int mt, int nt, int e, int i, int d) {
        const float ew = __expf(sm.gv[i * kLdG + d]) * tw[mt][nt][e];  // e^γ Tw
        tw[mt][nt][e] = ew * to_float(sm.x1[i * ldK + d]);              // e^γ Tw k, for dβ
        dk[mt][nt][e] += sm.bet[i] * ew;
        dg[mt][nt][e] += sm.bet[i] * tw[mt][nt][e];
      });
      add_row_sums(tw, m0, n0, sm.dbet, [](int, int, float a, float b) { return a + b; });
    }
    {  // U = A diag(β) V: Tu = Aᵀ dV'
      float tu[2][4][4];
      zero(tu);
      warp_mma(tu, col_major(sm.y3, ldC), col_major(sm.a.x0, ldK), m0, n0, kChunk);
      add_row_sums(tu, m0, n0, sm.dbet, [&](int i, int j, float a, float b) {
        const float2 x = load2(v_tile + i * ldK + j);
        return a * x.x + b * x.y;
      });
      T* dv_rows = bp.dv + (long(ch.start) * p.HV + hv) * kDim;
      for_each_pair(tu, m0, n0, [&](int i, int j, float x0, float x1) {
        if (i < ch.len) store2(dv_rows + i * row_stride + j, sm.bet[i] * x0, sm.bet[i] * x1);
      });
    }
    __syncthreads();  // dN complete; K ⊙ e^γ (fp32: V) read (x2 becomes scratch)
    gated_lower_backward(sm.y0, ldC, sm.x1, sm.x1, ldK, sm.gv, sm.a.x2, dk, dk, dg);  // N = gated K Kᵀ
  }
  for_each_pair(dq, m0, n0, [&](int i, int j, float x0, float x1) {
    if (i < ch.len) store2(dq_rows + i * row_stride + j, x0, x1);
  });
  for_each_pair(dk, m0, n0, [&](int i, int j, float x0, float x1) {
    if (i < ch.len) store2(dk_rows + i * row_stride + j, x0, x1);
  });
  __syncthreads();  // x0 and x2 are read; dβ and the Kd column sums complete
  store_acc(sm.dgt, kLdG, dg, m0, n0);
  if constexpr (kDelta<U>)
    if (tid < ch.len) bp.dbeta[long(ch.start + tid) * p.HV + hv] = sm.dbet[tid];
  __syncthreads();
  if (tid < kDim) {  // dg: reverse cumulative sum of dγ, starting from γ_L's terms
    float acc = ws.dgl[hc * kDim + tid] + sm.kdsum[tid];
    for (int i = ch.len - 1; i >= 0; --i) {
      acc += sm.dgt[i * kLdG + tid];
      bp.dg[(long(ch.start + i) * p.HV + hv) * kDim + tid] = acc;
    }
  }
}

// One warp per (token, q/k head): dx = r (dy − y (y · dy)), y = x r, r = 1/sqrt(|x|² + 1e-6),
// dy summed over the value heads of the group.
template <class T>
__global__ void qk_finish_kernel(BackwardParams<T> bp, BackwardWorkspace<T> ws) {
  const ChunkParams<T>& p = bp.p;
  const long row = long(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= long(bp.tokens) * p.H) return;
  const long tok = row / p.H;
  const int h = int(row % p.H), group = p.HV / p.H;
#pragma unroll
  for (int which = 0; which < 2; ++which) {
    const float* hat = (which == 0 ? ws.dq_hat : ws.dk_hat) + (tok * p.HV + long(h) * group) * kDim + 4 * lane;
    const float4 x4 = load4((which == 0 ? p.q : p.k) + row * kDim + 4 * lane);
    const float xv[4] = {x4.x, x4.y, x4.z, x4.w};
    float dy[4] = {0.f, 0.f, 0.f, 0.f};
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
    store4((which == 0 ? bp.dq : bp.dk) + row * kDim + 4 * lane, make_float4(dx[0], dx[1], dx[2], dx[3]));
  }
}

// Whether the scalar gate's intra_grad sums the dQ, dK of a group of value heads in a thread block
// cluster: 2..8 value heads per q/k head (8: the portable cluster size), and the kernel's code
// compiled for sm_90 or later (its cluster path).
template <class T, Update U>
bool cluster_group_sum(const ChunkShape& s) {
  if (s.gate != Gate::scalar || s.H <= 0 || s.HV % s.H != 0 || s.HV / s.H < 2 || s.HV / s.H > 8) return false;
  static const bool sm90 = [] {
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, intra_grad_kernel<T, U>) == cudaSuccess) return fa.ptxVersion >= 90;
    cudaGetLastError();  // no device: later calls of this process must not report it
    return false;
  }();
  return sm90;
}

template <class T>
BackwardWorkspace<T> carve_backward(Carve& cv, const ChunkPlan& plan, const ChunkShape& s, bool cluster_sum) {
  BackwardWorkspace<T> ws;
  ws.fwd = carve_forward<T>(cv, plan, s.HV, s.update, s.gate);
  const size_t heads = size_t(plan.NC) * s.HV;
  const bool vector = s.gate == Gate::vector;
  ws.dw = vector && s.update == Update::delta ? cv.take<T>(heads * kChunk * kDim) : nullptr;
  ws.dh = vector ? cv.take<float>(heads * kDim * kDim) : nullptr;
  ws.dsn = vector ? nullptr : cv.take<T>(heads * kDim * kDim);
  ws.dss = vector ? nullptr : cv.take<float>(heads * kStateTiles);
  ws.dvp = s.update == Update::delta ? cv.take<T>(heads * kChunk * kDim) : nullptr;
  ws.dgl = vector ? cv.take<float>(heads * kDim) : nullptr;
  const size_t rows = vector || (s.HV != s.H && !cluster_sum) ? size_t(s.B) * s.T * s.HV * kDim : 0;
  ws.dq_hat = rows ? cv.take<float>(rows) : nullptr;
  ws.dk_hat = rows ? cv.take<float>(rows) : nullptr;
  return ws;
}

template <class K>
Status allow_smem(K kernel, size_t bytes) {
  GDN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  return {};
}

template <class T, Update U, Gate G, int Cols>
Status launch_state_bwd(const ChunkPlan& plan, const ChunkShape& s, const BackwardParams<T>& bp,
                        const BackwardWorkspace<T>& ws, cudaStream_t stream) {
  const auto kernel = state_bwd_kernel<T, U, G, Cols>;
  constexpr size_t bytes = sizeof(StateBwdSmem<T, U, G, Cols>);
  if (Status st = allow_smem(kernel, bytes); !st.ok()) return st;
  kernel<<<unsigned(plan.N * s.HV * (kDim / Cols)), kStateGroups<Cols> * kThreads, bytes, stream>>>(bp, ws);
  GDN_CUDA_LAUNCHED("gdn::cuda state_bwd_kernel");
  return {};
}

template <class T, Update U, Gate G>
Status backward_typed(const ChunkShape& s, const ChunkBackwardArgs& a, void* workspace, size_t bytes,
                      cudaStream_t stream) {
  constexpr const char* fn = "gdn::cuda::chunk_backward";
  ChunkPlan plan(s);
  if (!plan.error.empty()) return bad_input(plan.error);
  if (!a.q || !a.k || !a.v || !a.d_o || !a.dq || !a.dk || !a.dv)
    return bad_input(gdn::cat(fn, ": q, k, v, d_o, dq, dk and dv are required"));
  for (const std::string& e :
       {beta_error(fn, U, a.beta, "beta"), beta_error(fn, U, a.dbeta, "dbeta"), gate_error(fn, G, a.g)})
    if (!e.empty()) return bad_input(e);
  if (bool(a.g) != bool(a.dg))
    return bad_input(gdn::cat(fn, a.g ? ": g is given, so dg is required" : ": dg is given but g is not (no gate)"));
  if (a.h0 && !a.dh0) return bad_input(gdn::cat(fn, ": h0 is given, so dh0 is required"));
  if (const std::string e = alignment_error(fn, "q, k, v and d_o", {a.q, a.k, a.v, a.d_o}); !e.empty()) return bad_input(e);
  Carve cv{static_cast<char*>(workspace)};
  const bool cluster_sum = cluster_group_sum<T, U>(s);
  const BackwardWorkspace<T> ws = carve_backward<T>(cv, plan, s, cluster_sum);
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
  bp.qk_group = s.HV == s.H ? 1 : cluster_sum ? s.HV / s.H : 0;

  if (!a.workspace_has_forward) {
    if (Status st = upload_plan(plan, ws.fwd.seqs, ws.fwd.chunk_seq, stream); !st.ok()) return st;
    if (Status st = forward_states<T, U, G>(plan, bp.p, ws.fwd, a.h0, nullptr, stream); !st.ok()) return st;
    // P and Q e^γ, as the forward's output pass forms them, without the output (the fused
    // forward's prepare formed them).
    if constexpr (!kFusedOutput<T, U, G>)
      if (Status st = forward_output<T, G>(plan, bp.p, ws.fwd, nullptr, stream); !st.ok()) return st;
  }
  // The scalar gate's intra_grad (the state products included), or the vector gate's own kernel
  // after state_grad.
  const auto intra_grad = kVector<G> ? intra_grad_vector_kernel<T, U> : intra_grad_kernel<T, U>;
  const size_t intra_grad_smem = kVector<G> ? sizeof(IntraGradVectorSmem<T, U>) : sizeof(IntraGradSmem<T, U>);
  if (Status st = allow_smem(intra_grad, intra_grad_smem); !st.ok()) return st;
  if constexpr (kVector<G>)
    if (Status st = allow_smem(state_grad_kernel<T, U>, sizeof(StateGradSmem<T, U>)); !st.ok()) return st;
  // The reverse state pass in blocks of 64 value columns where they fill the GPU (16-bit inputs),
  // else of 32.
  Status state_pass;
  if constexpr (sizeof(T) == 2) {
    int sms = 0;
    if (Status st = current_sm_count(sms); !st.ok()) return st;
    state_pass = wide_state_blocks(long(plan.N) * s.HV, sms) ? launch_state_bwd<T, U, G, 64>(plan, s, bp, ws, stream)
                                                             : launch_state_bwd<T, U, G, 32>(plan, s, bp, ws, stream);
  } else {
    state_pass = launch_state_bwd<T, U, G, 32>(plan, s, bp, ws, stream);
  }
  if (!state_pass.ok()) return state_pass;
  if (plan.NC > 0) {
    if constexpr (kVector<G>) {
      state_grad_kernel<T, U><<<unsigned(plan.NC * s.HV), kThreads, sizeof(StateGradSmem<T, U>), stream>>>(bp, ws);
      GDN_CUDA_LAUNCHED("gdn::cuda state_grad_kernel");
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(plan.NC * s.HV)), cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = intra_grad_smem, cfg.stream = stream;
    cudaLaunchAttribute cluster;  // blocks c HV + hv: a cluster per (chunk, q/k head)
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = unsigned(bp.qk_group), cluster.val.clusterDim.y = cluster.val.clusterDim.z = 1;
    cfg.attrs = &cluster, cfg.numAttrs = !kVector<G> && bp.qk_group > 1;
    GDN_CUDA_TRY(cudaLaunchKernelEx(&cfg, intra_grad, bp, ws));
    if (kVector<G> || bp.qk_group == 0) {  // the scalar gate's intra_grad finishes dq, dk otherwise
      const long rows = long(bp.tokens) * s.H;
      qk_finish_kernel<T><<<unsigned((rows + 7) / 8), kThreads, 0, stream>>>(bp, ws);
      GDN_CUDA_LAUNCHED("gdn::cuda qk_finish_kernel");
    }
  }
  return {};
}

}  // namespace
}  // namespace gdn::cuda::detail

namespace gdn::cuda {

size_t chunk_backward_workspace_bytes(const ChunkShape& s) {
  detail::ChunkPlan plan(s);
  detail::Carve cv{nullptr};
  detail::dispatch(s.dtype, s.update, s.gate, [&](auto t, auto u, auto) {
    using T = decltype(t);
    detail::carve_backward<T>(cv, plan, s, detail::cluster_group_sum<T, decltype(u)::value>(s));
    return 0;
  });
  return cv.used;
}

Status chunk_backward(const ChunkShape& s, const ChunkBackwardArgs& a, void* workspace, size_t bytes,
                      cudaStream_t stream) {
  return detail::dispatch(s.dtype, s.update, s.gate, [&](auto t, auto u, auto g) {
    return detail::backward_typed<decltype(t), decltype(u)::value, decltype(g)::value>(s, a, workspace, bytes, stream);
  });
}

}  // namespace gdn::cuda
