// Block-level building blocks of the CUDA kernels: tensor-core products of fp32 tiles in
// shared memory, loads of bf16/fp32 rows, the fused L2 norm.
//
// Every operand lives in shared memory as fp32 and is rounded to bf16 when it is fed to
// mma.sync.m16n8k16. Exact<true> splits each value into bf16 hi + lo and issues three
// products (hi·hi + hi·lo + lo·hi), which is ~1e-5 relative: the fp32-input path uses it so
// that the GPU can be checked against the fp64 reference at 1e-4.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace gdn::cuda::detail {

constexpr int kChunk = 64;   // tokens per chunk
constexpr int kDim = 128;    // K = V = 128 (head dimension)
constexpr int kPad = 4;      // smem row padding (floats): transposed fragment loads hit 32 banks
constexpr int kLd = kDim + kPad;       // row stride of a [*, 128] tile
constexpr int kLdC = kChunk + kPad;    // row stride of a [*, 64] tile

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Operand views. Element (r, k) of the product's operand, r the row of A (or the column of
// B), k the reduction index. RowMajorK: stored p[r * ld + k]; ColMajorK: stored p[k * ld + r].
struct RowMajorK {
  const float* p;
  int ld;
  __device__ __forceinline__ float2 pair(int r, int k) const {
    return *reinterpret_cast<const float2*>(p + r * ld + k);
  }
};
struct ColMajorK {
  const float* p;
  int ld;
  __device__ __forceinline__ float2 pair(int r, int k) const {
    return make_float2(p[k * ld + r], p[(k + 1) * ld + r]);
  }
};

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
// hi = bf16(x), lo = bf16(x - hi) for both halves of a pair.
__device__ __forceinline__ void split_bf16(float2 x, uint32_t& hi, uint32_t& lo) {
  __nv_bfloat162 h = __floats2bfloat162_rn(x.x, x.y);
  float2 hf = __bfloat1622float2(h);
  hi = *reinterpret_cast<uint32_t*>(&h);
  lo = pack_bf16(x.x - hf.x, x.y - hf.y);
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// One warp: acc[MT][NT] (16x8 tiles) += A[m0 : m0+16MT, 0:kdim] * B[0:kdim, n0 : n0+8NT].
// kdim is a multiple of 16. Accumulator element i of tile (mt, nt) is at
// row m0 + 16 mt + lane/4 + 8 (i / 2), column n0 + 8 nt + 2 (lane % 4) + i % 2.
template <bool Exact, int MT, int NT, class OpA, class OpB>
__device__ __forceinline__ void warp_mma(float (&acc)[MT][NT][4], OpA a, OpB b, int m0, int n0, int kdim) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll 2
  for (int k0 = 0; k0 < kdim; k0 += 16) {
    uint32_t ah[MT][4], al[MT][4], bh[NT][2], bl[NT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int r = m0 + 16 * mt + g;
      const float2 x0 = a.pair(r, k0 + 2 * t), x1 = a.pair(r + 8, k0 + 2 * t);
      const float2 x2 = a.pair(r, k0 + 2 * t + 8), x3 = a.pair(r + 8, k0 + 2 * t + 8);
      if constexpr (Exact) {
        split_bf16(x0, ah[mt][0], al[mt][0]);
        split_bf16(x1, ah[mt][1], al[mt][1]);
        split_bf16(x2, ah[mt][2], al[mt][2]);
        split_bf16(x3, ah[mt][3], al[mt][3]);
      } else {
        ah[mt][0] = pack_bf16(x0.x, x0.y);
        ah[mt][1] = pack_bf16(x1.x, x1.y);
        ah[mt][2] = pack_bf16(x2.x, x2.y);
        ah[mt][3] = pack_bf16(x3.x, x3.y);
      }
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int c = n0 + 8 * nt + g;
      const float2 y0 = b.pair(c, k0 + 2 * t), y1 = b.pair(c, k0 + 2 * t + 8);
      if constexpr (Exact) {
        split_bf16(y0, bh[nt][0], bl[nt][0]);
        split_bf16(y1, bh[nt][1], bl[nt][1]);
      } else {
        bh[nt][0] = pack_bf16(y0.x, y0.y);
        bh[nt][1] = pack_bf16(y1.x, y1.y);
      }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        mma_bf16(acc[mt][nt], ah[mt], bh[nt]);
        if constexpr (Exact) {
          mma_bf16(acc[mt][nt], ah[mt], bl[nt]);
          mma_bf16(acc[mt][nt], al[mt], bh[nt]);
        }
      }
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

// Calls f(row, col, value&) for every accumulator element the lane holds.
template <int MT, int NT, class F>
__device__ __forceinline__ void for_each(float (&acc)[MT][NT][4], int m0, int n0, F&& f) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        f(m0 + 16 * mt + g + 8 * (i >> 1), n0 + 8 * nt + 2 * t + (i & 1), acc[mt][nt][i]);
}

// Global -> shared copies of 16 bytes that bypass registers (cp.async), so that a thread
// has all of its loads in flight at once. wait_async() waits for the thread's copies; a
// barrier after it publishes them to the block.
__device__ __forceinline__ void cp_async16(float* dst, const float* src) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
}
__device__ __forceinline__ void wait_async() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// Four consecutive elements as fp32.
template <class T>
__device__ __forceinline__ float4 load4(const T* p) {
  if constexpr (sizeof(T) == 4) {
    return *reinterpret_cast<const float4*>(p);
  } else {
    uint2 v = *reinterpret_cast<const uint2*>(p);
    float2 a = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&v.x));
    float2 b = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&v.y));
    return make_float4(a.x, a.y, b.x, b.y);
  }
}

