// The vector gate (GLA, KDA) inside a chunk: per key dimension d, γ_id = Σ_{s ≤ i} g_sd, and the
// intra-chunk products carry e^{γ_id − γ_jd} inside the sum over d:
//   Z_ij = Σ_d x_id y_jd e^{γ_id − γ_jd}   (j ≤ i; P with x = q, y = k; N with x = y = k).
// Unlike the scalar gate's, this does not factor into a plain product times a 64×64 decay matrix,
// and forming x e^{γ} and y e^{−γ} overflows fp32 once a chunk's gates sum past −88. As FLA's
// chunk_gla / kda kernels do, the chunk is cut into four 16-token sub-chunks:
//   - below the diagonal blocks, a reference R = 16 I (the first row of sub-chunk I) makes both
//     factors ≤ 1: for i ≥ R > j, e^{γ_id − γ_jd} = e^{γ_id − γ_Rd} · e^{γ_Rd − γ_jd} (γ never rises),
//     so one tensor-core product per reference gives all of them, rounded as the scalar path's;
//   - a 16×16 diagonal block goes through its own first row b where its gates fall by at most
//     kDiagSpread from that row in every dimension concerned (40 over 15 steps: a log-decay of −2.6
//     a token on average): x e^{γ − γ_b} ≤ 1 and y e^{γ_b − γ} ≤ e^{kDiagSpread},
//     so the block is one more tensor-core product (16-bit: bf16 only, since fp16 overflows at e^11;
//     the backward stages its operands as bf16 hi + lo, two products, see gated_lower_backward);
//   - other diagonal blocks take one exponential per term, in fp32 (no reference keeps both factors
//     bounded inside a block whose gates may reach −30 per token).
// 256 threads per block throughout.
#pragma once

#include "tile.cuh"

