#include "ops/chunk_kernels.h"

#include <immintrin.h>

#include <algorithm>

namespace gdn::detail::chunk {
namespace {

constexpr int kMR = 6;   // rows of C per register block
constexpr int kNR = 16;  // columns of C per register block (two 8-float vectors)

inline __m256i tail_mask(int lanes) {  // first `lanes` (may be <= 0 or >= 8) lanes on
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), idx);
}

// One MR x 16 block of C over p in [p0, p1). A(i, p) = a[i * rs + p * cs] with the
// strides fixed by kTrans so the compiler sees unit steps. kFull: all 16 columns valid.
// The accumulators are named variables: GCC spills an array of vectors to the stack on
// every iteration.
template <int MR, bool kTrans, bool kFull>
inline void block(int p0, int p1, const float* a, std::ptrdiff_t lda, const float* b,
                  std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc, __m256 alpha, bool accumulate,
                  __m256i m0, __m256i m1) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const std::ptrdiff_t rs = kTrans ? 1 : lda, cs = kTrans ? lda : 1;
  const float* ap = a + p0 * cs;
  const float* bp = b + p0 * ldb;
  for (int p = p0; p < p1; ++p, ap += cs, bp += ldb) {
    const __m256 b0 = kFull ? _mm256_loadu_ps(bp) : _mm256_maskload_ps(bp, m0);
    const __m256 b1 = kFull ? _mm256_loadu_ps(bp + 8) : _mm256_maskload_ps(bp + 8, m1);
    __m256 av = _mm256_broadcast_ss(ap);
    c00 = _mm256_fmadd_ps(av, b0, c00), c01 = _mm256_fmadd_ps(av, b1, c01);
    if constexpr (MR > 1) {
      av = _mm256_broadcast_ss(ap + rs);
      c10 = _mm256_fmadd_ps(av, b0, c10), c11 = _mm256_fmadd_ps(av, b1, c11);
    }
    if constexpr (MR > 2) {
      av = _mm256_broadcast_ss(ap + 2 * rs);
      c20 = _mm256_fmadd_ps(av, b0, c20), c21 = _mm256_fmadd_ps(av, b1, c21);
    }
    if constexpr (MR > 3) {
      av = _mm256_broadcast_ss(ap + 3 * rs);
      c30 = _mm256_fmadd_ps(av, b0, c30), c31 = _mm256_fmadd_ps(av, b1, c31);
    }
    if constexpr (MR > 4) {
      av = _mm256_broadcast_ss(ap + 4 * rs);
      c40 = _mm256_fmadd_ps(av, b0, c40), c41 = _mm256_fmadd_ps(av, b1, c41);
    }
    if constexpr (MR > 5) {
      av = _mm256_broadcast_ss(ap + 5 * rs);
      c50 = _mm256_fmadd_ps(av, b0, c50), c51 = _mm256_fmadd_ps(av, b1, c51);
    }
  }
  auto store = [&](float* cr, __m256 v0, __m256 v1) {
    v0 = _mm256_mul_ps(alpha, v0), v1 = _mm256_mul_ps(alpha, v1);
    if (kFull) {
      if (accumulate) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cr));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, v0);
      _mm256_storeu_ps(cr + 8, v1);
    } else {
      if (accumulate) {
        v0 = _mm256_add_ps(v0, _mm256_maskload_ps(cr, m0));
        v1 = _mm256_add_ps(v1, _mm256_maskload_ps(cr + 8, m1));
      }
      _mm256_maskstore_ps(cr, m0, v0);
      _mm256_maskstore_ps(cr + 8, m1, v1);
    }
  };
  store(c, c00, c01);
  if constexpr (MR > 1) store(c + ldc, c10, c11);
  if constexpr (MR > 2) store(c + 2 * ldc, c20, c21);
  if constexpr (MR > 3) store(c + 3 * ldc, c30, c31);
  if constexpr (MR > 4) store(c + 4 * ldc, c40, c41);
  if constexpr (MR > 5) store(c + 5 * ldc, c50, c51);
}

