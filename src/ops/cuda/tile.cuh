// Block-level building blocks of the CUDA kernels: tensor-core products of tiles in shared
// memory, loads of bf16/fp16/fp32 rows and tiles, the fused L2 norm.
//
// Operand tiles have the element type of the inputs. 16-bit tiles (bf16 or fp16) feed
// mma.sync.m16n8k16 of their type through ldmatrix (rows padded by 16 bytes: the 8 rows of one
// 8x8 matrix hit 8 distinct 16-byte bank groups). fp32 tiles (the fp32-input path) split each
// value into bf16 hi + lo and issue three products (hi·hi + hi·lo + lo·hi), ~1e-5 relative, so
// that the GPU can be checked against the fp64 reference at 1e-4. Values consumed only as mma
// operands may therefore be stored in the input type without changing any result: the product
// rounds them to that type anyway.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <type_traits>

namespace gdn::cuda::detail {

constexpr int kChunk = 64;  // tokens per chunk
constexpr int kDim = 128;   // K = V = 128 (head dimension)

using bf16 = __nv_bfloat16;
using f16 = __half;
template <class T>
constexpr bool k16Bit = std::is_same_v<T, bf16> || std::is_same_v<T, f16>;

// Row stride (elements) of a shared-memory tile of `cols` columns: 16 bytes of padding.
template <class T>
constexpr int tile_ld(int cols) {
  return cols + 16 / int(sizeof(T));
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(f16 x) { return __half2float(x); }
template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ f16 from_float<f16>(float x) { return __float2half_rn(x); }

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
// The warp sums of a and b in one chain: the first round leaves a's pair sums in lanes 0..15 and
// b's in 16..31, four more reduce each half, and two broadcasts (7 shuffles instead of 10).
__device__ __forceinline__ float2 warp_sum2(float a, float b) {
  const bool high = threadIdx.x & 16;
  float v = (high ? b : a) + __shfl_xor_sync(0xffffffffu, high ? a : b, 16);
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return make_float2(__shfl_sync(0xffffffffu, v, 0), __shfl_sync(0xffffffffu, v, 16));
}

// Two consecutive elements (p[0], p[1]) from two floats.
__device__ __forceinline__ void store2(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }
__device__ __forceinline__ void store2(bf16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}
__device__ __forceinline__ void store2(f16* p, float a, float b) { *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b); }
__device__ __forceinline__ float2 load2(const float* p) { return *reinterpret_cast<const float2*>(p); }
__device__ __forceinline__ float2 load2(const bf16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}
__device__ __forceinline__ float2 load2(const f16* p) { return __half22float2(*reinterpret_cast<const __half2*>(p)); }

// Two floats as one register of 16-bit type T (the first in the low half).
template <class T>
__device__ __forceinline__ uint32_t pack2(float a, float b) {
  uint32_t r;
  store2(reinterpret_cast<T*>(&r), a, b);
  return r;
}
// hi = bf16(x), lo = bf16(x - hi) for both halves of a pair.
__device__ __forceinline__ void split_bf16(float2 x, uint32_t& hi, uint32_t& lo) {
  __nv_bfloat162 h = __floats2bfloat162_rn(x.x, x.y);
  float2 hf = __bfloat1622float2(h);
  hi = *reinterpret_cast<uint32_t*>(&h);
  lo = pack2<bf16>(x.x - hf.x, x.y - hf.y);
}

// x as a value the compiler cannot treat as a constant: what depends on it is formed where it is
// used, not hoisted out of a loop and held in registers (in the single pass, held, it spilled).
__device__ __forceinline__ int opaque(int x) {
  int y;
  asm volatile("mov.b32 %0, %1;" : "=r"(y) : "r"(x));
  return y;
}

// Four 8x8 matrices of 16-bit elements; lane l gives the shared-memory address (bytes) of row l % 8
// of matrix l / 8. With .trans each matrix arrives transposed.
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
template <bool Trans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t a) {
  if constexpr (Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// Four 8x8 matrices of 16-bit elements from registers to shared memory (sm_90), the inverse of
// ldmatrix: lane l gives the address of row l % 8 of matrix l / 8; with .trans each is stored
// transposed.
__device__ __forceinline__ void stmatrix_x4_trans(uint32_t a, const uint32_t (&r)[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(a), "r"(r[0]), "r"(r[1]),
               "r"(r[2]), "r"(r[3])
               : "memory");
}

// Operand views. Element (r, k) of the product's operand, r the row of A (or the column of
// B), k the reduction index. RowMajorK: stored p[r * ld + k]; ColMajorK: stored p[k * ld + r].
// fp32 views give pairs (r, k), (r, k + 1); 16-bit views (the primary templates, T bf16 or
// fp16) give the lane's ldmatrix addresses: a_addr of the 16x16 A fragment at (r0, 0), b_addr of
// the 16x8 B fragments of columns c0..c0+7 and c0+8..c0+15 at k = 0 (register order of
// mma.m16n8k16), and k_step, the bytes from k to k + 16, so that warp_mma forms each address once
// per product and steps it by a constant (a row product per load: intra_grad 3.5% more
// instructions and 8 bytes of spill).
template <class T>
struct RowMajorK {
  static_assert(k16Bit<T>);
  static constexpr bool kTrans = false;
  const T* p;
  int ld;
  __device__ __forceinline__ uint32_t a_addr(int r0) const {
    const int l = threadIdx.x & 31, m = l >> 3;
    return smem_addr(p + (r0 + (l & 7) + 8 * (m & 1)) * ld + 8 * (m >> 1));
  }
  __device__ __forceinline__ uint32_t b_addr(int c0) const {
    const int l = threadIdx.x & 31, m = l >> 3;
    return smem_addr(p + (c0 + (l & 7) + 8 * (m >> 1)) * ld + 8 * (m & 1));
  }
  __device__ __forceinline__ uint32_t k_step() const { return 16 * sizeof(T); }
  __device__ __forceinline__ void scale_a(uint32_t (&)[4], int) const {}
};
template <class T>
struct ColMajorK {
  static_assert(k16Bit<T>);
  static constexpr bool kTrans = true;
  const T* p;
  int ld;
  __device__ __forceinline__ uint32_t a_addr(int r0) const {
    const int l = threadIdx.x & 31, m = l >> 3;
    return smem_addr(p + ((l & 7) + 8 * (m >> 1)) * ld + r0 + 8 * (m & 1));
  }
  __device__ __forceinline__ uint32_t b_addr(int c0) const {
    const int l = threadIdx.x & 31, m = l >> 3;
    return smem_addr(p + ((l & 7) + 8 * (m & 1)) * ld + c0 + 8 * (m >> 1));
  }
  __device__ __forceinline__ uint32_t k_step() const { return 16 * ld * sizeof(T); }
  __device__ __forceinline__ void scale_a(uint32_t (&)[4], int) const {}
};

// ColMajorK<T> with element (r, k) multiplied by s[k * stride] as its A fragments load: a per-row
// scale of the stored [k][r] tile with no pass over it (Kd = diag(e^{γ_L − γ}) K of the forward
// state pass, Q e^γ of the reverse one; the single pass v8 scales V' instead, its A operand in
// registers). bf16: the scale rounded to bf16 and one bf16x2 product a register, two roundings as a
// scaled tile of the rounded K had; fp16 in fp32 (a scale in fp16 would underflow where the product
// does not).
template <class T>
struct ScaledColMajorK : ColMajorK<T> {
  const float* s;
  int stride;
  __device__ __forceinline__ void scale_a(uint32_t (&a)[4], int k0) const {
    const int k = k0 + 2 * (threadIdx.x & 3);  // registers 0, 1: columns k, k + 1; 2, 3: k + 8, k + 9
    const float2 lo = make_float2(s[k * stride], s[(k + 1) * stride]);
    const float2 hi = make_float2(s[(k + 8) * stride], s[(k + 9) * stride]);
    if constexpr (std::is_same_v<T, bf16>) {
      const __nv_bfloat162 blo = __float22bfloat162_rn(lo), bhi = __float22bfloat162_rn(hi);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        __nv_bfloat162& x = reinterpret_cast<__nv_bfloat162&>(a[i]);
        x = __hmul2(x, i < 2 ? blo : bhi);
      }
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = i < 2 ? lo : hi;
        const float2 x = load2(reinterpret_cast<const T*>(&a[i]));
        a[i] = pack2<T>(x.x * f.x, x.y * f.y);
      }
    }
  }
};

