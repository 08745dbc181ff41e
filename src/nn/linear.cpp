#include "gdn/nn/linear.h"

#include "nn/blas.h"

namespace gdn::nn {

template <class T>
void Linear<T>::init(int in_features, int out_features, Rng& rng, double std) {
  in = in_features;
  out = out_features;
  weight.init({out, in}, true);
  weight.normal(rng, std);
}

template <class T>
void Linear<T>::forward(const T* x, int n, T* y) const {
  if (n == 0) return;
  gemm(false, true, n, out, in, T(1), x, in, weight.value.data(), in, T(0), y, out);
}

template <class T>
void Linear<T>::backward(const T* x, const T* dy, int n, T* dx, bool accumulate) {
  if (n == 0) {
    if (dx && !accumulate) std::fill(dx, dx + size_t(n) * in, T(0));
    return;
  }
  gemm(true, false, out, in, n, T(1), dy, out, x, in, T(1), weight.grad.data(), in);
  if (dx) gemm(false, false, n, in, out, T(1), dy, out, weight.value.data(), in, accumulate ? T(1) : T(0), dx, in);
}

template struct Linear<float>;
template struct Linear<double>;

}  // namespace gdn::nn
