// The GDN forward without a backward (16-bit inputs, delta rule, scalar gate) in one kernel, where
// there are sequences × value heads enough to fill the GPU's SMs (chunk_fwd.cuh, single_pass_pays).
//
// The two-kernel forward (chunk_fwd.cu) sends ~210 KB per chunk-head through memory: prepare's W,
// U, Kd, P and Q e^γ out and back into the state pass, beside q, k, v in and o out (64 KB). Here a
// block per (sequence, value head), one per SM (512 threads, ~217 KB of shared memory), forms them
// itself chunk after chunk, so that only q, k, v and o cross memory. Each step is six phases between
// block barriers over two groups of eight warps (state: warps 0–7; output: warps 8–15):
//   1  state: V' = U − W S              output: O = e^γ ⊙ Q S
//   2  state: S ← e^{γ_L} S + Kdᵀ V'    output: O += P V', staged over Q
//      (Kd = diag(e^{γ_L − γ}) K, scaled as its fragments load)
//   3  chunk c + 1's q and k normalised, its gate summed and row scales formed
//   4  state: L = StrictLower(diag(β) K Kᵀ ⊙ Γ), and the four warps whose tiles hold its diagonal
//      blocks invert them (I + L_bb)⁻¹ at once      output: P = Q Kᵀ ⊙ Γ (lower with the diagonal); O leaves
//   5  state warps 0–3: A = (I + L)⁻¹ (chunk_fwd.cuh), kept as A diag(β e^γ) and A diag(β)
//                                       output: the copies (cp.async) of chunk c + 2 start
//   6  state: W = A diag(β e^γ) K       output: U = A diag(β) V
// Phases 1–2 step chunk c, 3–6 prepare chunk c + 1; the copies have phases 6, 1 and 2 to land. W, U,
// P and the operands of the step have one buffer each (a phase reads what an earlier phase of the
// same step or the step before wrote; none is overwritten before its last read), q, k and v two.
// The memory work sits in phases 4 and 5, beside the substitution and the inverse's chain of small
// products (bench/gpu/NOTES.md: per-phase clock counts).
// Block barriers only: racecheck does not follow named ones (chunk_fwd.cuh, invert_diagonal_blocks).
// The rounding is the two-kernel forward's but in three places: A's columns carry β e^γ and β (A
// diag(β e^γ) rounded, where that path rounds β e^γ K), U stays in the block (rounded to the input
// type as there), and e^γ scales Q S in fp32 (that path rounds Q e^γ).
#include "chunk_fwd.cuh"