template <>
struct RowMajorK<float> {
  const float* p;
  int ld;
  __device__ __forceinline__ float2 pair(int r, int k) const { return load2(p + r * ld + k); }
};
template <>
struct ColMajorK<float> {
  const float* p;
  int ld;
  __device__ __forceinline__ float2 pair(int r, int k) const { return make_float2(p[k * ld + r], p[(k + 1) * ld + r]); }
};
template <class T>
__device__ __forceinline__ RowMajorK<T> row_major(const T* p, int ld) {
  return {p, ld};
}
template <class T>
__device__ __forceinline__ ColMajorK<T> col_major(const T* p, int ld) {
  return {p, ld};
}

// c += a · b on the tensor cores (mma.m16n8k16, fp32 accumulators) for 16-bit fragments of type
// `ab` (bf16 or f16): one instruction text for both types.
#define GDN_MMA_M16N8K16(ab, c, a, b0, b1)                                                                \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." ab "." ab ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, " \
               "{%8,%9}, {%0,%1,%2,%3};\n"                                                              \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                           \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))

// The tensor-core product of 16-bit fragments of type T.
template <class T>
__device__ __forceinline__ void mma_16bit(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  static_assert(k16Bit<T>);
  if constexpr (std::is_same_v<T, bf16>)
    GDN_MMA_M16N8K16("bf16", c, a, b0, b1);
  else
    GDN_MMA_M16N8K16("f16", c, a, b0, b1);
}
// The fp32 path's products of bf16 hi / lo halves.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  mma_16bit<bf16>(c, a, b0, b1);
}
#undef GDN_MMA_M16N8K16
// c += a · b (mma.m16n8k8, tf32 operands as 32-bit registers, fp32 accumulators).
__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// x as an operand register of mma_tf32, which reads its upper 19 bits: truncated toward zero
// (≤ 2^-10 of x). Rounding it to nearest first (cvt.rna, ≤ 2^-11) cost an instruction an element
// on the single pass's inverse chain, 2% of the kernel (bench/gpu/NOTES.md, seventeenth session).
__device__ __forceinline__ uint32_t as_tf32(float x) { return __float_as_uint(x); }

