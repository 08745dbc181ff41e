#include "gdn/nn/linear.h"

#include "nn/blas.h"

namespace gdn::nn {

template <class T>
void Linear<T>::init(int in_features, int out_features, Rng& rng, double std, bool with_bias) {
  in = in_features;
  out = out_features;
  weight.init({out, in}, true);
  weight.normal(rng, std);
  if (with_bias) bias.init({out}, false);
}

template <class T>
void Linear<T>::forward(const T* x, int n, T* y) const {
  if (n == 0) return;
  gemm(false, true, n, out, in, T(1), x, in, weight.value.data(), in, T(0), y, out);
  if (has_bias())
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < out; ++j) y[size_t(i) * out + j] += bias.value[j];
}

template <class T>
void Linear<T>::backward(const T* x, const T* dy, int n, T* dx, bool accumulate) {
  if (n == 0) {
    if (dx && !accumulate) std::fill(dx, dx + size_t(n) * in, T(0));
    return;
  }
  gemm(true, false, out, in, n, T(1), dy, out, x, in, T(1), weight.grad.data(), in);
  if (has_bias())
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < out; ++j) bias.grad[j] += dy[size_t(i) * out + j];
  if (dx) gemm(false, false, n, in, out, T(1), dy, out, weight.value.data(), in, accumulate ? T(1) : T(0), dx, in);
}

template struct Linear<float>;
template struct Linear<double>;

}  // namespace gdn::nn
