// Row-major GEMM on OpenBLAS for float and double. Call it outside OpenMP regions: the
// Debian OpenBLAS is the pthread build and would oversubscribe inside one.
#pragma once

#include <cblas.h>

#include "gdn/nn/profile.h"

namespace gdn::nn {

// C[m,n] = alpha * op(A) op(B) + beta * C, op(X) = X or X^T, all row-major.
inline void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  ProfileScope scope(profile().gemm_ns);
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  ProfileScope scope(profile().gemm_ns);
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace gdn::nn
