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
  if (m == 1) {  // one row (a decode step): a matrix-vector product, without packing B
    cblas_sgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? n : k, tb ? k : n, alpha, B, ldb, A,
                ta ? lda : 1, beta, C, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  ProfileScope scope(profile().gemm_ns);
  if (m == 1) {
    cblas_dgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? n : k, tb ? k : n, alpha, B, ldb, A,
                ta ? lda : 1, beta, C, 1);
    return;
  }
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace gdn::nn