namespace gdn::cuda::detail {

namespace {

constexpr int kGroupThreads = kBlockThreads;           // one group: the tile copies' 256 threads
constexpr int kSinglePassThreads = 2 * kGroupThreads;  // the state and the output group

template <class T>
struct SinglePassSmem {
  T q[2][kChunk * tile_ld<T>(kDim)];  // chunk c's q in buffer c % 2, normalised; then O, staged
  T k[2][kChunk * tile_ld<T>(kDim)];  // k, normalised
  T v[2][kChunk * tile_ld<T>(kDim)];  // v
  union {
    float l[kChunk * kLdL];           // L, its diagonal blocks then inverted in place (phases 4–5)
    T w[kChunk * tile_ld<T>(kDim)];   // W (phase 6, read in phase 1)
  };
  T u[kChunk * tile_ld<T>(kDim)];     // U
  T aw[kChunk * tile_ld<T>(kChunk)];  // A diag(β e^γ)
  T au[kChunk * tile_ld<T>(kChunk)];  // A diag(β)
  T pm[kChunk * tile_ld<T>(kChunk)];  // P
  T s[kDim * tile_ld<T>(kDim)];       // the state entering the chunk, as an mma operand
  T vn[kChunk * tile_ld<T>(kDim)];    // V'
  float2 gam[kChunk];                 // γ (hi, lo) of the chunk being prepared
  float bet[kChunk];
  float4 row_scale[kChunk];           // per row: gate_row_scale
  float decay;                        // e^{γ_L}
};

template <class T>
__global__ void __launch_bounds__(kSinglePassThreads, 1)
    single_pass_kernel(ChunkParams<T> p, const SeqInfo* seqs, const float* h0, float* ht, T* o) {
  using Smem = SinglePassSmem<T>;
  constexpr int ldK = tile_ld<T>(kDim), ldC = tile_ld<T>(kChunk);
  extern __shared__ float4 smem4[];
  Smem& sm = *reinterpret_cast<Smem*>(smem4);

  const int n = blockIdx.x / p.HV, hv = blockIdx.x % p.HV, h = hv / (p.HV / p.H);
  const int warp = threadIdx.x >> 5;
  const bool state_group = threadIdx.x < kGroupThreads;
  const int gt = threadIdx.x % kGroupThreads, gw = gt >> 5;  // thread and warp within the group
  const bool gate_warp = warp == kSinglePassThreads / 32 - 1;
  const SeqInfo seq = seqs[n];
  const int chunks = chunk_count(seq);
  const long state_base = (long(n) * p.HV + hv) * kDim * kDim;
  auto start = [&](int ci) { return seq.bos + ci * kChunk; };
  // A warp's tile of V', O and U: rows m0..m0+15, columns n0..n0+63; of the state: rows s0..s0+15,
  // all 128 columns (fp32 registers of the state group, for the whole sequence).
  const int m0 = (gw % 4) * 16, n0 = (gw / 4) * (kDim / 2), s0 = 16 * gw;
  // The state group's products beside its state in two passes of half the accumulators (one pass
  // measured no faster, and ptxas spilled more).
  constexpr int kParts = 2;

  // Chunk ci's q, k and v into buffer ci % 2, zero rows beyond its length; by the output group, in
  // phase 5 (where it would idle).
  auto copy_inputs = [&](int ci) {
    const int b = ci % 2, len = chunk_len(seq, ci);
    const long qk = (long(start(ci)) * p.H + h) * kDim, vv = (long(start(ci)) * p.HV + hv) * kDim;
    load_tile_zero_tail(sm.k[b], ldK, p.k + qk, long(p.H) * kDim, len, kDim, gt);
    load_tile_zero_tail(sm.v[b], ldK, p.v + vv, long(p.HV) * kDim, len, kDim, gt);
    load_tile_zero_tail(sm.q[b], ldK, p.q + qk, long(p.H) * kDim, len, kDim, gt);
  };
  // O of chunk ci, staged over its q, leaves (the output group).
  auto store_output = [&](int ci) {
    store_tile(o + (long(start(ci)) * p.HV + hv) * kDim, long(p.HV) * kDim, sm.q[ci % 2], ldK, chunk_len(seq, ci),
               kDim, gt);
  };
  GateRows gate;  // the gate warp's rows of g and β of the next chunk to prepare
  auto fetch_gate = [&](int ci) { gate = fetch_gate_beta(p.g, p.beta, start(ci), chunk_len(seq, ci), p.HV, hv); };

  // The state group's state; the output group's accumulators (O, then U) live in the same
  // registers, which its threads do not otherwise use: as two arrays, ptxas kept both live and spilled.
  float st[1][kDim / 8][4];
  auto& oacc = reinterpret_cast<float(&)[1][kDim / 16][4]>(st);
  if (!state_group && chunks > 0) copy_inputs(0);
  commit_async();
  if (gate_warp && chunks > 0) fetch_gate(0);
  if (state_group) {
    for_each(st, s0, 0, [&](int i, int j, float& x) { x = h0 ? h0[state_base + i * kDim + j] : 0.f; });
    store_acc(sm.s, ldK, st, s0, 0);
  }

  for (int ci = -1; ci < chunks; ++ci) {
    if (ci >= 0) {
      const int b = ci % 2;
      // Phase 1.
      if (state_group) {
#pragma unroll
        for (int part = 0; part < kParts; ++part) {
          float acc[1][kDim / 16 / kParts][4];
          const int np = n0 + part * (kDim / 2 / kParts);
          zero(acc);
          warp_mma(acc, row_major(sm.w, ldK), col_major(sm.s, ldK), m0, np, kDim);
          for_each_pair(acc, m0, np, [&](int i, int j, float x0, float x1) {
            const float2 u = load2(sm.u + i * ldK + j);
            store2(sm.vn + i * ldK + j, u.x - x0, u.y - x1);
          });
        }
      } else {  // Q S, rows scaled by e^γ
        zero(oacc);
        warp_mma(oacc, row_major(sm.q[b], ldK), col_major(sm.s, ldK), m0, n0, kDim);
        for_each(oacc, m0, n0, [&](int i, int, float& x) { x *= sm.row_scale[i].w; });
      }
      __syncthreads();
      // Phase 2.
      if (state_group) {
        const float decay = sm.decay;
        for_each(st, s0, 0, [&](int, int, float& x) { x *= decay; });
        const ScaledColMajorK<T> kd{sm.k[b], ldK, &sm.row_scale[0].x, 4};  // Kdᵀ = (diag(e^{γ_L − γ}) K)ᵀ
        warp_mma(st, kd, col_major(sm.vn, ldK), s0, 0, kChunk);
        store_acc(sm.s, ldK, st, s0, 0);
      } else {
        warp_mma(oacc, row_major(sm.pm, ldC), col_major(sm.vn, ldK), m0, n0, kChunk);
        store_acc(sm.q[b], ldK, oacc, m0, n0, p.scale);  // over Q, read to the end in phase 1
      }
    }
    wait_async();  // chunk ci + 1's copies, issued a step ago
    __syncthreads();
    // Phase 3.
    const int nc = ci + 1, nb = nc % 2;  // the chunk prepared, and its buffer
    if (nc >= chunks) {
      if (ci >= 0 && !state_group) store_output(ci);
      break;
    }
    if (p.l2norm) normalize_rows(state_group ? sm.k[nb] : sm.q[nb], ldK, nullptr, gw);
    if (gate_warp) {  // γ and β of chunk nc, and its row scales
      scan_gate_beta(gate, sm.gam, sm.bet, true);
      if (nc + 1 < chunks) fetch_gate(nc + 1);
      __syncwarp();
      const float2 gL = sm.gam[chunk_len(seq, nc) - 1];
      for (int r = 2 * (threadIdx.x & 31); r < 2 * (threadIdx.x & 31) + 2; ++r)
        sm.row_scale[r] = gate_row_scale(gL, sm.gam[r], sm.bet[r]);
      if ((threadIdx.x & 31) == 0) sm.decay = __expf(gL.x);
    }
    __syncthreads();
    // Phase 4.
    {
      float acc[1][4][4];
      zero(acc);
      const int lm = (gw % 4) * 16, ln = (gw / 4) * 32;
      if (state_group) {
        warp_mma(acc, row_major(sm.k[nb], ldK), row_major(sm.k[nb], ldK), lm, ln, kDim);
        for_each_pair(acc, lm, ln, [&](int i, int j, float x0, float x1) {
          const float bi = sm.bet[i];
          store2(sm.l + i * kLdL + j, decayed<true>(sm.gam, i, j, bi * x0, false), decayed<true>(sm.gam, i, j + 1, bi * x1, false));
        });
        // The warp whose tile holds diagonal block b = gw % 4 (columns 32 (gw / 4) .. + 31) inverts it
        // at once: warps 0, 1, 6, 7, no block barrier between L and the substitution.
        if (gw / 4 == gw % 4 / 2) {
          __syncwarp();
          inverse::invert_diagonal_block(sm.l, gw % 4);
        }
      } else {
        warp_mma(acc, row_major(sm.q[nb], ldK), row_major(sm.k[nb], ldK), lm, ln, kDim);
        for_each_pair(acc, lm, ln, [&](int i, int j, float x0, float x1) {
          store2(sm.pm + i * ldC + j, decayed<true>(sm.gam, i, j, x0, true), decayed<true>(sm.gam, i, j + 1, x1, true));
        });
        if (ci >= 0) store_output(ci);
      }
    }
    __syncthreads();
    // Phase 5.
    if (!state_group) {
      if (nc + 1 < chunks) copy_inputs(nc + 1);  // over chunk ci's buffers: q's O has left, k and v are read
      commit_async();
    }
    if (warp < 4)
      inverse_rows(sm.l, [&](int i, int j, float x0, float x1) {
        const float4 c0 = sm.row_scale[j], c1 = sm.row_scale[j + 1];
        store2(sm.aw + i * ldC + j, x0 * c0.y, x1 * c1.y);
        store2(sm.au + i * ldC + j, x0 * c0.z, x1 * c1.z);
      });
    __syncthreads();
    // Phase 6. A is lower triangular: rows m..m+15 need its first m + 16 columns.
    if (state_group) {
#pragma unroll
      for (int part = 0; part < kParts; ++part) {
        float acc[1][8 / kParts][4];
        const int wn = (gw / 4) * 64 + part * (64 / kParts);
        zero(acc);
        warp_mma(acc, row_major(sm.aw, ldC), col_major(sm.k[nb], ldK), m0, wn, m0 + 16);
        store_acc(sm.w, ldK, acc, m0, wn);  // over L, read to the end in phase 5
      }
    } else {
      zero(oacc);
      warp_mma(oacc, row_major(sm.au, ldC), col_major(sm.v[nb], ldK), m0, n0, m0 + 16);
      store_acc(sm.u, ldK, oacc, m0, n0);
    }
    __syncthreads();
  }
  if (state_group && ht) store_acc(ht + state_base, kDim, st, s0, 0);
}

}  // namespace

template <class T>
Status forward_single_pass(const ChunkPlan& plan, const ChunkParams<T>& p, const SeqInfo* seqs, const float* h0,
                           float* ht, T* o, cudaStream_t stream) {
  const auto kernel = single_pass_kernel<T>;
  constexpr int bytes = int(sizeof(SinglePassSmem<T>));
  GDN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  kernel<<<unsigned(plan.N * p.HV), kSinglePassThreads, bytes, stream>>>(p, seqs, h0, ht, o);
  GDN_CUDA_LAUNCHED("gdn::cuda single_pass_kernel");
  return {};
}

template Status forward_single_pass<bf16>(const ChunkPlan&, const ChunkParams<bf16>&, const SeqInfo*, const float*,
                                          float*, bf16*, cudaStream_t);
template Status forward_single_pass<f16>(const ChunkPlan&, const ChunkParams<f16>&, const SeqInfo*, const float*,
                                         float*, f16*, cudaStream_t);

}  // namespace gdn::cuda::detail
