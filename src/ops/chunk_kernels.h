// Small dense kernels of the chunkwise form (fp32, AVX2 + FMA): a register-blocked matrix
// product for the chunk-sized operands (C x K, K x V, C x C, all L1/L2 resident), a
// vectorised exp, transposes. The chunk form calls these from inside its own OpenMP
// regions, where a threaded BLAS would oversubscribe; on these sizes they also beat
// OpenBLAS's per-call packing (measured by the timing harness in tests/test_chunk.cpp).
#pragma once

#include <cstddef>

namespace gdn::detail::chunk {

// Zero structure of op(A) that the product may skip. Entries outside the triangle must
// be zero in memory (the skip works on 6-row blocks, so some of them are still read).
enum class Tri {
  full,
  lower,  // op(A)(i, p) == 0 for p > i
  upper,  // op(A)(i, p) == 0 for p < i
};

// C = alpha * op(A) * B, or C += alpha * op(A) * B when `accumulate`.
// op(A) is m x k: A row-major with leading dimension lda, or its transpose when `trans_a`
// (element (i, p) at a[p * lda + i]). B is k x n row-major (ldb), C is m x n row-major (ldc).
// With `lower_c`, column blocks of C entirely above the diagonal are left unwritten.
void gemm(int m, int n, int k, float alpha, const float* a, std::ptrdiff_t lda, bool trans_a,
          const float* b, std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc, bool accumulate,
          Tri tri = Tri::full, bool lower_c = false);

// dst[j * ld_dst + i] = src[i * ld_src + j] for i < rows, j < cols.
void transpose(int rows, int cols, const float* src, std::ptrdiff_t ld_src, float* dst,
               std::ptrdiff_t ld_dst);

// y[i] = exp(x[i]); exact to a few ulp, 0 below -87.3 (no denormals), x must be <= 88.
void exp_array(int n, const float* x, float* y);

// y[i] = x[i] * exp(a[i] - b[i]) over n elements (the gated operands of the chunk form).
void mul_exp_diff(int n, const float* x, const float* a, const float* b, float* y);

// sum_i x[i] * y[i] * exp(a[i] - b[i])
float dot_exp_diff(int n, const float* x, const float* y, const float* a, const float* b);

// x[i] += s * y[i] * exp(a[i] - b[i])
void axpy_exp_diff(int n, float s, const float* y, const float* a, const float* b, float* x);

// One pair (i, j <= i) of the vector-gated products' backward, e = exp(gam_i - gam_j):
// dq_i += sp k_j e;  dk_j += (sp q_i + sn k_i) e;  dk_i += sn k_j e;  and when `cross` is
// given, cross += (sp q_i + sn k_i) k_j e (the pair's d gamma_i, summed over boundaries).
void gated_pair_backward(int n, float sp, float sn, const float* q_i, const float* k_i, const float* k_j,
                         const float* gam_i, const float* gam_j, float* dq_i, float* dk_i, float* dk_j,
                         float* cross);

// y[i] += x[i]
void add(int n, const float* x, float* y);
// y[i] += a * x[i]
void axpy(int n, float a, const float* x, float* y);
// sum_i x[i] * y[i]
float dot(int n, const float* x, const float* y);

}  // namespace gdn::detail::chunk
