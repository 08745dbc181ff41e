// The GDN forward without a backward (16-bit inputs, delta rule, scalar gate) on sm_90a (wgmma,
// setmaxnreg; single_pass_built): in one kernel where there are sequences × value heads enough to
// fill the GPU's SMs (chunk_fwd.cuh, single_pass_pays), else as the chain forward (chain_kernel
// below, after prepare). Both step a state Sᵀ held by value columns in registers through the same
// products (the helpers before single_pass_kernel).
//
// The two-kernel forward (chunk_fwd.cu) sends ~210 KB per chunk-head through memory: prepare's W,
// U, Kd, P and Q e^γ out and back into the state pass, beside q, k, v in and o out (64 KB). Here a
// block per (sequence, value head), one per SM (384 threads, ~209 KB of shared memory), forms what
// it needs itself, so that only q, k, v and o cross memory, and steps chunk c's state while it
// prepares chunk c + 1 and loads chunk c + 2:
//   - the state warps (4–11, two warpgroups) each own 16 value columns of the state, Sᵀ (16 × 128)
//     in fp32 registers for the whole sequence. Every product has Sᵀ, or a result of the step
//     before, as its A operand in registers and a chunk tile as B from shared memory, and runs on
//     wgmma: a warpgroup's 64 value columns at once, each B tile read once a warpgroup (mma.sync
//     read it once a warp):
//       Xᵀ  = Vᵀ − (Sᵀ Kᵀ) diag(e^γ)          V'ᵀ = Xᵀ (A diag β)ᵀ            (V' = U − W S)
//       Oᵀ  = (Sᵀ Qᵀ) diag(e^γ) + V'ᵀ Pᵀ       Sᵀ ← e^{γ_L} Sᵀ + V'ᵀ diag(e^{γ_L − γ}) K
//     so that W = A diag(β e^γ) K and U = A diag(β) V are never formed, and O leaves from each
//     warp's own columns (staged over its columns of V, which it alone reads). q and k are tiles
//     in wgmma's 128-byte swizzle, A diag(β) and P core tiles (core_tile.cuh): wgmma reads both,
//     ldmatrix and the copies without bank conflicts; the update reads K with keys along N
//     (MN-major).
//   - the prepare warps (0–3) normalise half of chunk c + 1's q and k, sum its gate, form L's diagonal
//     16×16 blocks and invert them at once, and A = (I + L)⁻¹ by row blocks (chunk_fwd.cuh), kept
//     as A diag(β). The state warps, whose products wgmma made short, form the six blocks of
//     L = StrictLower(diag(β) K Kᵀ ⊙ Γ) below the diagonal, chunk c + 1's P = Q Kᵀ ⊙ Γ (lower with
//     the diagonal; on wgmma, both operands from shared memory, 32 columns a warpgroup), normalise
//     the other half of q and k (one 8-row group a warp, inside V'ᵀ's wgmma) and copy chunk
//     c + 2's inputs.
// Three phases a step between block barriers (racecheck does not follow named ones; chunk_fwd.cuh,
// invert_diagonal_blocks), each role in its own loop so that the registers follow the roles
// (setmaxnreg: the state warps 184 a thread, so that the wgmmas' operands stay in registers):
//   1  state: Xᵀ, V'ᵀ; half of q, k normalised; k copied     prepare: half of q, k normalised; the gate
//   2  state: Oᵀ, staged; L below the diagonal; q, v copied  prepare: L's diagonal blocks, inverted
//   3  state: Sᵀ updated, O leaves meanwhile; P of c + 1      prepare: A diag(β)
// q, k and v have three buffers (chunk c's, c + 1's being prepared, c + 2's landing), A diag(β),
// P and the row scales two, L one.
// Before wgmma (per step, H100, clock64 counts of block 0 at 64 chunks): ~14.5k cycles, both roles
// busy ~80% of it on the SM's shared issue and shared-memory pipes (bench/gpu/NOTES.md, "What bounds
// the single pass v8"). The state warps' products on wgmma alone gained 1–2%; with L's blocks below
// the diagonal moved to them, 6–8%; with O's stores in phase 3, 9–11% (bench/gpu/NOTES.md, "The
// single pass on wgmma"); then A's products in tf32 and v copied by zero fill, another 6%; the
// tf32 operands truncated and P on wgmma, 2–3% more (bench/gpu/NOTES.md, seventeenth session); two
// small arrays indexed by warp out of local memory, 3% more (eighteenth session); half of the L2
// norm on the state warps and the q, k copies by rows, 1–2% more; q's and v's copies in phase 2,
// 3–4% more (nineteenth session); q and k in the 128-byte swizzle, whose copies take one L2 line
// and one shared line an 8-lane group, 9–10% more (twentieth session).
// The rounding is the two-kernel forward's but where W and U were: X is rounded to the input type
// before its product with A diag(β) (where that path rounds U, W and S; the product is the same,
// A diag(β) (V − diag(e^γ) K S)), V' is rounded and then, scaled by e^{γ_L − γ}, rounded again
// for the update (where that path rounds the scale and Kd), and e^γ scales Q S in fp32. A's
// products by blocks are tf32 (chunk_fwd.cuh inverse::Frag), where that path splits them.
#include <cudaTypedefs.h>  // CUtensorMap, PFN_cuTensorMapEncodeTiled

#include "chunk_fwd.cuh"
#include "core_tile.cuh"

