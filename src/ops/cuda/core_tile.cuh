// Tiles in wgmma's 128-byte swizzle (q, k) and no-swizzle "core matrix" layout (A diag(β), P), and
// the wgmma, setmaxnreg, mbarrier and tensor-copy wrappers of the single pass and the chain kernel
// (chunk_fwd_single.cu; sm_90a).
#pragma once

#include "tile.cuh"

namespace gdn::cuda::detail {

// Element (r, c) of a core tile of C columns: 8-row groups, each of C/8 core matrices of 8 rows x 16
// bytes stored contiguously (128 bytes), so that 8 lanes of an ldmatrix read one conflict-free and a
// wgmma descriptor steps by constants.
template <int C>
__device__ __forceinline__ int core_offset(int r, int c) {
  return ((r >> 3) * (C / 8) + (c >> 3)) * 64 + (r & 7) * 8 + (c & 7);
}

// A [64][64] tile (row stride ld) stored in the core layout (core_offset<64>) at dst, by 256
// threads: 16-byte piece i of the layout is row (i / 64) · 8 + i % 8, columns 8 ((i / 8) % 8)..,
// so that consecutive threads write consecutive global pieces and read 8 rows of one column piece
// (conflict-free for a row stride ≡ 16 bytes mod 128, e.g. 72 elements).
template <class T>
__device__ __forceinline__ void store_core_tile(T* dst, const T* src, int ld) {
#pragma unroll
  for (int i = threadIdx.x; i < kChunk * kChunk / 8; i += kBlockThreads) {
    const int r = (i >> 6) * 8 + (i & 7), c = ((i >> 3) & 7) * 8;
    *reinterpret_cast<uint4*>(dst + 8 * i) = *reinterpret_cast<const uint4*>(src + r * ld + c);
  }
}

// Element (r, c) of a [Rows][kDim] 16-bit tile in wgmma's 128-byte swizzle, K-major along c: two
// 64-column halves of Rows × 128 bytes, each row's eight 16-byte pieces XOR-permuted by r % 8 within
// its 128 bytes (8-row atoms of 1024 bytes, 1024-byte aligned: the hardware swizzles address bits).
// A row's half stays one 128-byte line, so 8 lanes copying it, or ldmatrix's 8 rows of one piece,
// take one shared-memory wavefront each. In the core layout a row's pieces lay 128 bytes apart: each
// copy instruction took 32 L2 sectors and 32 shared wavefronts, against 16 and 4 (NOTES, s19/s20).
template <int Rows>
__host__ __device__ __forceinline__ int sw128_offset(int r, int c) {
  return (c >> 6) * Rows * 64 + r * 64 + ((((c >> 3) & 7) ^ (r & 7)) << 3) + (c & 7);
}

// A chunk's [64][kDim] rows into a sw128 tile by cp.async, rows >= rows zero: consecutive threads on
// consecutive 16-byte pieces of a row (8 lanes: one global line into one shared line), rows r + 16 n
// at constant offsets (same r % 8, the same permutation).
template <class T>
__device__ __forceinline__ void load_sw128_tile_zero_tail(T* dst, const T* src, long stride, int rows, int tid) {
  static_assert(kDim * int(sizeof(T)) / 16 == 16 && kBlockThreads == 256, "16 pieces a row, 16 rows a pass");
  const int t = opaque(tid), r = t >> 4, j = t & 15;  // formed here, not held across the caller's loop
  dst += sw128_offset<kChunk>(r, 8 * j);
  src += 8 * j;
#pragma unroll
  for (int n = 0; n < kChunk / 16; ++n) {
    const int rn = r + 16 * n;
    cp_async16_or_zero(dst + 16 * 64 * n, src + long(rn < rows ? rn : 0) * stride, rn < rows ? 16u : 0u);
  }
}

// normalize_rows for a sw128 tile of kChunk rows: rows 8 group .. + 7 (one row group), lane quarter
// c = lane / 8 holding the 4-element groups c, c + 4, ... of its row (the same results).
template <class T>
__device__ __forceinline__ void normalize_sw128_rows(T* tile, int group) {
  const int lane = threadIdx.x & 31, r = lane & 7, c = lane >> 3;
  T* row = tile + (8 * group + r) * 64;
  normalize_quarter_row(
      [&](int i) {  // group c + 4i's 4 elements: columns 4q..4q+3
        const int q = c + 4 * i;
        return row + (q >> 4) * kChunk * 64 + ((((q >> 1) & 7) ^ r) << 3) + 4 * (q & 1);
      },
      8);
}

// Orders this thread's earlier shared-memory writes (the generic proxy's: cp.async's landing,
// st.shared) before the async proxy's reads (wgmma's operands): each writer, before the barrier that
// precedes them.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// setmaxnreg: the registers a thread of this warpgroup raised (Inc) or lowered to N. An .inc waits
// until the block's warpgroups have released as many by .dec.
template <bool Inc, int N>
__device__ __forceinline__ void set_max_registers() {
  if constexpr (Inc)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
  else
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}

// wgmma's shared-memory matrix descriptor (no swizzle): start, leading and stride byte offsets.
__device__ __forceinline__ uint64_t wgmma_desc(const void* p, uint32_t lbo, uint32_t sbo) {
  return uint64_t((smem_addr(p) & 0x3FFFF) >> 4) | (uint64_t(lbo >> 4) << 16) | (uint64_t(sbo >> 4) << 32);
}
// wgmma_desc with the 128-byte swizzle (layout type 1, bits 62-63).
__device__ __forceinline__ uint64_t wgmma_desc_sw128(const void* p, uint32_t lbo, uint32_t sbo) {
  return wgmma_desc(p, lbo, sbo) | (uint64_t(1) << 62);
}
// A descriptor moved `bytes` into its tile: the start field counts 16-byte units and a shared-memory
// address never carries out of it. The helpers below form each operand's descriptor as its tile's
// plus a constant, so that a product's k steps share one address conversion (forming every step's
// from its address took ~5 instructions a wgmma: 20% of the chain kernel's state-warp samples).
__device__ __forceinline__ uint64_t desc_plus(uint64_t d, int bytes) { return d + uint64_t(bytes >> 4); }
// Operand of k step ks (16 columns) from a sw128 tile of Rows rows whose rows are its M or N and
// columns its K (K-major): 8-row atoms 1024 bytes apart (the stride offset); the step moves the
// start 32 bytes along a 128-byte row, or to the second half (the leading offset is unused within
// the swizzle's width).
template <int Rows, class T>
__device__ __forceinline__ uint64_t sw128_desc(const T* tile, int ks) {
  return desc_plus(wgmma_desc_sw128(tile, 16, 1024), ((ks >> 2) * Rows * 64 + (ks & 3) * 16) * int(sizeof(T)));
}
// B of k step ks (16 rows) from a sw128 tile of Rows rows whose rows are B's K and columns its N
// (MN-major): the 64-column halves Rows × 128 bytes apart along N (the leading offset), 8-row atoms
// 1024 bytes apart along K (the stride offset): CUTLASS's canonical Swizzle<3,4,3> MN-major roles,
// which swap the no-swizzle MN-major layout's; the update's checks passed with them on the H100 (s20).
template <int Rows, class T>
__device__ __forceinline__ uint64_t sw128_desc_mn(const T* tile, int ks) {
  return desc_plus(wgmma_desc_sw128(tile, Rows * 128, 1024), ks * 16 * 64 * int(sizeof(T)));
}
// B of k step ks (16 columns) from a core tile of C columns whose rows are B's N and columns its K
// (K-major): core matrices 128 bytes apart along K, 8-row groups C * 16 bytes apart along N.
template <int C, class T>
__device__ __forceinline__ uint64_t core_tile_desc(const T* tile, int ks) {
  return desc_plus(wgmma_desc(tile, 128, C * 16), 2 * 64 * ks * int(sizeof(T)));
}

// The tensor memory accelerator's copies into shared memory, each completing on an mbarrier that
// counts the bytes expected (the chain kernel's loads, ~57 KB a chunk, issued by one thread).
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, int arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(arrivals) : "memory");
}
// One arrival that also expects `bytes` more of copies to complete the phase.
__device__ __forceinline__ void mbarrier_arrive_expect(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
// Waits until the phase of the given parity (0 for the first, then alternating) has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n@!done bra WAIT;\n}\n" ::
          "r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
// A box of a 3-D tensor map (coordinates innermost first) into dst; rows past the tensor read zero.
__device__ __forceinline__ void tma_load_3d(void* dst, const void* map, int x, int y, int z, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::
          "r"(smem_addr(dst)),
      "l"(map), "r"(x), "r"(y), "r"(z), "r"(smem_addr(bar))
      : "memory");
}
// `bytes` contiguous bytes (a multiple of 16, both ends 16-byte aligned) into dst.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}