template <bool kTrans, bool kFull>
inline void block_rows(int mr, int p0, int p1, const float* a, std::ptrdiff_t lda, const float* b,
                       std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc, __m256 alpha,
                       bool accumulate, __m256i m0, __m256i m1) {
  switch (mr) {
    case 6: return block<6, kTrans, kFull>(p0, p1, a, lda, b, ldb, c, ldc, alpha, accumulate, m0, m1);
    case 5: return block<5, kTrans, kFull>(p0, p1, a, lda, b, ldb, c, ldc, alpha, accumulate, m0, m1);
    case 4: return block<4, kTrans, kFull>(p0, p1, a, lda, b, ldb, c, ldc, alpha, accumulate, m0, m1);
    case 3: return block<3, kTrans, kFull>(p0, p1, a, lda, b, ldb, c, ldc, alpha, accumulate, m0, m1);
    case 2: return block<2, kTrans, kFull>(p0, p1, a, lda, b, ldb, c, ldc, alpha, accumulate, m0, m1);
    default: return block<1, kTrans, kFull>(p0, p1, a, lda, b, ldb, c, ldc, alpha, accumulate, m0, m1);
  }
}

template <bool kTrans>
void gemm_impl(int m, int n, int k, float alpha, const float* a, std::ptrdiff_t lda,
               const float* b, std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc, bool accumulate,
               Tri tri, bool lower_c) {
  const __m256 valpha = _mm256_set1_ps(alpha);
  for (int j0 = 0; j0 < n; j0 += kNR) {
    const int nr = std::min(kNR, n - j0);
    const __m256i m0 = tail_mask(nr), m1 = tail_mask(nr - 8);
    for (int i0 = 0; i0 < m; i0 += kMR) {
      const int mr = std::min(kMR, m - i0);
      if (lower_c && j0 > i0 + mr - 1) continue;
      int p0 = 0, p1 = k;
      if (tri == Tri::lower) p1 = std::min(k, i0 + mr);
      if (tri == Tri::upper) p0 = std::min(k, i0);
      const float* ab = kTrans ? a + i0 : a + i0 * lda;
      float* cb = c + i0 * ldc + j0;
      if (nr == kNR)
        block_rows<kTrans, true>(mr, p0, p1, ab, lda, b + j0, ldb, cb, ldc, valpha, accumulate, m0, m1);
      else
        block_rows<kTrans, false>(mr, p0, p1, ab, lda, b + j0, ldb, cb, ldc, valpha, accumulate, m0, m1);
    }
  }
}

// exp for x <= 88: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, and Cephes' degree-7
// polynomial for exp(r); 2^n built in the exponent bits. Results below 2^-126 become 0.
inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654f);
  const __m256 tiny = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(tiny, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

inline __m256 load_n(const float* p, int i, int n) {
  return i + 8 <= n ? _mm256_loadu_ps(p + i) : _mm256_maskload_ps(p + i, tail_mask(n - i));
}
inline void store_n(float* p, int i, int n, __m256 v) {
  if (i + 8 <= n) _mm256_storeu_ps(p + i, v);
  else _mm256_maskstore_ps(p + i, tail_mask(n - i), v);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace

void gemm(int m, int n, int k, float alpha, const float* a, std::ptrdiff_t lda, bool trans_a,
          const float* b, std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc, bool accumulate,
          Tri tri, bool lower_c) {
  if (m <= 0 || n <= 0) return;
  if (trans_a)
    gemm_impl<true>(m, n, k, alpha, a, lda, b, ldb, c, ldc, accumulate, tri, lower_c);
  else
    gemm_impl<false>(m, n, k, alpha, a, lda, b, ldb, c, ldc, accumulate, tri, lower_c);
}

namespace {
// 8 x 8 tile: dst rows j = src columns j.
inline void transpose8x8(const float* src, std::ptrdiff_t ls, float* dst, std::ptrdiff_t ld) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ls), r2 = _mm256_loadu_ps(src + 2 * ls),
         r3 = _mm256_loadu_ps(src + 3 * ls), r4 = _mm256_loadu_ps(src + 4 * ls), r5 = _mm256_loadu_ps(src + 5 * ls),
         r6 = _mm256_loadu_ps(src + 6 * ls), r7 = _mm256_loadu_ps(src + 7 * ls);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
               t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
               t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  r0 = _mm256_shuffle_ps(t0, t2, 0x44), r1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  r2 = _mm256_shuffle_ps(t1, t3, 0x44), r3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  r4 = _mm256_shuffle_ps(t4, t6, 0x44), r5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  r6 = _mm256_shuffle_ps(t5, t7, 0x44), r7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(r0, r4, 0x20));
  _mm256_storeu_ps(dst + ld, _mm256_permute2f128_ps(r1, r5, 0x20));
  _mm256_storeu_ps(dst + 2 * ld, _mm256_permute2f128_ps(r2, r6, 0x20));
  _mm256_storeu_ps(dst + 3 * ld, _mm256_permute2f128_ps(r3, r7, 0x20));
  _mm256_storeu_ps(dst + 4 * ld, _mm256_permute2f128_ps(r0, r4, 0x31));
  _mm256_storeu_ps(dst + 5 * ld, _mm256_permute2f128_ps(r1, r5, 0x31));
  _mm256_storeu_ps(dst + 6 * ld, _mm256_permute2f128_ps(r2, r6, 0x31));
  _mm256_storeu_ps(dst + 7 * ld, _mm256_permute2f128_ps(r3, r7, 0x31));
}
}  // namespace

