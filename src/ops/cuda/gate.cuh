// The vector gate (GLA, KDA) inside a chunk: per key dimension d, γ_id = Σ_{s ≤ i} g_sd, and the
// intra-chunk products carry e^{γ_id − γ_jd} inside the sum over d:
//   Z_ij = Σ_d x_id y_jd e^{γ_id − γ_jd}   (j ≤ i; P with x = q, y = k; N with x = y = k).
// Unlike the scalar gate's, this does not factor into a plain product times a 64×64 decay matrix,
// and forming x e^{γ} and y e^{−γ} overflows fp32 once a chunk's gates sum past −88. As FLA's
// chunk_gla / kda kernels do, the chunk is cut into four 16-token sub-chunks:
//   - below the diagonal blocks, a reference R = 16 I (the first row of sub-chunk I) makes both
//     factors ≤ 1: for i ≥ R > j, e^{γ_id − γ_jd} = e^{γ_id − γ_Rd} · e^{γ_Rd − γ_jd} (γ never rises),
//     so one tensor-core product per reference gives all of them, rounded as the scalar path's;
//   - the four 16×16 diagonal blocks take one exponential per term, in fp32 (no reference keeps
//     both factors bounded inside a block whose gates may reach −30 per token).
// 256 threads per block throughout.
#pragma once

#include "tile.cuh"