// A flag in global memory from one kernel to another running beside it (the chain forward's
// prepare to its chain kernel). publish_flag: after the block's barrier that follows its stores, by
// one thread. The reader's acquire load; then (the thread that copies, after a barrier with the
// readers) fence_proxy_async_global, as it copies the data by the async proxy (cp.async.bulk).
__device__ __forceinline__ void publish_flag(int* flag) {
  __threadfence();
  asm volatile("st.release.gpu.global.b32 [%0], %1;\n" ::"l"(flag), "r"(1) : "memory");
}
__device__ __forceinline__ int acquire_flag(const int* flag) {
  int set;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(set) : "l"(flag) : "memory");
  return set;
}
__device__ __forceinline__ void fence_proxy_async_global() { asm volatile("fence.proxy.async.global;\n" ::: "memory"); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
// Commits the wgmmas issued as a group; other work may run before wgmma_wait.
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed groups are pending (every group: N = 0): the accumulators of the
// others may be read after.
template <int N = 0>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
__device__ __forceinline__ void wgmma_commit_wait() {
  wgmma_commit();
  wgmma_wait();
}

// wgmma: a warpgroup's 64 x N product d += A B, A (64 x 16) from registers in mma.m16n8k16's A
// layout (warp w % 4 holds rows 16 (w % 4) ..), B (16 x N) by a descriptor, d in mma's accumulator
// layout (d[j]: tile j of 8 columns, as warp_mma's acc[0][j]).
#define GDN_WGMMA_D8(i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
// WGMMA(type) with T's PTX type name.
#define GDN_WGMMA_TYPED(WGMMA)             \
  if constexpr (std::is_same_v<T, bf16>) \
    WGMMA("bf16");                        \
  else                                    \
    WGMMA("f16")
// N = 64, B K-major. Accumulate false: d = A B (d's old values unread, so that no instruction
// between the fence and the wgmma has to zero it: ptxas then waits for earlier wgmmas, C7517).
template <class T, bool Accumulate = true>
__device__ __forceinline__ void wgmma_n64_k(float (&d)[8][4], const uint32_t (&a)[4], uint64_t b) {
#define GDN_WGMMA_N64(type)                                                                                          \
  asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." type "." type " "                                     \
               "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26," \
               "%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, %37, 1, 1, 0;\n"                                       \
               : GDN_WGMMA_D8(0), GDN_WGMMA_D8(1), GDN_WGMMA_D8(2), GDN_WGMMA_D8(3), GDN_WGMMA_D8(4),              \
                 GDN_WGMMA_D8(5), GDN_WGMMA_D8(6), GDN_WGMMA_D8(7)                                                   \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(int(Accumulate)))
  GDN_WGMMA_TYPED(GDN_WGMMA_N64);
#undef GDN_WGMMA_N64
}
// N = 128, B MN-major.
template <class T>
__device__ __forceinline__ void wgmma_n128_mn(float (&d)[16][4], const uint32_t (&a)[4], uint64_t b) {
#define GDN_WGMMA_N128(type)                                                                                          \
  asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32." type "." type " "                                    \
               "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26," \
               "%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,"  \
               "%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, 1, 1, 1, 1;\n"       \
               : GDN_WGMMA_D8(0), GDN_WGMMA_D8(1), GDN_WGMMA_D8(2), GDN_WGMMA_D8(3), GDN_WGMMA_D8(4),              \
                 GDN_WGMMA_D8(5), GDN_WGMMA_D8(6), GDN_WGMMA_D8(7), GDN_WGMMA_D8(8), GDN_WGMMA_D8(9),              \
                 GDN_WGMMA_D8(10), GDN_WGMMA_D8(11), GDN_WGMMA_D8(12), GDN_WGMMA_D8(13), GDN_WGMMA_D8(14),         \
                 GDN_WGMMA_D8(15)                                                                                    \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b))
  GDN_WGMMA_TYPED(GDN_WGMMA_N128);
#undef GDN_WGMMA_N128
}
// N = 32, A (64 x 16) and B both K-major by descriptors (sw128_desc: A's rows are its M as B's are
// its N).
template <class T>
__device__ __forceinline__ void wgmma_n32_ss(float (&d)[4][4], uint64_t a, uint64_t b) {
#define GDN_WGMMA_N32(type)                                                                              \
  asm volatile("wgmma.mma_async.sync.aligned.m64n32k16.f32." type "." type " "                         \
               "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, 1, 1, 1, 0, 0;\n" \
               : GDN_WGMMA_D8(0), GDN_WGMMA_D8(1), GDN_WGMMA_D8(2), GDN_WGMMA_D8(3)                   \
               : "l"(a), "l"(b))
  GDN_WGMMA_TYPED(GDN_WGMMA_N32);
#undef GDN_WGMMA_N32
}
#undef GDN_WGMMA_TYPED
#undef GDN_WGMMA_D8

}  // namespace gdn::cuda::detail