template <class Op>
using view_element = std::remove_const_t<std::remove_pointer_t<decltype(Op::p)>>;

// One warp: acc[MT][NT] (16x8 tiles) += A[m0 : m0+16MT, k_begin:kdim] * B[k_begin:kdim, n0 : n0+8NT]
// (k_begin < kdim: the rest of a triangular operand is zero). kdim and k_begin are multiples of
// 16, NT even. Accumulator element i of tile (mt, nt) is at
// row m0 + 16 mt + lane/4 + 8 (i / 2), column n0 + 8 nt + 2 (lane % 4) + i % 2.
template <int MT, int NT, class OpA, class OpB>
__device__ __forceinline__ void warp_mma(float (&acc)[MT][NT][4], OpA a, OpB b, int m0, int n0, int kdim,
                                         int k_begin = 0) {
  static_assert(NT % 2 == 0, "B fragments come in pairs of 8-column tiles");
  using T = view_element<OpA>;
  static_assert(std::is_same_v<T, view_element<OpB>>, "both operands of one element type");
  if constexpr (k16Bit<T>) {
    uint32_t aa[MT], ba[NT / 2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) aa[mt] = a.a_addr(m0 + 16 * mt);
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) ba[np] = b.b_addr(n0 + 16 * np);
#pragma unroll 2
    for (int k0 = k_begin; k0 < kdim; k0 += 16) {
      uint32_t af[MT][4], bf[NT / 2][4];
      const uint32_t ka = k0 / 16 * a.k_step(), kb = k0 / 16 * b.k_step();
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        ldmatrix_x4<OpA::kTrans>(af[mt], aa[mt] + ka);
        a.scale_a(af[mt], k0);
      }
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) ldmatrix_x4<OpB::kTrans>(bf[np], ba[np] + kb);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
          mma_16bit<T>(acc[mt][nt], af[mt], bf[nt / 2][2 * (nt % 2)], bf[nt / 2][2 * (nt % 2) + 1]);
    }
  } else {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll 2
    for (int k0 = k_begin; k0 < kdim; k0 += 16) {
      uint32_t ah[MT][4], al[MT][4], bh[NT][2], bl[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int r = m0 + 16 * mt + g;
        split_bf16(a.pair(r, k0 + 2 * t), ah[mt][0], al[mt][0]);
        split_bf16(a.pair(r + 8, k0 + 2 * t), ah[mt][1], al[mt][1]);
        split_bf16(a.pair(r, k0 + 2 * t + 8), ah[mt][2], al[mt][2]);
        split_bf16(a.pair(r + 8, k0 + 2 * t + 8), ah[mt][3], al[mt][3]);
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int c = n0 + 8 * nt + g;
        split_bf16(b.pair(c, k0 + 2 * t), bh[nt][0], bl[nt][0]);
        split_bf16(b.pair(c, k0 + 2 * t + 8), bh[nt][1], bl[nt][1]);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          mma_bf16(acc[mt][nt], ah[mt], bh[nt][0], bh[nt][1]);
          mma_bf16(acc[mt][nt], ah[mt], bl[nt][0], bl[nt][1]);
          mma_bf16(acc[mt][nt], al[mt], bh[nt][0], bh[nt][1]);
        }
    }
  }
}