namespace gdn::cuda::detail {

constexpr int kSub = 16;         // sub-chunk: the span of one reference point
constexpr int kLdG = kDim + 4;   // row stride of a gate tile [64][kLdG] fp32

// Inclusive cumulative sum over the chunk's rows of g [.., HV, 128] (row r at token start + r)
// into gam [64][kLdG]; rows ≥ len repeat row len − 1 (g taken as 0 there). Thread t sums
// column t % 128 over rows 32 (t / 128) .. + 31, all loads issued first; the second half then
// adds the first's total. Starts and ends with the block in step (two barriers).
__device__ inline void load_gate_vec(float* gam, const float* g, int start, int len, int HV, int hv) {
  const int d = threadIdx.x % kDim, r0 = 32 * (threadIdx.x / kDim);
  float x[32];
#pragma unroll
  for (int r = 0; r < 32; ++r) x[r] = r0 + r < len ? g[(long(start + r0 + r) * HV + hv) * kDim + d] : 0.f;
  float s = 0.f;
#pragma unroll
  for (int r = 0; r < 32; ++r) {
    s += x[r];
    gam[(r0 + r) * kLdG + d] = s;
  }
  __syncthreads();
  if (r0 > 0) {
    const float base = gam[(r0 - 1) * kLdG + d];
#pragma unroll
    for (int r = 0; r < 32; ++r) gam[(r0 + r) * kLdG + d] += base;
  }
  __syncthreads();
}

// The operands of reference R in scratch ([64][ld], T): rows r < R hold y_r e^{γ_R − γ_r}, rows
// R ≤ r < rows hold x_r e^{γ_r − γ_R}; every factor ≤ 1.
template <class T>
__device__ __forceinline__ void build_reference_tile(T* scratch, const T* x, const T* y, int ld, const float* gam,
                                                     int R, int rows) {
  for (int e = threadIdx.x; e < rows * (kDim / 2); e += blockDim.x) {
    const int r = e / (kDim / 2), d = 2 * (e % (kDim / 2));
    const float2 gr = load2(gam + R * kLdG + d), gx = load2(gam + r * kLdG + d);
    const bool below = r < R;
    const float2 v = load2((below ? y : x) + r * ld + d);
    const float f0 = __expf(below ? gr.x - gx.x : gx.x - gr.x), f1 = __expf(below ? gr.y - gx.y : gx.y - gr.y);
    store2(scratch + r * ld + d, v.x * f0, v.y * f1);
  }
}

// Calls f(i, j, Z_ij) for every i, j < 64: Z as above for j < i (and j == i with `diag`), 0
// elsewhere. x, y: [64][ld] tiles, gam: [64][kLdG], scratch: [64][ld] (overwritten). The
// caller makes x, y, gam visible first and syncs before reading what f wrote; f runs once per
// element, from one thread.
template <class T, class F>
__device__ void gated_lower(const T* x, const T* y, int ld, const float* gam, T* scratch, bool diag, F&& f) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int e = threadIdx.x; e < kChunk * kChunk; e += blockDim.x) {
    const int i = e / kChunk, j = e % kChunk;
    if (j / kSub > i / kSub) f(i, j, 0.f);
  }
  // Diagonal blocks: warp w takes rows w, w + 8, ...; a lane 4 of the dimensions, its partial sums
  // of the row's 16 entries reduced over the warp at once (reduce-scatter: 16 shuffles, not 80).
  for (int i = warp; i < kChunk; i += 8) {
    const float4 xi = load4(x + i * ld + 4 * lane), gi = load4(gam + i * kLdG + 4 * lane);
    const int b0 = i & ~(kSub - 1);
    float v[kSub];
#pragma unroll
    for (int jj = 0; jj < kSub; ++jj) {
      const int j = b0 + jj;
      const float4 yj = load4(y + j * ld + 4 * lane), gj = load4(gam + j * kLdG + 4 * lane);
      const float s = xi.x * yj.x * __expf(gi.x - gj.x) + xi.y * yj.y * __expf(gi.y - gj.y) +
                      xi.z * yj.z * __expf(gi.z - gj.z) + xi.w * yj.w * __expf(gi.w - gj.w);
      v[jj] = j < i || (diag && j == i) ? s : 0.f;  // a select: above the diagonal s may be inf
    }
    reduce_scatter_step<8>(v, 16);
    reduce_scatter_step<4>(v, 8);
    reduce_scatter_step<2>(v, 4);
    reduce_scatter_step<1>(v, 2);
    v[0] += __shfl_xor_sync(0xffffffffu, v[0], 1);
    const int jj = (lane & 16 ? 8 : 0) + (lane & 8 ? 4 : 0) + (lane & 4 ? 2 : 0) + (lane & 2 ? 1 : 0);
    if ((lane & 1) == 0) f(i, b0 + jj, v[0]);
  }
  // Below the diagonal blocks: rows of sub-chunk R / 16 against all earlier rows, per reference.
  for (int R = kSub; R < kChunk; R += kSub) {
    __syncthreads();  // the previous reference's operands are read
    build_reference_tile(scratch, x, y, ld, gam, R, R + kSub);
    __syncthreads();
    if (warp < R / kSub) {
      float acc[1][2][4];
      zero(acc);
      warp_mma(acc, row_major(scratch, ld), row_major(scratch, ld), R, kSub * warp, kDim);
      for_each(acc, R, kSub * warp, [&](int i, int j, float v) { f(i, j, v); });
    }
  }
}