// Loads rows [0, rows) of a [*, 128] tensor (row r at src + r * stride) into a [64][kLd]
// fp32 tile, zero-filling rows [rows, 64). With `l2norm`, each row is divided by
// sqrt(sum of squares + 1e-6). 256 threads: warp w owns rows w, w + 8, ...; every load is
// issued before the first use.
template <class T>
__device__ __forceinline__ void load_rows(float* dst, const T* src, long stride, int rows, bool l2norm) {
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
    if (l2norm) {
      float ss = x[i].x * x[i].x + x[i].y * x[i].y + x[i].z * x[i].z + x[i].w * x[i].w;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
      const float rn = rsqrtf(ss + 1e-6f);
      x[i].x *= rn, x[i].y *= rn, x[i].z *= rn, x[i].w *= rn;
    }
    *reinterpret_cast<float4*>(dst + (warp + 8 * i) * kLd + 4 * lane) = x[i];
  }
}

// Loads rows [0, rows) and Cols columns of a bf16/fp32 tensor (row r at src + r * stride)
// into a [64][ld] fp32 tile, zero-filling rows [rows, 64). 256 threads.
template <int Cols, class T>
__device__ __forceinline__ void load_cols(float* dst, int ld, const T* src, long stride, int rows) {
  constexpr int kC4 = Cols / 4, kPer = kChunk * kC4 / 256;
  float4 x[kPer];
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const int i = threadIdx.x + 256 * e, r = i / kC4, c = 4 * (i % kC4);
    x[e] = r < rows ? load4(src + r * stride + c) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const int i = threadIdx.x + 256 * e, r = i / kC4, c = 4 * (i % kC4);
    *reinterpret_cast<float4*>(dst + r * ld + c) = x[e];
  }
}

// Adds, for every row the lane holds, the sum of f(row, col, value) over its elements to
// dst[row] (shared memory). The 4 lanes of a row group reduce first; one atomic per row.
template <int MT, int NT, class F>
__device__ __forceinline__ void add_row_sums(float (&acc)[MT][NT][4], int m0, int n0, float* dst, F&& f) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = m0 + 16 * mt + g + 8 * half;
      float s = 0.f;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) s += f(row, n0 + 8 * nt + 2 * t + e, acc[mt][nt][2 * half + e]);
      s += __shfl_xor_sync(0xffffffffu, s, 1);
      s += __shfl_xor_sync(0xffffffffu, s, 2);
      if (t == 0) atomicAdd(dst + row, s);
    }
}

// Starts copying an fp32 [rows, cols] block (row stride `stride`) into smem with row stride
// ld (cp.async: call wait_async() and a barrier before reading it).
__device__ __forceinline__ void load_f32(float* dst, int ld, const float* src, long stride, int rows, int cols) {
  const int c4 = cols / 4;
  for (int i = threadIdx.x; i < rows * c4; i += blockDim.x) {
    const int r = i / c4, c = 4 * (i % c4);
    cp_async16(dst + r * ld + c, src + r * stride + c);
  }
}
__device__ __forceinline__ void store_f32(float* dst, long stride, const float* src, int ld, int rows, int cols) {
  const int c4 = cols / 4;
  for (int i = threadIdx.x; i < rows * c4; i += blockDim.x) {
    const int r = i / c4, c = 4 * (i % c4);
    *reinterpret_cast<float4*>(dst + r * stride + c) = *reinterpret_cast<const float4*>(src + r * ld + c);
  }
}

}  // namespace gdn::cuda::detail