// The accumulator layout of two 8-column tiles is the A layout of one k step of mma.m16n8k16:
// register e of k step ks (columns 16ks..16ks+15) of a warp's 16 fp32 accumulator rows acc[0][..]
// holds this pair.
template <int NT>
__device__ __forceinline__ float2 acc_a_pair(const float (&acc)[1][NT][4], int ks, int e) {
  const float(&x)[4] = acc[0][2 * ks + (e >> 1)];
  return make_float2(x[2 * (e & 1)], x[2 * (e & 1) + 1]);
}
// k step ks of the rows as an A fragment in type T (mma.sync's, and wgmma's from registers).
template <class T, int NT>
__device__ __forceinline__ void acc_a_fragment(const float (&acc)[1][NT][4], int ks, uint32_t (&a)[4]) {
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float2 x = acc_a_pair(acc, ks, e);
    a[e] = pack2<T>(x.x, x.y);
  }
}

template <int MT, int NT>
__device__ __forceinline__ void zero(float (&acc)[MT][NT][4]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;
}

// Calls f(mt, nt, e, row, col) for every element [mt][nt][e] of a [MT][NT][4] accumulator
// tile at (m0, n0) that the lane holds: for loops that walk several accumulators at once.
template <int MT, int NT, class F>
__device__ __forceinline__ void for_each_index(int m0, int n0, F&& f) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) f(mt, nt, e, m0 + 16 * mt + g + 8 * (e >> 1), n0 + 8 * nt + 2 * t + (e & 1));
}

// Calls f(row, col, value&) for every accumulator element the lane holds.
template <int MT, int NT, class F>
__device__ __forceinline__ void for_each(float (&acc)[MT][NT][4], int m0, int n0, F&& f) {
  for_each_index<MT, NT>(m0, n0, [&](int mt, int nt, int e, int i, int j) { f(i, j, acc[mt][nt][e]); });
}

// Calls f(row, col, v0, v1) for every pair of adjacent accumulator elements (row, col),
// (row, col + 1) the lane holds (v0, v1 references where f takes them): for paired loads and stores.
template <int MT, int NT, class F>
__device__ __forceinline__ void for_each_pair(float (&acc)[MT][NT][4], int m0, int n0, F&& f) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        f(m0 + 16 * mt + g + 8 * h, n0 + 8 * nt + 2 * t, acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
}

// Stores the accumulators into a [*, ld] tile or tensor (shared or global), times `scale`.
template <int MT, int NT, class T>
__device__ __forceinline__ void store_acc(T* dst, long ld, float (&acc)[MT][NT][4], int m0, int n0, float scale = 1.f) {
  for_each_pair(acc, m0, n0, [&](int i, int j, float a, float b) { store2(dst + i * ld + j, scale * a, scale * b); });
}