// The gradient through Z = gated_lower(x, y) given dZ (dz, [64][ldz]; read on and below the
// diagonal, which must hold 0 where Z is strictly lower), added into the accumulators of the
// warp's 32×32 tile of the 64×128 gradients (warp_mma layout at m0 = 32 (warp % 2),
// n0 = 32 (warp / 2)):
//   dx_id += Σ_{j ≤ i} dZ_ij y_jd e^{γ_id − γ_jd},   dy_jd += Σ_{i ≥ j} dZ_ij x_id e^{γ_id − γ_jd},
//   dg_id += x_id Σ_{j < i} dZ_ij y_jd e^{γ_id − γ_jd} − y_id Σ_{i' > i} dZ_i'i x_i'd e^{γ_i'd − γ_id}
// (dg: the gradient of γ; the diagonal's terms cancel in it and are left out). dx and dy may be
// the same accumulators (x = y). Same reference scheme as gated_lower: per 16-row block I of the
// warp, the reference R = 16 I serves the rows of block I (against j < R) and those of block
// I − 1 (against i ≥ R); the diagonal blocks go element by element, each thread its own elements.
template <class T>
__device__ void gated_lower_backward(const T* dz, int ldz, const T* x, const T* y, int ld, const float* gam,
                                     T* scratch, float (&dx)[2][4][4], float (&dy)[2][4][4], float (&dg)[2][4][4]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g8 = lane >> 2, t4 = lane & 3;
  const int m0 = (warp % 2) * 32, n0 = (warp / 2) * 32;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int i = m0 + 16 * mt + g8 + 8 * h, b0 = i & ~(kSub - 1);
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int d = n0 + 8 * nt + 2 * t4;
        const float2 xi = load2(x + i * ld + d), yi = load2(y + i * ld + d), gi = load2(gam + i * kLdG + d);
        float2 row = make_float2(0.f, 0.f), col = make_float2(0.f, 0.f);
        // One pass over the block's rows m, the same 16 for every lane: m < i adds to the row
        // term (dZ_im y_m e^{γ_i − γ_m}), m > i to the column term (dZ_mi x_m e^{γ_m − γ_i}).
#pragma unroll 4
        for (int m = b0; m < b0 + kSub; ++m) {
          const bool before = m < i;
          const float z = m == i ? 0.f : to_float(before ? dz[i * ldz + m] : dz[m * ldz + i]);
          const float2 pm = load2((before ? y : x) + m * ld + d), gm = load2(gam + m * kLdG + d);
          const float tx = z * pm.x * __expf(before ? gi.x - gm.x : gm.x - gi.x);
          const float ty = z * pm.y * __expf(before ? gi.y - gm.y : gm.y - gi.y);
          row.x += before ? tx : 0.f, row.y += before ? ty : 0.f;
          col.x += before ? 0.f : tx, col.y += before ? 0.f : ty;
        }
        const float zii = to_float(dz[i * ldz + i]);
        dx[mt][nt][2 * h] += row.x + zii * yi.x;
        dx[mt][nt][2 * h + 1] += row.y + zii * yi.y;
        dy[mt][nt][2 * h] += col.x + zii * xi.x;
        dy[mt][nt][2 * h + 1] += col.y + zii * xi.y;
        dg[mt][nt][2 * h] += xi.x * row.x - yi.x * col.x;
        dg[mt][nt][2 * h + 1] += xi.y * row.y - yi.y * col.y;
      }
    }
#pragma unroll
  for (int I = 1; I < 4; ++I) {
    const int R = kSub * I;
    __syncthreads();  // the previous reference's operands (or the caller's last use of scratch) are done
    build_reference_tile(scratch, x, y, ld, gam, R, kChunk);
    __syncthreads();
    if ((warp & 1) == I / 2) {  // rows of block I: (Σ_{j<R} dZ_ij ỹ_j) e^{γ_i − γ_R}
      float acc[1][4][4];
      zero(acc);
      warp_mma(acc, row_major(dz, ldz), col_major(scratch, ld), R, n0, R);
      for_each_index<1, 4>(R, n0, [&](int, int nt, int e, int i, int d) {
        const float v = acc[0][nt][e] * __expf(gam[i * kLdG + d] - gam[R * kLdG + d]);
        dx[I % 2][nt][e] += v;
        dg[I % 2][nt][e] += to_float(x[i * ld + d]) * v;
      });
    }
    if ((warp & 1) == (I - 1) / 2) {  // rows of block I − 1: (Σ_{i≥R} dZ_ij x̃_i) e^{γ_R − γ_j}
      float acc[1][4][4];
      zero(acc);
      warp_mma(acc, col_major(dz + R * ldz, ldz), col_major(scratch + R * ld, ld), R - kSub, n0, kChunk - R);
      for_each_index<1, 4>(R - kSub, n0, [&](int, int nt, int e, int j, int d) {
        const float v = acc[0][nt][e] * __expf(gam[R * kLdG + d] - gam[j * kLdG + d]);
        dy[(I - 1) % 2][nt][e] += v;
        dg[(I - 1) % 2][nt][e] -= to_float(y[j * ld + d]) * v;
      });
    }
  }
}

}  // namespace gdn::cuda::detail