namespace gdn::cuda::detail {

namespace {

constexpr int kPrepareWarps = 4;                 // inverse_rows: warps 0–3, warpgroup 0
constexpr int kStateWarps = kBlockThreads / 32;  // 8: the tile copies' 256 threads, warpgroups 1 and 2
constexpr int kSinglePassThreads = 32 * (kPrepareWarps + kStateWarps);
// Registers a thread: 168 at entry (65536 over 384 threads, in steps of 8); then setmaxnreg moves
// what the prepare warps give up to the state warps (two of them for each prepare warp), whose
// wgmmas are serialized below ~184 (ptxas C7512). A larger .inc than .dec released hangs the block.
constexpr int kEntryRegisters = 65536 / kSinglePassThreads / 8 * 8;
constexpr int kStateRegisters = 184, kPrepareRegisters = 136;
static_assert(2 * (kStateRegisters - kEntryRegisters) <= kEntryRegisters - kPrepareRegisters,
              "setmaxnreg.inc takes only what .dec released");

template <class T>
struct SinglePassSmem {
  alignas(1024) T q[3][kChunk * kDim];  // buffer c % 3: chunk c's q (normalised in place), a sw128 tile
  T k[3][kChunk * kDim];                // k, a sw128 tile
  T v[3][kChunk * tile_ld<T>(kDim)];  // v; then O, staged over each warp's columns
  float l[kChunk * kLdL];             // L, its diagonal blocks then inverted in place
  T ab[2][kChunk * kChunk];           // buffer c % 2: A diag(β), a core tile
  T pm[2][kChunk * kChunk];           // P, a core tile
  float eg[2][kChunk];                // e^γ
  float ed[2][kChunk];                // e^{γ_L − γ}
  float decay[2];                     // e^{γ_L}
  float2 gam[kChunk];                 // γ (hi, lo) of the chunk being prepared
  float bet[kChunk];                  // its β
};

// The [64][*] 16-bit tiles that hold v, then O: rows of stride ld (the single pass's, padded), or
// 64 columns in wgmma's 128-byte swizzle (the chain kernel's, as the tensor copy lands them).
template <class T>
struct PaddedRows {
  T* base;
  int ld;
  __device__ __forceinline__ T* at(int r, int c) const { return base + r * ld + c; }
};
template <class T>
struct SwizzledRows {
  T* base;
  __device__ __forceinline__ T* at(int r, int c) const { return base + sw128_offset<kChunk>(r, c); }
};

// The lane's address for ldmatrix / stmatrix .x4 .trans between the accumulator tiles 2p, 2p + 1 of
// a warp's 16 rows (the transposed tile's columns v0..v0+15) and rows 16p..16p+15, columns
// v0..v0+15 of a tile: registers 0, 1 tile 2p's rows v0 + g, v0 + 8 + g; 2, 3 tile 2p + 1's.
template <class Tile>
__device__ __forceinline__ uint32_t transposed_pair_addr(const Tile& tile, int v0, int p) {
  const int l = threadIdx.x & 31, m = l >> 3;
  return smem_addr(tile.at(16 * p + 8 * (m >> 1) + (l & 7), v0 + 8 * (m & 1)));
}

// The products of a state warp (a warpgroup's 64 value columns at once), shared by the single pass
// and the chain kernel. Sᵀ: value columns by all 128 keys, fp32, in mma's accumulator layout.
using StateTile = float[1][kDim / 8][4];
using ChunkTile = float[1][kChunk / 8][4];  // a product over a chunk's 64 rows
using ChunkFrags = uint32_t[kChunk / 16][4];

// Accumulators (Sᵀ, Xᵀ, V'ᵀ) as the A fragments of every k step of the next product: all formed
// before its first wgmma reads them (formed between wgmmas, ptxas waited for each before reusing
// its registers).
template <class T, int NT>
__device__ __forceinline__ void a_fragments(const float (&acc)[1][NT][4], uint32_t (&a)[NT / 2][4]) {
#pragma unroll
  for (int ks = 0; ks < NT / 2; ++ks) acc_a_fragment<T>(acc, ks, a[ks]);
}
// acc (+)= Xᵀ Bᵀ, xa the A fragments of Xᵀ, b a [64][64] core tile: V'ᵀ = Xᵀ (A diag β)ᵀ and
// Oᵀ += V'ᵀ Pᵀ, issued (Overwrite: acc's old values unread, as issue_state_times's).
template <class T, bool Overwrite = false>
__device__ __forceinline__ void issue_times_core_tile(ChunkTile& acc, const ChunkFrags& xa, const T* b) {
  wgmma_n64_k<T, !Overwrite>(acc[0], xa[0], core_tile_desc<kChunk>(b, 0));
#pragma unroll
  for (int ks = 1; ks < kChunk / 16; ++ks) wgmma_n64_k<T>(acc[0], xa[ks], core_tile_desc<kChunk>(b, ks));
}
// acc += Sᵀ Xᵀ (Overwrite: acc = Sᵀ Xᵀ), x a chunk's sw128 tile (k or q), issued (the caller fences
// and commits).
template <class T, bool Overwrite = false>
__device__ __forceinline__ void issue_state_times(ChunkTile& acc, const uint32_t (&sa)[kDim / 16][4], const T* x) {
  wgmma_n64_k<T, !Overwrite>(acc[0], sa[0], sw128_desc<kChunk>(x, 0));
#pragma unroll
  for (int ks = 1; ks < kDim / 16; ++ks) wgmma_n64_k<T>(acc[0], sa[ks], sw128_desc<kChunk>(x, ks));
}
// Vᵀ: the warp's columns v0..v0+15 of the tile v, loaded transposed in the accumulator layout (as
// 16-bit pairs).
template <class Tile>
__device__ __forceinline__ void load_values_transposed(ChunkFrags& vt, const Tile& v, int v0) {
#pragma unroll
  for (int pr = 0; pr < kChunk / 16; ++pr) ldmatrix_x4<true>(vt[pr], transposed_pair_addr(v, v0, pr));
}
// Xᵀ = Vᵀ − acc diag(xs) in place, acc = Sᵀ Kᵀ, vt = Vᵀ (load_values_transposed).
template <class T>
__device__ __forceinline__ void subtract_from_values(ChunkTile& acc, const ChunkFrags& vt, const float* xs) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int pr = 0; pr < kChunk / 16; ++pr) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float(&x)[4] = acc[0][2 * pr + (e >> 1)];
      const float2 vv = load2(reinterpret_cast<const T*>(&vt[pr][e]));
      const float2 s = load2(xs + 16 * pr + 8 * (e >> 1) + 2 * (lane & 3));
      const int i = 2 * (e & 1);
      x[i] = vv.x - x[i] * s.x;
      x[i + 1] = vv.y - x[i + 1] * s.y;
    }
  }
}
// Oᵀ (acc) into the warp's columns v0..v0+15 of v, transposed (a k step's fragment is the register
// order of transposed_pair_addr).
template <class T, class Tile>
__device__ __forceinline__ void stage_transposed(const ChunkTile& acc, const Tile& v, int v0) {
#pragma unroll
  for (int pr = 0; pr < kChunk / 16; ++pr) {
    uint32_t r[4];
    acc_a_fragment<T>(acc, pr, r);
    stmatrix_x4_trans(transposed_pair_addr(v, v0, pr), r);
  }
}
// V'ᵀ diag(us) as A fragments: the update's Sᵀ += V'ᵀ diag(us) K.
template <class T>
__device__ __forceinline__ void scaled_fragments(const ChunkFrags& vn, const float* us, ChunkFrags& a) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int ks = 0; ks < kChunk / 16; ++ks) {
    const int j = 16 * ks + 2 * (lane & 3);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 x = load2(reinterpret_cast<const T*>(&vn[ks][e]));
      const float2 d = load2(us + j + 8 * (e >> 1));
      a[ks][e] = pack2<T>(x.x * d.x, x.y * d.y);
    }
  }
}
// Sᵀ += a K, K a chunk's sw128 tile read with keys along N, issued.
template <class T>
__device__ __forceinline__ void issue_update(StateTile& st, const ChunkFrags& a, const T* k) {
#pragma unroll
  for (int ks = 0; ks < kChunk / 16; ++ks) wgmma_n128_mn<T>(st[0], a[ks], sw128_desc_mn<kChunk>(k, ks));
}
// The warp's 16 columns of O, staged in v (columns v0..), to out (their first, row stride ld): 64
// rows of 32 bytes, rows < len.
template <class T, class Tile>
__device__ __forceinline__ void store_staged_rows(T* out, long ld, const Tile& v, int v0, int len) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < 2 * kChunk / 32; ++i) {
    const int row = (lane + 32 * i) >> 1, half = lane & 1;
    if (row < len)
      *reinterpret_cast<uint4*>(out + row * ld + 8 * half) = *reinterpret_cast<const uint4*>(v.at(row, v0 + 8 * half));
  }
}