// Stores f(i, acc) (i the row) into rows i < rows of a [*, stride] tensor (global memory) in whole
// sectors. 16-bit: the four lanes of a row exchange their pairs in butterfly rounds (lanes t ^ 1,
// then t ^ 2) until lane t holds the 8 columns of tile 4i + t (16-byte stores: each row's 32
// columns of four tiles leave as 64 contiguous bytes), or, for NT = 2 mod 4, after the first round
// 4 columns of tile 2i + t % 2 (8-byte stores: the row's 16 columns of two tiles, 32 bytes);
// store_acc's 4-byte stores fill half a 32-byte sector each. fp32: the pairs themselves (a row's 4
// lanes fill a sector).
template <int MT, int NT, class T, class F>
__device__ __forceinline__ void store_acc_rows(T* dst, long stride, const float (&acc)[MT][NT][4], int m0, int n0,
                                               F&& f, int rows = INT_MAX) {
  static_assert(NT % 2 == 0, "pairs of 8-column tiles");
  constexpr int kTiles = NT % 4 == 0 ? 4 : 2;  // the tiles whose row segment a quad stores at once
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const bool odd = t & 1, high = t & 2;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int n4 = 0; n4 < NT; n4 += kTiles) {
        const int i = m0 + 16 * mt + g + 8 * h;
        if constexpr (!k16Bit<T>) {
          if (i < rows) {
#pragma unroll
            for (int j = 0; j < kTiles; ++j)
              store2(dst + i * stride + n0 + 8 * (n4 + j) + 2 * t, f(i, acc[mt][n4 + j][2 * h]),
                     f(i, acc[mt][n4 + j][2 * h + 1]));
          }
        } else {
          uint32_t w[kTiles];  // columns 8j + 2t, 8j + 2t + 1 of tile n4 + j
#pragma unroll
          for (int j = 0; j < kTiles; ++j)
            w[j] = pack2<T>(f(i, acc[mt][n4 + j][2 * h]), f(i, acc[mt][n4 + j][2 * h + 1]));
          uint2 piece[kTiles / 2];  // columns 4 (t / 2) .. + 3 of tile n4 + 2k + t % 2
#pragma unroll
          for (int k = 0; k < kTiles / 2; ++k) {
            const uint32_t r = __shfl_xor_sync(0xffffffffu, odd ? w[2 * k] : w[2 * k + 1], 1);
            piece[k] = odd ? make_uint2(r, w[2 * k + 1]) : make_uint2(w[2 * k], r);
          }
          if constexpr (kTiles == 2) {
            if (i < rows)
              *reinterpret_cast<uint2*>(dst + i * stride + n0 + 8 * (n4 + odd) + 4 * (t / 2)) = piece[0];
          } else {
            const uint2 send = high ? piece[0] : piece[1];
            const uint2 r =
                make_uint2(__shfl_xor_sync(0xffffffffu, send.x, 2), __shfl_xor_sync(0xffffffffu, send.y, 2));
            const uint4 row8 = high ? make_uint4(r.x, r.y, piece[1].x, piece[1].y)
                                    : make_uint4(piece[0].x, piece[0].y, r.x, r.y);
            if (i < rows) *reinterpret_cast<uint4*>(dst + i * stride + n0 + 8 * (n4 + t)) = row8;
          }
        }
      }
}

// Within each quad of lanes (t = lane % 4), lane t's word k becomes lane k's word t: 16 bytes of a
// row as loaded (lane t: the 8 columns of 8-column tile t) into the pairs of an mma fragment
// (word k: columns 2t, 2t + 1 of tile k); store_acc_rows' butterfly run backwards.
__device__ __forceinline__ uint4 quad_transpose(uint4 a) {
  const int t = threadIdx.x & 3;
  const bool odd = t & 1, high = t & 2;
  uint2 r = high ? make_uint2(a.x, a.y) : make_uint2(a.z, a.w);  // lanes t ^ 2 swap half their words
  r = make_uint2(__shfl_xor_sync(0xffffffffu, r.x, 2), __shfl_xor_sync(0xffffffffu, r.y, 2));
  const uint4 c = high ? make_uint4(r.x, r.y, a.z, a.w) : make_uint4(a.x, a.y, r.x, r.y);
  r = odd ? make_uint2(c.x, c.z) : make_uint2(c.y, c.w);  // then lanes t ^ 1
  r = make_uint2(__shfl_xor_sync(0xffffffffu, r.x, 1), __shfl_xor_sync(0xffffffffu, r.y, 1));
  return odd ? make_uint4(r.x, c.y, r.y, c.w) : make_uint4(c.x, r.x, c.z, r.y);
}
// The same as the fragment's four 16-bit pairs in fp32: x[k] = columns 2t, 2t + 1 of tile k.
template <class T>
__device__ __forceinline__ void quad_row_pairs(uint4 a, float2 (&x)[4]) {
  static_assert(k16Bit<T>, "16-bit rows");
  const uint4 p = quad_transpose(a);
  const uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) x[k] = load2(reinterpret_cast<const T*>(&w[k]));
}

