#include "gdn/nn/conv.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "gdn/nn/activations.h"

namespace gdn::nn {

template <class T>
void ShortConv<T>::init(int c, int w, Rng& rng) {
  channels = c;
  width = w;
  weight.init({c, 1, w}, true);
  // PyTorch Conv1d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = width.
  const double bound = 1.0 / std::sqrt(double(w));
  weight.uniform(rng, -bound, bound);
}

template <class T>
void ShortConv<T>::forward(const T* x, int B, int Tn, T* y) {
  B_ = B;
  T_ = Tn;
  const size_t n = size_t(B) * Tn * channels;
  x_.assign(x, x + n);
  pre_.resize(n);
  const int C = channels, W = width;
  // Taps as [W][C], so that the inner loop runs over contiguous channels.
  std::vector<T> taps(size_t(W) * C);
  for (int c = 0; c < C; ++c)
    for (int j = 0; j < W; ++j) taps[size_t(j) * C + c] = weight.value[size_t(c) * W + j];
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tn; ++t) {
      const size_t row = (size_t(b) * Tn + t) * C;
      T* pre = pre_.data() + row;
      std::fill(pre, pre + C, T(0));
      for (int j = std::max(0, W - 1 - t); j < W; ++j) {
        const T* xs = x + (row - size_t(W - 1 - j) * C);
        const T* w = taps.data() + size_t(j) * C;
        for (int c = 0; c < C; ++c) pre[c] += w[c] * xs[c];
      }
      T* yr = y + row;
      switch (activation) {
        case Activation::silu:
          for (int c = 0; c < C; ++c) yr[c] = silu(pre[c]);
          break;
        case Activation::elu_plus_one:
          for (int c = 0; c < C; ++c) yr[c] = elu_plus_one(pre[c]);
          break;
        case Activation::none:
          std::copy_n(pre, C, yr);
      }
    }
}

template <class T>
void ShortConv<T>::backward(const T* dy, T* dx) {
  const int C = channels, W = width, Tn = T_;
  const size_t n = size_t(B_) * Tn * C;
  std::vector<T>& dpre = dpre_;  // kept between calls, written before read
  dpre.resize(n);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    switch (activation) {
      case Activation::silu:
        dpre[i] = dy[i] * silu_grad(pre_[i]);
        break;
      case Activation::elu_plus_one:
        dpre[i] = dy[i] * elu_plus_one_grad(pre_[i]);
        break;
      case Activation::none:
        dpre[i] = dy[i];
    }
  }
  std::vector<T> taps(size_t(W) * C);
  for (int c = 0; c < C; ++c)
    for (int j = 0; j < W; ++j) taps[size_t(j) * C + c] = weight.value[size_t(c) * W + j];
  // dx[s] = sum_j w[j] dpre[s + W - 1 - j] (the outputs that read x[s])
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B_; ++b)
    for (int s = 0; s < Tn; ++s) {
      const size_t row = (size_t(b) * Tn + s) * C;
      T* d = dx + row;
      std::fill(d, d + C, T(0));
      for (int j = 0; j < W; ++j) {
        const int t = s + W - 1 - j;
        if (t >= Tn) continue;
        const T* dp = dpre.data() + row + size_t(t - s) * C;
        const T* w = taps.data() + size_t(j) * C;
        for (int c = 0; c < C; ++c) d[c] += w[c] * dp[c];
      }
    }
  // Weight gradient: threads take blocks of channels and walk the rows in order, reading
  // contiguous channels; each (channel, tap) stays one sum in (b, t) order.
  constexpr int kBlock = 16;
  T* dw = weight.grad.data();
#pragma omp parallel for schedule(static)
  for (int c0 = 0; c0 < C; c0 += kBlock) {
    const int cn = std::min(kBlock, C - c0);
    std::vector<T> acc(size_t(W) * kBlock, T(0));
    for (int b = 0; b < B_; ++b)
      for (int t = 0; t < Tn; ++t) {
        const size_t row = (size_t(b) * Tn + t) * C + c0;
        const T* dp = dpre.data() + row;
        for (int j = std::max(0, W - 1 - t); j < W; ++j) {
          const T* xs = x_.data() + (row - size_t(W - 1 - j) * C);
          T* a = acc.data() + size_t(j) * kBlock;
          for (int c = 0; c < cn; ++c) a[c] += dp[c] * xs[c];
        }
      }
    for (int c = 0; c < cn; ++c)
      for (int j = 0; j < W; ++j) dw[(c0 + c) * W + j] += acc[size_t(j) * kBlock + c];
  }
}

template struct ShortConv<float>;
template struct ShortConv<double>;

}  // namespace gdn::nn