template <class T>
__global__ void __launch_bounds__(kSinglePassThreads, 1)
    single_pass_kernel(ChunkParams<T> p, const SeqInfo* seqs, const float* h0, float* ht, T* o) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Smem = SinglePassSmem<T>;
  constexpr int ldK = tile_ld<T>(kDim);
  extern __shared__ float4 smem4[];
  Smem& sm = *reinterpret_cast<Smem*>(smem4);
  if (smem_addr(&sm) & 1023) __trap();  // the sw128 tiles' atoms must be 1024-byte aligned

  const int n = blockIdx.x / p.HV, hv = blockIdx.x % p.HV, h = hv / (p.HV / p.H);
  // From lane 0, so that the compiler sees it uniform in the warp: the wgmmas (and ptxas's waits
  // around them) in a divergent branch were serialized (C7520).
  const int warp = __shfl_sync(0xffffffffu, int(threadIdx.x >> 5), 0), lane = threadIdx.x & 31;
  const bool state_warp = warp >= kPrepareWarps;
  const int sw = warp - kPrepareWarps, st_tid = threadIdx.x - 32 * kPrepareWarps;  // within the state warps
  const int v0 = 16 * sw;  // a state warp's value columns
  constexpr int kGateWarp = 1;  // the prepare warp that also sums the gate
  const bool gate_warp = warp == kGateWarp;
  const SeqInfo seq = seqs[n];
  const int chunks = chunk_count(seq);
  const long state_base = (long(n) * p.HV + hv) * kDim * kDim;
  auto start = [&](int ci) { return seq.bos + ci * kChunk; };

  // Chunk ci's q, k and v into buffer ci % 3, zero rows beyond its length, by the state warps: k
  // first thing in phase 1, q and v at the end of phase 2, where they wait for the prepare warps
  // (with all three in phase 1, the copies' issue held that phase; NOTES, nineteenth session).
  auto qk_rows = [&](int ci) { return (long(start(ci)) * p.H + h) * kDim; };  // chunk ci's first row of q, k
  auto copy_k = [&](int ci) {
    load_sw128_tile_zero_tail(sm.k[ci % 3], p.k + qk_rows(ci), long(p.H) * kDim, chunk_len(seq, ci), st_tid);
  };
  auto copy_qv = [&](int ci) {
    const int b = ci % 3, len = chunk_len(seq, ci);
    load_tile_zero_fill(sm.v[b], ldK, p.v + (long(start(ci)) * p.HV + hv) * kDim, long(p.HV) * kDim, len, kDim, st_tid);
    load_sw128_tile_zero_tail(sm.q[b], p.q + qk_rows(ci), long(p.H) * kDim, len, st_tid);
  };
  GateRows gate;  // the gate warp's rows of g and β of the next chunk to prepare
  auto fetch_gate = [&](int ci) { gate = fetch_gate_beta(p.g, p.beta, start(ci), chunk_len(seq, ci), p.HV, hv); };
  // L's 16×16 block (r, c) of the chunk in buffer nb.
  auto l_block = [&](int nb, int r, int c) {
    float acc[1][2][4];
    zero(acc);
    {  // K Kᵀ's block from the sw128 tile: a k step flips address bits 5, 6 (and crosses to the second half)
      const int l = opaque(lane), m = l >> 3, x = l & 7;
      const uint32_t a0 = smem_addr(sm.k[nb] + (16 * r + 8 * (m & 1) + x) * 64) + (((m >> 1) ^ x) << 4);
      const uint32_t b0 = smem_addr(sm.k[nb] + (16 * c + 8 * (m >> 1) + x) * 64) + (((m & 1) ^ x) << 4);
#pragma unroll 2
      for (int ks = 0; ks < kDim / 16; ++ks) {
        const uint32_t flip = (ks & 3) << 5, half = (ks >> 2) * kChunk * 128;
        uint32_t af[4], bf[4];
        ldmatrix_x4<false>(af, (a0 ^ flip) + half);
        ldmatrix_x4<false>(bf, (b0 ^ flip) + half);
        mma_16bit<T>(acc[0][0], af, bf[0], bf[1]);
        mma_16bit<T>(acc[0][1], af, bf[2], bf[3]);
      }
    }
    for_each_decayed_pair(acc, 16 * r, 16 * c, sm.gam, false, [&](int i) { return sm.bet[i]; },
                          [&](int i, int j, float v0, float v1) { store2(sm.l + i * kLdL + j, v0, v1); });
  };

  // A state warp's Sᵀ: rows v0..v0+15 (value columns of S), all 128 key columns; between phases 1
  // and 3, V'ᵀ as the A fragments of its two products.
  StateTile st;
  ChunkFrags vn;
  if (state_warp) {
    if (chunks > 0) copy_k(0), copy_qv(0);
    for_each(st, v0, 0, [&](int i, int j, float& x) { x = h0 ? h0[state_base + j * kDim + i] : 0.f; });
    // P's blocks above the diagonal, which no warp writes, zero for wgmma's reads of whole k steps.
    for (int i = st_tid; i < int(sizeof(sm.pm) / 16); i += kBlockThreads) reinterpret_cast<uint4*>(sm.pm)[i] = uint4{};
  }
  commit_async();
  if (gate_warp && chunks > 0) fetch_gate(0);
  wait_async();
  fence_proxy_async();  // the copies and P's zeros, for wgmma's reads (the async proxy)
  __syncthreads();

  if (state_warp) {
    set_max_registers<true, kStateRegisters>();
    // acc = Sᵀ Xᵀ for a chunk's sw128 tile x (k or q), the warpgroup's 64 value columns at once. Sᵀ's
    // A fragments are all formed before the first wgmma reads them (formed between wgmmas, ptxas
    // waited for each before reusing its registers).
    auto state_times = [&](const T* x, ChunkTile& acc) {
      zero(acc);
      uint32_t sa[kDim / 16][4];
      a_fragments<T>(st, sa);
      wgmma_fence();
      issue_state_times<T>(acc, sa, x);
      wgmma_commit_wait();
    };
    for (int c = -1; c < chunks; ++c) {
      const int nc = c + 1;                         // the chunk prepared
      const int b = (c + 3) % 3, b2 = (c + 2) % 2;  // chunk c's buffers
      const int nb = nc % 3, nb2 = nc % 2;
      const bool step = c >= 0, prepare = nc < chunks;
      // Phase 1.
      if (c + 2 < chunks) copy_k(c + 2);  // over chunk c − 1's buffers
      commit_async();
      // Row group sw of the 16 of chunk nc's q and k (q's rows 8 (sw / 2).. for even sw, k's for
      // odd) normalised while V'ᵀ's product runs; the prepare warps take groups 8..15.
      auto normalize_group = [&] {
        if (prepare && p.l2norm) {
          const int w = opaque(sw);  // its addresses formed here, not held across the loop
          normalize_sw128_rows(w & 1 ? sm.k[nb] : sm.q[nb], w >> 1);
          fence_proxy_async();  // for wgmma's reads
        }
      };
      if (!step) normalize_group();
      if (step) {
        ChunkTile acc;
        state_times(sm.k[b], acc);  // Sᵀ Kᵀ
        ChunkFrags vt;
        load_values_transposed(vt, PaddedRows<T>{sm.v[b], ldK}, v0);
        subtract_from_values<T>(acc, vt, sm.eg[b2]);  // Xᵀ = Vᵀ − (Sᵀ Kᵀ) diag(e^γ)
        ChunkFrags xa;  // Xᵀ as fragments before V'ᵀ's accumulators: 16 registers, not 32
        a_fragments<T>(acc, xa);
        ChunkTile vacc;
        zero(vacc);
        wgmma_fence();  // V'ᵀ = Xᵀ (A diag β)ᵀ
        issue_times_core_tile<T>(vacc, xa, sm.ab[b2]);
        wgmma_commit();
        normalize_group();
        wgmma_wait();
        a_fragments<T>(vacc, vn);
      }
      __syncthreads();
      // Phase 2.
      if (step) {
        ChunkTile acc;
        state_times(sm.q[b], acc);  // Sᵀ Qᵀ
        for_each(acc, 0, 0, [&](int, int j, float& x) { x *= sm.eg[b2][j]; });
        wgmma_fence();  // + V'ᵀ Pᵀ
        issue_times_core_tile<T>(acc, vn, sm.pm[b2]);
        wgmma_commit_wait();
        // Oᵀ into the warp's columns of V; its 64 rows of 32 bytes leave in phase 3.
        for_each(acc, 0, 0, [&](int, int, float& x) { x *= p.scale; });
        stage_transposed<T>(acc, PaddedRows<T>{sm.v[b], ldK}, v0);
      }
      // L's six blocks below the diagonal of chunk nc, a block each to state warps 0..5 (the
      // prepare warps form and invert the diagonal ones meanwhile).
      if (prepare && sw < 6) {
        // Blocks (1, 0), (2, 0), (2, 1), (3, 0), ... by selects (an array indexed by sw went to local
        // memory) of an opaque sw, whose addresses held across the loop spilled.
        const int w = opaque(sw);
        const int row = w < 1 ? 1 : w < 3 ? 2 : 3;
        l_block(nb, row, w - row * (row - 1) / 2);
      }
      if (c + 2 < chunks) copy_qv(c + 2);
      commit_async();
      __syncthreads();
      // Phase 3.
      if (step) {
        const float decay = sm.decay[b2];
        for_each(st, 0, 0, [&](int, int, float& x) { x *= decay; });
        ChunkFrags a;  // Sᵀ += V'ᵀ diag(e^{γ_L − γ}) K
        scaled_fragments<T>(vn, sm.ed[b2], a);
        wgmma_fence();
        issue_update<T>(st, a, sm.k[b]);
        wgmma_commit();
        // O's rows (staged in phase 2) leave while the update runs: phase 2 holds the step, phase 3
        // has room on the state warps.
        store_staged_rows(o + (long(start(c)) * p.HV + hv) * kDim + v0, long(p.HV) * kDim, PaddedRows<T>{sm.v[b], ldK},
                          v0, chunk_len(seq, c));
        wgmma_wait();
      }
      // P of chunk nc: a warpgroup's 32 columns, a warp's 16 rows of them; tiles wholly above the
      // diagonal stay zero (from the start).
      const int lm = (sw % 4) * 16, ln = (sw / 4) * 32;
      if (prepare) {
        float acc[1][4][4];
        zero(acc);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < kDim / 16; ++ks)
          wgmma_n32_ss<T>(acc[0], sw128_desc<kChunk>(sm.q[nb], ks), sw128_desc<kChunk>(sm.k[nb] + ln * 64, ks));
        wgmma_commit_wait();
        if (ln < lm + 16)
          for_each_decayed_pair(acc, lm, ln, sm.gam, true, NoRowScale{}, [&](int i, int j, float v0, float v1) {
            store2(sm.pm[nb2] + core_offset<kChunk>(i, j), v0, v1);
          });
      }
      wait_async();         // chunk c + 2's copies
      fence_proxy_async();  // they and P, for wgmma's reads
      __syncthreads();
    }
    if (ht) for_each(st, v0, 0, [&](int i, int j, float& x) { ht[state_base + j * kDim + i] = x; });
  } else {
    set_max_registers<false, kPrepareRegisters>();
    for (int nc = 0; nc <= chunks; ++nc) {  // chunk nc, while the state warps step chunk nc − 1
      const int nb = nc % 3, nb2 = nc % 2;
      const bool prepare = nc < chunks;
      // Phase 1.
      if (prepare) {
        if (p.l2norm) {  // groups 8..15 of 16 of 8 rows (q's even, k's odd), two a warp; the state warps take 0..7
          const int begin = 8 + 2 * warp;
          for (int i = begin; i < begin + 2; ++i) normalize_sw128_rows(i & 1 ? sm.k[nb] : sm.q[nb], i >> 1);
          fence_proxy_async();  // for wgmma's reads
        }
        if (gate_warp) {  // γ and β of chunk nc, its row scales
          scan_gate_beta(gate, sm.gam, sm.bet, true);
          if (nc + 1 < chunks) fetch_gate(nc + 1);
          __syncwarp();
          const float2 gL = sm.gam[chunk_len(seq, nc) - 1];
          for (int r = 2 * lane; r < 2 * lane + 2; ++r) {
            const float4 rs = gate_row_scale(gL, sm.gam[r], 0.f);
            sm.eg[nb2][r] = rs.w;
            sm.ed[nb2][r] = rs.x;
          }
          if (lane == 0) sm.decay[nb2] = __expf(gL.x);
        }
      }
      __syncthreads();
      // Phase 2: warp w forms L's diagonal block w and inverts it.
      if (prepare) {
        l_block(nb, warp, warp);
        __syncwarp();
        inverse::invert_diagonal_block(sm.l, warp);
      }
      __syncthreads();
      // Phase 3.
      if (prepare) {
        inverse_rows<true>(sm.l, [&](int i, int j, float x0, float x1) {
          store2(sm.ab[nb2] + core_offset<kChunk>(i, j), x0 * sm.bet[j], x1 * sm.bet[j + 1]);
        });
        fence_proxy_async();  // for wgmma's reads
      }
      __syncthreads();
    }
  }