// Global -> shared copies of 16 bytes that bypass registers (cp.async), so that a thread
// has all of its loads in flight at once. commit_async() closes a group of copies;
// wait_async<N>() waits until at most N of the thread's groups are pending; a barrier after
// it publishes the copies to the block.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
}
// The same copying `bytes` (16 or 0) of src and zero-filling the rest: 0 writes 16 zero bytes and
// reads nothing (compute-sanitizer's memcheck finds no access for src past the tensor's end).
__device__ __forceinline__ void cp_async16_or_zero(void* dst, const void* src, unsigned bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void commit_async() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N = 0>
__device__ __forceinline__ void wait_async() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four consecutive elements as fp32.
template <class T>
__device__ __forceinline__ float4 load4(const T* p) {
  if constexpr (sizeof(T) == 4) {
    return *reinterpret_cast<const float4*>(p);
  } else {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    const float2 a = load2(reinterpret_cast<const T*>(&v.x)), b = load2(reinterpret_cast<const T*>(&v.y));
    return make_float4(a.x, a.y, b.x, b.y);
  }
}
__device__ __forceinline__ void store4(float* p, float4 x) { *reinterpret_cast<float4*>(p) = x; }
template <class T, std::enable_if_t<k16Bit<T>, int> = 0>
__device__ __forceinline__ void store4(T* p, float4 x) {
  *reinterpret_cast<uint2*>(p) = make_uint2(pack2<T>(x.x, x.y), pack2<T>(x.z, x.w));
}

// One row of 128 held by a warp (4 elements a lane) divided by sqrt(sum of squares + 1e-6), in
// fp32; returns the reciprocal norm.
__device__ __forceinline__ float l2_normalize(float4& x) {
  float ss = x.x * x.x + x.y * x.y + x.z * x.z + x.w * x.w;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  const float rn = rsqrtf(ss + 1e-6f);
  x.x *= rn, x.y *= rn, x.z *= rn, x.w *= rn;
  return rn;
}

// Loads rows [0, rows) of a [*, 128] tensor (row r at src + r * stride) into a [64][ld] tile,
// zero-filling rows [rows, 64). With `l2norm`, each row is divided by sqrt(sum of squares +
// 1e-6) in fp32. With `rnorm`, rnorm[r] gets that reciprocal norm for every r < 64 (1 without
// l2norm). 256 threads: warp w owns rows w, w + 8, ...; every load is issued before the first use.
template <class T, class S>
__device__ __forceinline__ void load_rows(T* dst, int ld, const S* src, long stride, int rows, bool l2norm,
                                          float* rnorm = nullptr) {
  constexpr int kRows = kChunk / 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float4 x[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int r = warp + 8 * i;
    x[i] = r < rows ? load4(src + r * stride + 4 * lane) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const float rn = l2norm ? l2_normalize(x[i]) : 1.f;
    if (rnorm && lane == 0) rnorm[warp + 8 * i] = rn;
    store4(dst + (warp + 8 * i) * ld + 4 * lane, x[i]);
  }
}

// One step of a reduce-scatter over the lanes of a warp: the first 2·kHalf values of v become kHalf,
// the lower half kept where bit `o` of the lane is 0, the upper half where it is 1, each summed with
// the partner lane's same entry (kHalf shuffles, where a butterfly per value takes 2·kHalf).
template <int kHalf, int N>
__device__ __forceinline__ void reduce_scatter_step(float (&v)[N], int o) {
  static_assert(2 * kHalf <= N, "v holds the values being halved");
  const bool upper = threadIdx.x & o;
#pragma unroll
  for (int e = 0; e < kHalf; ++e) {
    const float send = upper ? v[e] : v[e + kHalf];
    v[e] = (upper ? v[e + kHalf] : v[e]) + __shfl_xor_sync(0xffffffffu, send, o);
  }
}

// s[2 mt + half]: the lane's part of the sum of row m0 + 16 mt + g + 8 half of an accumulator tile.
// The totals over the 4 lanes of each row group, passed to emit(row, total) by one lane per row
// (distinct rows on the emitting lanes). A reduce-scatter over the quad: with two row tiles every
// lane emits one row, 3 shuffles and one emit (one atomic instruction) where a butterfly per row
// took 8 shuffles and 4 emits in sequence (shared-memory float atomics are compare-and-swap loops).
template <int MT, class E>
__device__ __forceinline__ void emit_quad_sums(float (&s)[2 * MT], int m0, E&& emit) {
  static_assert(MT == 1 || MT == 2, "one or two 16-row tiles");
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  if constexpr (MT == 2) {
    reduce_scatter_step<2>(s, 2);
    reduce_scatter_step<1>(s, 1);
    emit(m0 + 16 * (t >> 1) + g + 8 * (t & 1), s[0]);
  } else {
    reduce_scatter_step<1>(s, 2);
    s[0] += __shfl_xor_sync(0xffffffffu, s[0], 1);
    if ((t & 1) == 0) emit(m0 + g + 8 * (t >> 1), s[0]);
  }
}

// For every row the lane holds, the sum s of f(row, col, a, b) over the warp's pairs of adjacent
// elements (row, col), (row, col + 1) of the row (a, b their values; f returns the pair's part, so
// that it can read a pair of another tile at once), passed to emit(row, s) by one lane per row.
template <int MT, int NT, class F, class E>
__device__ __forceinline__ void for_row_sums(float (&acc)[MT][NT][4], int m0, int n0, F&& f, E&& emit) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  float s[2 * MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = m0 + 16 * mt + g + 8 * half;
      s[2 * mt + half] = 0.f;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
        s[2 * mt + half] += f(row, n0 + 8 * nt + 2 * t, acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]);
    }
  emit_quad_sums<MT>(s, m0, emit);
}
// Adds, for every row the lane holds, the sum of f(row, col, a, b) over its pairs to dst[row]
// (shared memory): one atomic instruction per warp.
template <int MT, int NT, class F>
__device__ __forceinline__ void add_row_sums(float (&acc)[MT][NT][4], int m0, int n0, float* dst, F&& f) {
  for_row_sums(acc, m0, n0, f, [&](int row, float s) { atomicAdd(dst + row, s); });
}

