#include "gdn/nn/loss.h"

#include <algorithm>
#include <cmath>

#include "gdn/common.h"
#include "gdn/nn/activations.h"
#include "nn/blas.h"

namespace gdn::nn {

template <class T>
LossStats LMHeadLoss<T>::forward(const T* h, const int32_t* labels, int n, int dim, const Param<T>& head,
                                  const Param<T>* bias) {
  n_ = n;
  dim_ = dim;
  vocab_ = int(head.shape.at(0));
  GDN_CHECK(!bias || bias->numel() == size_t(vocab_), "lm head: the bias holds ", bias ? bias->numel() : 0,
            " values for a vocab of ", vocab_);
  rows_.clear();
  targets_.clear();
  for (int i = 0; i < n; ++i) {
    if (labels[i] == kIgnoreIndex) continue;
    GDN_CHECK(labels[i] >= 0 && labels[i] < vocab_, "labels: value ", labels[i], " at position ", i,
              " is outside [0, ", vocab_, ") and is not the ignore index -100");
    rows_.push_back(i);
    targets_.push_back(labels[i]);
  }
  const int m = int(rows_.size());
  LossStats st;
  st.count = m;
  if (m == 0) return st;
  hsel_.resize(size_t(m) * dim);
  for (int r = 0; r < m; ++r) std::copy_n(h + size_t(rows_[r]) * dim, dim, hsel_.data() + size_t(r) * dim);
  probs_.resize(size_t(m) * vocab_);
  gemm(false, true, m, vocab_, dim, T(1), hsel_.data(), dim, head.value.data(), dim, T(0), probs_.data(), vocab_);
  if (bias)
    for (int r = 0; r < m; ++r)
      for (int j = 0; j < vocab_; ++j) probs_[size_t(r) * vocab_ + j] += bias->value[j];
  std::vector<double> row_loss(m);
  std::vector<char> row_hit(m);
#pragma omp parallel for schedule(static)
  for (int r = 0; r < m; ++r) {
    T* p = probs_.data() + size_t(r) * vocab_;
    // Vector reductions (lane-wise partial sums: a fixed order, not the serial one).
    T mx = p[0];
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < vocab_; ++j) mx = std::max(mx, p[j]);
    const int best = int(std::find(p, p + vocab_, mx) - p);
    const T target_logit = p[targets_[r]];
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < vocab_; ++j) sum += (p[j] = exp_t(p[j] - mx));
    row_loss[r] = double(mx) + std::log(double(sum)) - double(target_logit);
    row_hit[r] = best == targets_[r];
    const T inv = T(1) / sum;
    for (int j = 0; j < vocab_; ++j) p[j] *= inv;
  }
  for (int r = 0; r < m; ++r) {
    st.loss += row_loss[r];
    st.correct += row_hit[r];
  }
  st.loss /= m;
  return st;
}

template <class T>
void LMHeadLoss<T>::backward(T* dh, Param<T>& head, Param<T>* bias) {
  std::fill(dh, dh + size_t(n_) * dim_, T(0));
  const int m = int(rows_.size());
  if (m == 0) return;
  // dlogits = (softmax - onehot) / m, in place over the probabilities
  for (int r = 0; r < m; ++r) {
    T* p = probs_.data() + size_t(r) * vocab_;
    p[targets_[r]] -= T(1);
    for (int j = 0; j < vocab_; ++j) p[j] /= T(m);
    if (bias)
      for (int j = 0; j < vocab_; ++j) bias->grad[j] += p[j];
  }
  std::vector<T> dsel(size_t(m) * dim_);
  gemm(false, false, m, dim_, vocab_, T(1), probs_.data(), vocab_, head.value.data(), dim_, T(0), dsel.data(), dim_);
  gemm(true, false, vocab_, dim_, m, T(1), probs_.data(), vocab_, hsel_.data(), dim_, T(1), head.grad.data(), dim_);
  for (int r = 0; r < m; ++r) std::copy_n(dsel.data() + size_t(r) * dim_, dim_, dh + size_t(rows_[r]) * dim_);
}

template struct LMHeadLoss<float>;
template struct LMHeadLoss<double>;

}  // namespace gdn::nn