#endif
}

// The chain kernel: the single pass's state products without its prepare, for sequence-heads too
// few for the single pass to pay (chunk_fwd.cuh, single_pass_pays). A block per (sequence, value
// head, 64 value columns), prepare (Chain) forming every chunk's A diag(β), P and row scales in
// parallel, beforehand or beside it (streamed: chunk_fwd.cu, forward_chain). One state warpgroup
// (Sᵀ of its 64 columns in fp32 registers) steps the chunks, one block barrier a step:
//   Sᵀ Kᵀ, Sᵀ Qᵀ (one set of fragments)      Xᵀ = Vᵀ − (Sᵀ Kᵀ) diag(e^γ / ‖k‖)      V'ᵀ = Xᵀ (A diag β)ᵀ
//   Oᵀ = scale ((Sᵀ Qᵀ) diag(e^γ / ‖q‖) + V'ᵀ Pᵀ)  beside  Sᵀ ← e^{γ_L} Sᵀ + V'ᵀ diag(e^{γ_L − γ} / ‖k‖) K
// Its step is a chain of short dependent pieces on one warp a scheduler, so the second warpgroup
// takes what the chain does not need:
//   - one thread issues chunk c + 3's copies when step c ends, on the tensor memory accelerator (q,
//     k and the block's columns of v as they lie, in the 128-byte swizzle; A diag(β), P and the row
//     scales contiguous), which completes them on buffer c % 3's mbarrier. cp.async by the
//     warpgroup's 128 threads reached two chunks ahead; the forward at 2×8192×16 went 0.283 →
//     0.270 ms, its chain kernel unchanged when timed alone: the gain was beside prepare, whose
//     traffic those copies waited behind (H100; bench/gpu/NOTES.md, twenty-fourth session).
//     Streamed, prepare's tiles wait for its flags, which the thread's warp reads 32 at a time;
//   - its warps take Oᵀ's accumulators through shared memory during step c + 1 (each thread those of
//     the same thread of the state warpgroup) and scale, stage and store O, where the state warps'
//     ~80 instructions of it outlasted the update they ran beside: 0.270 → 0.262 ms.
// q and k are read raw: 1 / ‖k‖ and 1 / ‖q‖ ride on the row scales (kChainRowScaleStride), so that
// no one normalises the tiles. Rows past a chunk's length hold the next sequence's (past the
// tensor, zeros): their β and row scales are zero, so they reach neither V' nor the state, and their
// rows of O are not stored.
constexpr int kChainThreads = 2 * 128;  // the state warpgroup, then the copy and output warpgroup