// Adds, for every column the lane holds, the sum of f(row, col, value) over its elements to
// dst[col] (shared memory). The 8 lanes of a column reduce by a reduce-scatter (7 shuffles for
// the lane's 8 columns, where a butterfly per column took 24), after which each lane holds one
// column's total: one atomic instruction per warp.
template <int MT, int NT, class F>
__device__ __forceinline__ void add_col_sums(float (&acc)[MT][NT][4], int m0, int n0, float* dst, F&& f) {
  static_assert(NT == 4, "8 columns a lane: one per lane of its column group after the reduce-scatter");
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  float s[2 * NT];  // s[2 nt + e]: column n0 + 8 nt + 2 t + e
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      s[2 * nt + e] = 0.f;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          s[2 * nt + e] += f(m0 + 16 * mt + g + 8 * half, n0 + 8 * nt + 2 * t + e, acc[mt][nt][2 * half + e]);
    }
  reduce_scatter_step<4>(s, 16);  // lane bits 4, 3, 2 (g's bits 2, 1, 0) pick the entry: entry g
  reduce_scatter_step<2>(s, 8);
  reduce_scatter_step<1>(s, 4);
  atomicAdd(dst + n0 + 8 * (g >> 1) + 2 * t + (g & 1), s[0]);
}

// The tile copies below run on blocks of kBlockThreads threads (as load_rows does).
// Thread t copies the 16-byte piece t % pieces of rows t / pieces + k · kBlockThreads / pieces
// (pieces = cols · sizeof(T) / 16, which divides kBlockThreads): with rows and cols constants at
// the inlined call the loop unrolls and each copy is the thread's base addresses plus immediates.
// A loop over i = t, t + blockDim.x, ... that derived the row and column from i took ~20 integer
// instructions per copy: 37% of the state pass's instructions (bench/gpu/NOTES.md, helper hlo).
constexpr int kBlockThreads = 256;
// Thread tid's share of a tile copy with rows of `cols` elements: the 16-byte piece at column c of
// rows r0, r0 + step, ...
template <class T>
struct TilePieces {
  int r0, c, step;
  __device__ __forceinline__ TilePieces(int cols, int tid) {
    constexpr int kVec = 16 / sizeof(T);
    const int pieces = cols / kVec;
    r0 = tid / pieces, c = kVec * (tid % pieces), step = kBlockThreads / pieces;
  }
};

// Starts copying a [rows, cols] block of a tensor (row stride `stride`) into a tile with
// row stride ld, by cp.async (wait_async() and a barrier before reading it).
// `tid`: the thread's index among the kBlockThreads that copy (a block of several such groups
// gives each its own copies).
template <class T>
__device__ __forceinline__ void load_tile(T* dst, int ld, const T* src, long stride, int rows, int cols,
                                          int tid = threadIdx.x) {
  const auto [r0, c, step] = TilePieces<T>(cols, tid);
  dst += r0 * ld + c;
  src += r0 * stride + c;
#pragma unroll 8
  for (int r = 0; r < rows; r += step)
    if (rows % step == 0 || r0 + r < rows) cp_async16(dst + r * ld, src + r * stride);
}
// load_tile of rows [0, rows) of a chunk's [64, cols] block, and rows [rows, 64) of the tile zeroed
// (plain stores, visible after the same wait and barrier): for tensors read past a sequence's
// end, whose tail rows meet zero rows of the other operand (0 · a stale NaN is NaN).
template <class T>
__device__ __forceinline__ void load_tile_zero_tail(T* dst, int ld, const T* src, long stride, int rows, int cols,
                                                    int tid = threadIdx.x) {
  load_tile(dst, ld, src, stride, rows, cols, tid);
  for (int i = tid; i < (kChunk - rows) * cols; i += kBlockThreads)
    dst[(rows + i / cols) * ld + i % cols] = from_float<T>(0.f);
}
// The same by cp.async's zero fill: every row's copy issued at a compile-time offset, the source
// advanced by a constant step, the tail rows' copies reading nothing. The loop to the runtime
// `rows` and the zeroing loop above take ~20 instructions a copy (with the shared-address
// conversion, ~20% of the state passes' instructions); this one a quarter of that, but with every
// copy unrolled it needs more registers. With it prepare, the state pass and intra_grad run 1–4%
// faster; the single pass v7 (at its 128-register cap) spilled and lost 8–13%, the vector gate's
// reverse state pass 4–7%, so that one keeps load_tile_zero_tail. The single pass on wgmma (184
// registers a state thread) copies v with it, 2% faster (bench/gpu/NOTES.md).
template <class T>
__device__ __forceinline__ void load_tile_zero_fill(T* dst, int ld, const T* src, long stride, int rows, int cols,
                                                    int tid = threadIdx.x) {
  const auto [r0, c, step] = TilePieces<T>(cols, tid);
  dst += r0 * ld + c;
  src += r0 * stride + c;
  const long jump = step * stride;
#pragma unroll
  for (int r = 0; r < kChunk; r += step, src += jump) cp_async16_or_zero(dst + r * ld, src, r0 + r < rows ? 16u : 0u);
}

