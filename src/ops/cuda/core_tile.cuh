// Tiles in wgmma's no-swizzle "core matrix" layout, and the wgmma and setmaxnreg wrappers of the
// single pass (chunk_fwd_single.cu; sm_90a).
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

// RowMajorK's view (element (r, k) of the operand stored at row r, column k) of a core tile, for
// warp_mma.
template <class T, int C>
struct CoreRowsK {
  static_assert(k16Bit<T>);
  static constexpr bool kTrans = false;
  const T* p;
  __device__ __forceinline__ uint32_t a_addr(int r0) const {
    const int l = threadIdx.x & 31, m = l >> 3;
    return smem_addr(p + (((r0 + 8 * (m & 1)) >> 3) * (C / 8) + (m >> 1)) * 64 + (l & 7) * 8);
  }
  __device__ __forceinline__ uint32_t b_addr(int c0) const {
    const int l = threadIdx.x & 31, m = l >> 3;
    return smem_addr(p + (((c0 + 8 * (m >> 1)) >> 3) * (C / 8) + (m & 1)) * 64 + (l & 7) * 8);
  }
  __device__ __forceinline__ uint32_t k_step() const { return 2 * 64 * sizeof(T); }
  __device__ __forceinline__ void scale_a(uint32_t (&)[4], int) const {}
};

// A chunk's [64][kDim] rows (row stride `stride` in global memory) into a core tile by cp.async, rows
// >= rows zero (zero fill). Thread (warp w, lane l) of the 256 copies row 8 w + l % 8, pieces
// 4 n + l / 8 (n = 0..3): one row, one zero-fill predicate and one address a thread, stepped by
// immediates, where the piece-by-piece order (consecutive lanes on consecutive pieces of a row)
// needed four of each. A warp's copy writes 512 contiguous bytes of shared memory; its L2 sectors
// and shared wavefronts measured the same in both orders (32 each a warp instruction, twice and
// eight times the ideal: the no-swizzle core layout puts a row's pieces 128 bytes apart).
template <class T>
__device__ __forceinline__ void load_core_tile_zero_tail(T* dst, const T* src, long stride, int rows, int tid) {
  static_assert(kDim * int(sizeof(T)) / 16 == 16 && kBlockThreads == 256, "16 pieces a row, 8 rows a warp");
  const int r = 8 * (tid >> 5) + (tid & 7), j = (tid >> 3) & 3;
  const unsigned bytes = r < rows ? 16u : 0u;
  dst += core_offset<kDim>(r, 8 * j);
  src += long(r < rows ? r : 0) * stride + 8 * j;
#pragma unroll
  for (int n = 0; n < 4; ++n) cp_async16_or_zero(dst + 256 * n, src + 32 * n, bytes);
}

// normalize_rows for a core tile: rows 8 group .. + 7 (one row group), lane quarter c = lane / 8
// holding the 4-element groups c, c + 4, ... of its row (the same results).
template <class T>
__device__ __forceinline__ void normalize_core_rows(T* tile, int group) {
  const int lane = threadIdx.x & 31, r = lane & 7, c = lane >> 3;
  T* base = tile + group * (kDim / 8) * 64 + r * 8;
  normalize_quarter_row(
      [&](int i) {  // group c + 4i's 4 elements
        const int q = c + 4 * i;
        return base + (q >> 1) * 64 + 4 * (q & 1);
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
// B of k step ks (16 columns) from a core tile of C columns whose rows are B's N and columns its K
// (K-major): core matrices 128 bytes apart along K, 8-row groups C * 16 bytes apart along N.
template <int C, class T>
__device__ __forceinline__ uint64_t core_tile_desc(const T* tile, int ks) {
  return wgmma_desc(tile + 2 * 64 * ks, 128, C * 16);
}
// B of k step ks (16 rows) from a core tile of C columns whose rows are B's K and columns its N
// (MN-major, wgmma's trans-b): 8-row groups C * 16 bytes apart along K (the leading offset),
// core matrices 128 bytes apart along N (checked by a probe on the H100, bench/gpu/NOTES.md).
template <int C, class T>
__device__ __forceinline__ uint64_t core_tile_desc_mn(const T* tile, int ks) {
  return wgmma_desc(tile + 2 * (C / 8) * 64 * ks, C * 16, 128);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
// Commits the wgmmas issued as a group; other work may run before wgmma_wait.
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits for every committed group: their accumulators may be read after.
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
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
// N = 64, B K-major.
template <class T>
__device__ __forceinline__ void wgmma_n64_k(float (&d)[8][4], const uint32_t (&a)[4], uint64_t b) {
#define GDN_WGMMA_N64(type)                                                                                          \
  asm volatile("wgmma.mma_async.sync.aligned.m64n64k16.f32." type "." type " "                                     \
               "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26," \
               "%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, 1, 1, 1, 0;\n"                                         \
               : GDN_WGMMA_D8(0), GDN_WGMMA_D8(1), GDN_WGMMA_D8(2), GDN_WGMMA_D8(3), GDN_WGMMA_D8(4),              \
                 GDN_WGMMA_D8(5), GDN_WGMMA_D8(6), GDN_WGMMA_D8(7)                                                   \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b))
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
// N = 32, A (64 x 16) and B both K-major core tiles by descriptors (core_tile_desc: A's rows are
// its M as B's are its N).
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