template <class T>
struct ChainSmem {
  alignas(1024) T q[3][kChunk * kDim];  // buffer c % 3: chunk c's q, a sw128 tile
  T k[3][kChunk * kDim];                // k, a sw128 tile
  T v[3][kChunk * kChainCols];          // the block's columns of v, 64 in the 128-byte swizzle
  T o[kChunk * kChainCols];             // O, staged over each output warp's columns, likewise
  T ab[3][kChunk * kChunk];             // A diag(β), a core tile
  T pm[3][kChunk * kChunk];             // P, a core tile
  float rs[3][kChainRowScaleStride];    // the row scales (kChainRowScaleStride) and e^{γ_L}
  uint4 oacc[2][kChunk / 8][128];       // buffer c % 2: Oᵀ's accumulators, a state thread's 32 at [i][t] by fours
  uint64_t full[3];                     // buffer c % 3's copies complete
};

// A thread's registers to, and from, the same thread of the other warpgroup: 16 bytes at [i][t].
template <class R>
__device__ __forceinline__ void put_registers(uint4 (*buf)[128], const R& regs) {
  static_assert(sizeof(R) % 16 == 0);
  const uint4* r = reinterpret_cast<const uint4*>(&regs);
#pragma unroll
  for (int i = 0; i < int(sizeof(R) / 16); ++i) buf[i][threadIdx.x & 127] = r[i];
}
template <class R>
__device__ __forceinline__ void get_registers(const uint4 (*buf)[128], R& regs) {
  uint4* r = reinterpret_cast<uint4*>(&regs);
#pragma unroll
  for (int i = 0; i < int(sizeof(R) / 16); ++i) r[i] = buf[i][threadIdx.x & 127];
}