// One row's L2 norm in place, the row held by a lane quarter c = 0..3 (the quarters' lanes q apart):
// at(i) points at the row's 4-element group c + 4i (i < 8). Returns 1 / ‖row‖.
template <class At>
__device__ __forceinline__ float normalize_quarter_row(At at, int q) {
  float4 x[8];
  float s[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    x[i] = load4(at(i));
    s[i] = x[i].x * x[i].x + x[i].y * x[i].y + x[i].z * x[i].z + x[i].w * x[i].w;
  }
  float ss = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
  ss += __shfl_xor_sync(0xffffffffu, ss, 2 * q);  // quarters 0 + 2, 1 + 3
  ss += __shfl_xor_sync(0xffffffffu, ss, q);
  const float rn = rsqrtf(ss + 1e-6f);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    x[i].x *= rn, x[i].y *= rn, x[i].z *= rn, x[i].w *= rn;
    store4(at(i), x[i]);
  }
  return rn;
}

// The L2 norm of load_rows in place, over a [64][ld] tile that cp.async filled (load_tile_zero_fill
// or load_tile_zero_tail): every copy in flight at once, where load_rows waits for each tensor's
// rows before the next.
// With `rnorm`, rnorm[r] gets each row's reciprocal norm. `warp`: the caller's index among the 8
// warps that share the rows (a block of several such groups gives each its own tile). Warp w takes
// rows 8w..8w+7 at once, 4 lanes a row: lane quarter c holds the 4-element groups c, c + 4, ..., and
// sums them in the tree of l2_normalize's butterfly (groups 16 apart, then 8, 4; then the lanes): the
// additions of load_rows in its order. A row a warp (l2_normalize) put 8 dependent rounds of 5
// shuffles on the single-pass forward's path (~3300 cycles a chunk).
template <class T>
__device__ __forceinline__ void normalize_rows(T* tile, int ld, float* rnorm = nullptr, int warp = threadIdx.x >> 5) {
  const int lane = threadIdx.x & 31, r = 8 * warp + lane / 4, c = lane % 4;
  T* row = tile + r * ld + 4 * c;
  const float rn = normalize_quarter_row([&](int i) { return row + 16 * i; }, 1);
  if (rnorm && c == 0) rnorm[r] = rn;
}
// normalize_rows where `l2norm`, else rnorm[r] = 1: load_rows' results for rows copied by cp.async.
template <class T>
__device__ __forceinline__ void normalize_rows_if(T* tile, int ld, bool l2norm, float* rnorm) {
  if (l2norm)
    normalize_rows(tile, ld, rnorm);
  else if (threadIdx.x < kChunk)
    rnorm[threadIdx.x] = 1.f;
}

// Stores a [rows, cols] tile (row stride ld) to a tensor, 16 bytes per access.
template <class T>
__device__ __forceinline__ void store_tile(T* dst, long stride, const T* src, int ld, int rows, int cols,
                                           int tid = threadIdx.x) {
  const auto [r0, c, step] = TilePieces<T>(cols, tid);
  dst += r0 * stride + c;
  src += r0 * ld + c;
#pragma unroll 8
  for (int r = 0; r < rows; r += step)
    if (rows % step == 0 || r0 + r < rows)
      *reinterpret_cast<uint4*>(dst + r * stride) = *reinterpret_cast<const uint4*>(src + r * ld);
}

}  // namespace gdn::cuda::detail