void transpose(int rows, int cols, const float* src, std::ptrdiff_t ld_src, float* dst,
               std::ptrdiff_t ld_dst) {
  const int r8 = rows & ~7, c8 = cols & ~7;
  for (int i = 0; i < r8; i += 8)
    for (int j = 0; j < c8; j += 8) transpose8x8(src + i * ld_src + j, ld_src, dst + j * ld_dst + i, ld_dst);
  for (int i = 0; i < rows; ++i)
    for (int j = i < r8 ? c8 : 0; j < cols; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
}

void exp_array(int n, const float* x, float* y) {
  for (int i = 0; i < n; i += 8) store_n(y, i, n, exp8(load_n(x, i, n)));
}

void mul_exp_diff(int n, const float* x, const float* a, const float* b, float* y) {
  for (int i = 0; i < n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(load_n(a, i, n), load_n(b, i, n)));
    store_n(y, i, n, _mm256_mul_ps(load_n(x, i, n), e));
  }
}

float dot_exp_diff(int n, const float* x, const float* y, const float* a, const float* b) {
  __m256 acc = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(load_n(a, i, n), load_n(b, i, n)));
    acc = _mm256_fmadd_ps(_mm256_mul_ps(load_n(x, i, n), load_n(y, i, n)), e, acc);
  }
  return hsum(acc);
}

void axpy_exp_diff(int n, float s, const float* y, const float* a, const float* b, float* x) {
  const __m256 vs = _mm256_set1_ps(s);
  for (int i = 0; i < n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(load_n(a, i, n), load_n(b, i, n)));
    store_n(x, i, n, _mm256_fmadd_ps(_mm256_mul_ps(vs, load_n(y, i, n)), e, load_n(x, i, n)));
  }
}

void gated_pair_backward(int n, float sp, float sn, const float* q_i, const float* k_i, const float* k_j,
                         const float* gam_i, const float* gam_j, float* dq_i, float* dk_i, float* dk_j,
                         float* cross) {
  const __m256 vsp = _mm256_set1_ps(sp), vsn = _mm256_set1_ps(sn);
  for (int d = 0; d < n; d += 8) {
    const __m256 e = exp8(_mm256_sub_ps(load_n(gam_i, d, n), load_n(gam_j, d, n)));
    const __m256 kje = _mm256_mul_ps(load_n(k_j, d, n), e);
    const __m256 ki = load_n(k_i, d, n);
    const __m256 src = _mm256_fmadd_ps(vsp, load_n(q_i, d, n), _mm256_mul_ps(vsn, ki));  // sp q_i + sn k_i
    store_n(dq_i, d, n, _mm256_fmadd_ps(vsp, kje, load_n(dq_i, d, n)));
    store_n(dk_i, d, n, _mm256_fmadd_ps(vsn, kje, load_n(dk_i, d, n)));
    store_n(dk_j, d, n, _mm256_fmadd_ps(src, e, load_n(dk_j, d, n)));
    if (cross) store_n(cross, d, n, _mm256_fmadd_ps(src, kje, load_n(cross, d, n)));
  }
}

void add(int n, const float* x, float* y) {
  for (int i = 0; i < n; i += 8) store_n(y, i, n, _mm256_add_ps(load_n(x, i, n), load_n(y, i, n)));
}

void axpy(int n, float a, const float* x, float* y) {
  const __m256 va = _mm256_set1_ps(a);
  for (int i = 0; i < n; i += 8) store_n(y, i, n, _mm256_fmadd_ps(va, load_n(x, i, n), load_n(y, i, n)));
}

float dot(int n, const float* x, const float* y) {
  __m256 acc = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(load_n(x, i, n), load_n(y, i, n), acc);
  return hsum(acc);
}

}  // namespace gdn::detail::chunk