// The bytes a chunk's copies bring, one buffer of each tile whole (the mbarrier's expected count;
// boxes past the tensor count whole).
template <class T>
constexpr uint32_t kChainChunkBytes =
    sizeof(ChainSmem<T>::q[0]) + sizeof(ChainSmem<T>::k[0]) + sizeof(ChainSmem<T>::v[0]) +
    sizeof(ChainSmem<T>::ab[0]) + sizeof(ChainSmem<T>::pm[0]) + sizeof(ChainSmem<T>::rs[0]);

// The tensor maps of q, k (rows of H heads) and v (HV): [tokens][heads][128] as 3-D tensors,
// boxes of 64 columns × 1 head × 64 tokens in the 128-byte swizzle.
struct ChainMaps {
  CUtensorMap q, k, v;
};

template <class T>
__global__ void __launch_bounds__(kChainThreads, 1)
    chain_kernel(ChunkParams<T> p, ForwardWorkspace<T> ws, const float* h0, float* ht, T* o,
                 const __grid_constant__ ChainMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Smem = ChainSmem<T>;
  constexpr int kBlocks = kDim / kChainCols;
  extern __shared__ float4 smem4[];
  Smem& sm = *reinterpret_cast<Smem*>(smem4);
  if (smem_addr(&sm) & 1023) __trap();  // the sw128 tiles' atoms must be 1024-byte aligned

  const int n = blockIdx.x / (p.HV * kBlocks), hv = blockIdx.x / kBlocks % p.HV, h = hv / (p.HV / p.H);
  const int c0 = blockIdx.x % kBlocks * kChainCols;  // the block's first value column
  const int warp = __shfl_sync(0xffffffffu, int(threadIdx.x >> 5), 0);
  const bool state_warp = warp < 4;
  const bool copier = threadIdx.x == 128;  // issues every copy
  const int v0 = 16 * (warp % 4);          // a state (or output) warp's value columns within the block's
  const SeqInfo seq = ws.seqs[n];
  const int chunks = chunk_count(seq);
  const long state_base = (long(n) * p.HV + hv) * kDim * kDim;
  auto start = [&](int ci) { return seq.bos + ci * kChunk; };

  // Chunk ci's tiles into buffer ci % 3. They are the buffer's load number ci / 3 (from 0), whose
  // completion is that phase of its mbarrier: parity (ci / 3) & 1. The inputs' rows first, then
  // prepare's tiles: streamed (forward_chain, ws.ready), once await_prepared(ci) has returned.
  auto copy_rows = [&](int ci) {
    const int b = ci % 3, t0 = start(ci);
    uint64_t* bar = &sm.full[b];
    mbarrier_arrive_expect(bar, kChainChunkBytes<T>);
    for (int half = 0; half < 2; ++half) {
      tma_load_3d(sm.q[b] + half * kChunk * 64, &maps.q, 64 * half, h, t0, bar);
      tma_load_3d(sm.k[b] + half * kChunk * 64, &maps.k, 64 * half, h, t0, bar);
    }
    tma_load_3d(sm.v[b], &maps.v, c0, hv, t0, bar);
  };
  auto head_chunk = [&](int ci) { return long(seq.first_chunk + ci) * p.HV + hv; };
  auto copy_prepared = [&](int ci) {
    const int b = ci % 3;
    const long hc = head_chunk(ci);
    if (ws.ready) fence_proxy_async_global();
    uint64_t* bar = &sm.full[b];
    bulk_load(sm.ab[b], ws.a + hc * kChunk * kChunk, sizeof(sm.ab[b]), bar);
    bulk_load(sm.pm[b], ws.p + hc * kChunk * kChunk, sizeof(sm.pm[b]), bar);
    bulk_load(sm.rs[b], ws.rs + hc * kChainRowScaleStride, sizeof(sm.rs[b]), bar);
  };
  // Streamed, by the copier's warp: returns when prepare has published chunk ci. Its lanes read the
  // flags of the 32 chunks from the first not yet seen at once (an acquire load each; the __syncwarp
  // orders them before the copier's copies), so that a load's latency is paid every few steps: one
  // flag a step, read by the copy thread, held its warp's share of O and the step's barrier (chain
  // kernel 173 → 208 µs at 2×8192×16, H100).
  int prepared = 0;  // the chunks before it are published
  auto await_prepared = [&](int ci) {
    for (int spins = 0; ci >= prepared; ++spins) {
      const int cj = prepared + (threadIdx.x & 31);
      const unsigned set = __ballot_sync(~0u, cj >= chunks || acquire_flag(ws.ready + head_chunk(cj)));
      prepared += set == ~0u ? 32 : __ffs(~set) - 1;
      if (spins > (1 << 22)) __trap();  // prepare never ran: an error, not a hang
      if (ci >= prepared) __nanosleep(64);
    }
    __syncwarp();
  };
  auto wait_chunk = [&](int ci) { mbarrier_wait(&sm.full[ci % 3], (ci / 3) & 1); };

  if (copier) {
    for (int b = 0; b < 3; ++b) mbarrier_init(&sm.full[b], 1);
    fence_proxy_async();  // the initialised barriers, for the copies (the async proxy)
  }
  __syncthreads();
  if (warp == 4) {
    const int last = min(3, chunks) - 1;
    if (copier)
      for (int ci = 0; ci <= last; ++ci) copy_rows(ci);
    if (ws.ready && last >= 0) await_prepared(last);
    if (copier)
      for (int ci = 0; ci <= last; ++ci) copy_prepared(ci);
  }

  StateTile st;
  if (state_warp)
    for_each(st, c0 + v0, 0, [&](int i, int j, float& x) { x = h0 ? h0[state_base + j * kDim + i] : 0.f; });
  for (int c = 0; c < chunks; ++c) {
    const int b = c % 3;
    if (state_warp) {
      const SwizzledRows<T> v{sm.v[b]};
      const float* rs = sm.rs[b];
      wait_chunk(c);
      ChunkTile acc_k, acc_q;
      {
        uint32_t sa[kDim / 16][4];
        a_fragments<T>(st, sa);
        wgmma_fence();
        issue_state_times<T, true>(acc_k, sa, sm.k[b]);
        wgmma_commit();
        issue_state_times<T, true>(acc_q, sa, sm.q[b]);
        wgmma_commit();
      }
      ChunkFrags vt;  // Vᵀ, read while the products run
      load_values_transposed(vt, v, v0);
      wgmma_wait<1>();  // Sᵀ Kᵀ; Sᵀ Qᵀ runs on
      subtract_from_values<T>(acc_k, vt, rs + 2 * kChunk);
      ChunkFrags xa, vn;
      a_fragments<T>(acc_k, xa);
      ChunkTile vacc;
      wgmma_fence();  // V'ᵀ = Xᵀ (A diag β)ᵀ
      issue_times_core_tile<T, true>(vacc, xa, sm.ab[b]);
      wgmma_commit_wait();
      a_fragments<T>(vacc, vn);
      for_each(acc_q, 0, 0, [&](int, int j, float& x) { x *= rs[kChunk + j]; });
      const float decay = rs[3 * kChunk];
      for_each(st, 0, 0, [&](int, int, float& x) { x *= decay; });
      ChunkFrags a;
      scaled_fragments<T>(vn, rs, a);
      wgmma_fence();  // Oᵀ += V'ᵀ Pᵀ, then the update
      issue_times_core_tile<T>(acc_q, vn, sm.pm[b]);
      wgmma_commit();
      issue_update<T>(st, a, sm.k[b]);
      wgmma_commit();
      wgmma_wait<1>();  // Oᵀ, to the output warps while the update runs
      put_registers(sm.oacc[c % 2], acc_q);
      wgmma_wait();
      fence_proxy_async();  // v's reads before the copy that overwrites the buffer
    }
    __syncthreads();
    if (!state_warp) {                            // during step c + 1: chunk c's O, each warp a state warp's columns
      if (warp == 4 && c + 3 < chunks) {  // chunk c + 3's, over chunk c's buffers
        if (copier) copy_rows(c + 3);
        if (ws.ready) await_prepared(c + 3);
        if (copier) copy_prepared(c + 3);
      }
      ChunkTile acc;
      get_registers(sm.oacc[c % 2], acc);
      for_each(acc, 0, 0, [&](int, int, float& x) { x *= p.scale; });
      const SwizzledRows<T> staged{sm.o};
      stage_transposed<T>(acc, staged, v0);
      __syncwarp();
      store_staged_rows(o + (long(start(c)) * p.HV + hv) * kDim + c0 + v0, long(p.HV) * kDim, staged, v0,
                        chunk_len(seq, c));
      __syncwarp();  // the staged rows are read before the next chunk's land
    }
  }
  if (state_warp && ht) for_each(st, c0 + v0, 0, [&](int i, int j, float& x) { ht[state_base + j * kDim + i] = x; });
#endif
}