namespace gdn::cuda::detail {

constexpr int kSub = 16;         // sub-chunk: the span of one reference point
constexpr int kLdG = kDim + 4;   // row stride of a gate tile [64][kLdG] fp32
constexpr float kDiagSpread = 40.f;  // e^40 ≈ 2.4e17: far from bf16's and fp32's overflow in a 16-term sum

// Whether the diagonal blocks of tiles of type T may go through their first row at all.
template <class T>
constexpr bool kDiagThroughFirstRow = !std::is_same_v<T, f16>;

// Dimension d of the diagonal block at rows b .. b + 15 allows it: its gates fall by at most
// kDiagSpread from row b (false for non-finite gates).
__device__ __forceinline__ bool diagonal_spread_ok(const float* gam, int b, int d) {
  return gam[b * kLdG + d] - gam[(b + kSub - 1) * kLdG + d] <= kDiagSpread;
}

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
  int through_first_row = 0;  // bit I: diagonal block I as a product (every thread agrees)
  if constexpr (kDiagThroughFirstRow<T>)
#pragma unroll
    for (int I = 0; I < kChunk / kSub; ++I)
      if (!__syncthreads_or(threadIdx.x < kDim && !diagonal_spread_ok(gam, kSub * I, threadIdx.x)))
        through_first_row |= 1 << I;
  // Diagonal blocks through their first row, two a pass: scratch rows 0..31 hold x e^{γ − γ_b} of
  // the pass's 32 rows, rows 32..63 y e^{γ_b − γ}; warp w < 2 forms block w of the pass.
#pragma unroll
  for (int pass = 0; pass < 2; ++pass) {
    const int r0 = 2 * kSub * pass;
    if (!((through_first_row >> (2 * pass)) & 3)) continue;
    __syncthreads();  // the previous pass's operands are read
    for (int e = threadIdx.x; e < 2 * kSub * (kDim / 2); e += blockDim.x) {
      const int r = e / (kDim / 2), d = 2 * (e % (kDim / 2)), b = r0 + (r & kSub);
      const float2 gr = load2(gam + (r0 + r) * kLdG + d), gb = load2(gam + b * kLdG + d);
      const float2 xr = load2(x + (r0 + r) * ld + d), yr = load2(y + (r0 + r) * ld + d);
      store2(scratch + r * ld + d, xr.x * __expf(gr.x - gb.x), xr.y * __expf(gr.y - gb.y));
      store2(scratch + (2 * kSub + r) * ld + d, yr.x * __expf(gb.x - gr.x), yr.y * __expf(gb.y - gr.y));
    }
    __syncthreads();
    if (warp < 2 && ((through_first_row >> (2 * pass + warp)) & 1)) {
      float acc[1][2][4];
      zero(acc);
      warp_mma(acc, row_major(scratch, ld), row_major(scratch + 2 * kSub * ld, ld), kSub * warp, kSub * warp, kDim);
      for_each(acc, kSub * warp, kSub * warp,
               [&](int i, int j, float v) { f(r0 + i, r0 + j, j < i || (diag && j == i) ? v : 0.f); });
    }
  }
  // The other diagonal blocks: warp w takes rows w, w + 8, ...; a lane 4 of the dimensions, its
  // partial sums of the row's 16 entries reduced over the warp at once (reduce-scatter: 16
  // shuffles, not 80).
  for (int i = warp; i < kChunk; i += 8) {
    if ((through_first_row >> (i / kSub)) & 1) continue;
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
// diagonal, 0 above it, and 0 on it where Z is strictly lower), added into the accumulators of
// the warp's 32×32 tile of the 64×128 gradients (warp_mma layout at m0 = 32 (warp % 2),
// n0 = 32 (warp / 2)):
//   dx_id += Σ_{j ≤ i} dZ_ij y_jd e^{γ_id − γ_jd},   dy_jd += Σ_{i ≥ j} dZ_ij x_id e^{γ_id − γ_jd},
//   dg_id += x_id Σ_{j < i} dZ_ij y_jd e^{γ_id − γ_jd} − y_id Σ_{i' > i} dZ_i'i x_i'd e^{γ_i'd − γ_id}
// (dg: the gradient of γ; the diagonal's terms cancel in it). dx and dy may be the same
// accumulators (x = y). Same reference scheme as gated_lower: per 16-row block I of the warp, the
// reference R = 16 I serves the rows of block I (against j < R) and those of block I − 1 (against
// i ≥ R). A diagonal block goes through its first row b where the warp's 32 dimensions allow it
// (diagonal_spread_ok): row_i = e^{γ_i − γ_b} Σ_m dZ_im (y_m e^{γ_b − γ_m}) and
// col_j = e^{γ_b − γ_j} Σ_m dZ_mj (x_m e^{γ_m − γ_b}), two 16×16 by 16×32 products over the warp's
// own part of scratch (no other warp's: no block barrier); otherwise element by element, each
// thread its own elements.
template <class T>
__device__ void gated_lower_backward(const T* dz, int ldz, const T* x, const T* y, int ld, const float* gam,
                                     T* scratch, float (&dx)[2][4][4], float (&dy)[2][4][4], float (&dg)[2][4][4]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g8 = lane >> 2, t4 = lane & 3;
  const int m0 = (warp % 2) * 32, n0 = (warp / 2) * 32;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    const int b = m0 + 16 * mt;
    if (kDiagThroughFirstRow<T> && __all_sync(0xffffffffu, diagonal_spread_ok(gam, b, n0 + lane))) {
      // The warp's 16 × 32 part of the block's rows in scratch: y (then x) scaled through row b. A
      // 16-bit tile holds it as hi + lo, hi at rows b.., lo at the warp's other 16 rows (block 1 − mt
      // is not staged meanwhile), so that the products keep fp32's precision in the operand as the
      // element path does: rounded once to bf16, it made KDA's and GLA's dg 2.4× what input rounding
      // moves them on a 70-token problem (bench/gpu/NOTES.md, twenty-third session).
      const int lo = m0 + kSub * (1 - mt);
      auto stage = [&](const T* src, bool rise) {
#pragma unroll
        for (int r = lane / 16; r < kSub; r += 2) {
          const int d = n0 + 2 * (lane % 16);
          const float2 v = load2(src + (b + r) * ld + d), gr = load2(gam + (b + r) * kLdG + d),
                       gb = load2(gam + b * kLdG + d);
          const float2 e = rise ? make_float2(gb.x - gr.x, gb.y - gr.y) : make_float2(gr.x - gb.x, gr.y - gb.y);
          const float sx = v.x * __expf(e.x), sy = v.y * __expf(e.y);
          store2(scratch + (b + r) * ld + d, sx, sy);
          if constexpr (k16Bit<T>) {  // lo = s − hi, hi read back as rounded
            const float2 h = load2(scratch + (b + r) * ld + d);
            store2(scratch + (lo + r) * ld + d, sx - h.x, sy - h.y);
          }
        }
        __syncwarp();
      };
      // acc += Σ_{m in the block} A(i, m) (hi + lo)_m, a_at(s) the view of A moved s along k (A = dZ
      // for the row product, dZᵀ for the column one). The lo rows lie 16 after b for mt = 0 (a view
      // of scratch 16 rows on) and 16 before it for mt = 1 (k runs over m0.. and A's view moves 16 on
      // along k instead), so that no view starts before its array.
      auto product = [&](float (&acc)[1][4][4], auto a_at) {
        warp_mma(acc, a_at(0), col_major(scratch, ld), b, n0, b + kSub, b);
        if constexpr (k16Bit<T>) {
          if (mt == 0)
            warp_mma(acc, a_at(0), col_major(scratch + kSub * ld, ld), b, n0, b + kSub, b);
          else
            warp_mma(acc, a_at(kSub), col_major(scratch, ld), b, n0, b, m0);
        }
      };
      auto dz_rows = [&](int s) { return row_major(dz + s, ldz); };
      auto dz_cols = [&](int s) { return col_major(dz + s * ldz, ldz); };
      float row[1][4][4], col[1][4][4];
      zero(row);
      zero(col);
      stage(y, true);
      product(row, dz_rows);
      __syncwarp();  // read before x goes over it
      stage(x, false);
      product(col, dz_cols);
      __syncwarp();  // read before block 1's staging goes over rows lo and b
      for_each_index<1, 4>(b, n0, [&](int, int nt, int e, int i, int d) {
        const float e_ib = gam[i * kLdG + d] - gam[b * kLdG + d];
        const float r = row[0][nt][e] * __expf(e_ib), c = col[0][nt][e] * __expf(-e_ib);
        dx[mt][nt][e] += r;
        dy[mt][nt][e] += c;
        dg[mt][nt][e] += to_float(x[i * ld + d]) * r - to_float(y[i * ld + d]) * c;
      });
      continue;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int i = b + g8 + 8 * h;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int d = n0 + 8 * nt + 2 * t4;
        const float2 xi = load2(x + i * ld + d), yi = load2(y + i * ld + d), gi = load2(gam + i * kLdG + d);
        float2 row = make_float2(0.f, 0.f), col = make_float2(0.f, 0.f);
        // One pass over the block's rows m, the same 16 for every lane: m < i adds to the row
        // term (dZ_im y_m e^{γ_i − γ_m}), m > i to the column term (dZ_mi x_m e^{γ_m − γ_i}).
#pragma unroll 4
        for (int m = b; m < b + kSub; ++m) {
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