// 1 in the code built for sm_90a, where the kernel above has a body (single_pass_built).
__device__ int single_pass_arch =
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    1;
#else
    0;
#endif

}  // namespace

bool single_pass_built() {
  static const bool built = [] {
    int arch = 0;
    if (cudaMemcpyFromSymbol(&arch, single_pass_arch, sizeof arch) == cudaSuccess) return arch == 1;
    cudaGetLastError();  // no device: later calls of this process must not report it
    return false;
  }();
  return built;
}

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

// A [tokens][heads][128] tensor's map for chain_kernel's boxes (ChainMaps). The driver's encoder
// is reached through the runtime, so that nothing links libcuda.
template <class T>
Status encode_rows_map(CUtensorMap& map, const T* base, int heads, int tokens) {
  static const auto encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      fn = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  if (!encode) return {cudaErrorNotSupported, "gdn::cuda: the driver has no cuTensorMapEncodeTiled"};
  const cuuint64_t dims[3] = {cuuint64_t(kDim), cuuint64_t(heads), cuuint64_t(tokens)};
  const cuuint64_t strides[2] = {kDim * sizeof(T), cuuint64_t(heads) * kDim * sizeof(T)};  // bytes, of dims 1, 2
  const cuuint32_t box[3] = {64, 1, kChunk}, unit[3] = {1, 1, 1};
  const CUresult r =
      encode(&map, std::is_same_v<T, bf16> ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3,
             const_cast<T*>(base), dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return {cudaErrorInvalidValue, gdn::cat("gdn::cuda: cuTensorMapEncodeTiled failed (", int(r), ")")};
  return {};
}

template <class T>
Status launch_chain(const ChunkPlan& plan, const ChunkParams<T>& p, const ForwardWorkspace<T>& ws, const float* h0,
                    float* ht, T* o, cudaStream_t stream) {
  const int tokens = plan.seqs.back().eos;
  ChainMaps maps;
  if (Status st = encode_rows_map(maps.q, p.q, p.H, tokens); !st.ok()) return st;
  if (Status st = encode_rows_map(maps.k, p.k, p.H, tokens); !st.ok()) return st;
  if (Status st = encode_rows_map(maps.v, p.v, p.HV, tokens); !st.ok()) return st;
  const auto kernel = chain_kernel<T>;
  constexpr int bytes = int(sizeof(ChainSmem<T>));
  GDN_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  kernel<<<unsigned(plan.N * p.HV * (kDim / kChainCols)), kChainThreads, bytes, stream>>>(p, ws, h0, ht, o, maps);
  GDN_CUDA_LAUNCHED("gdn::cuda chain_kernel");
  return {};
}

template Status launch_chain<bf16>(const ChunkPlan&, const ChunkParams<bf16>&, const ForwardWorkspace<bf16>&,
                                   const float*, float*, bf16*, cudaStream_t);
template Status launch_chain<f16>(const ChunkPlan&, const ChunkParams<f16>&, const ForwardWorkspace<f16>&, const float*,
                                  float*, f16*, cudaStream_t);
template Status forward_single_pass<bf16>(const ChunkPlan&, const ChunkParams<bf16>&, const SeqInfo*, const float*,
                                          float*, bf16*, cudaStream_t);
template Status forward_single_pass<f16>(const ChunkPlan&, const ChunkParams<f16>&, const SeqInfo*, const float*,
                                         float*, f16*, cudaStream_t);

}  // namespace gdn::cuda::detail
