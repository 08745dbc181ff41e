#include "gdn/nn/norm.h"

#include <cmath>

#include "gdn/nn/activations.h"

namespace gdn::nn {

template <class T>
void RMSNorm<T>::init(int d, double epsilon) {
  dim = d;
  eps = epsilon;
  weight.init({d}, false);
  weight.fill(T(1));
}

template <class T>
void RMSNorm<T>::forward(const T* x, int n, T* y) {
  n_ = n;
  x_.assign(x, x + size_t(n) * dim);
  rstd_.resize(n);
  const T* w = weight.value.data();
#pragma omp parallel for schedule(static)
  for (int r = 0; r < n; ++r) {
    const T* xr = x + size_t(r) * dim;
    T ss = 0;
    for (int i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    const T rs = T(1) / std::sqrt(ss / dim + T(eps));
    rstd_[r] = rs;
    T* yr = y + size_t(r) * dim;
    for (int i = 0; i < dim; ++i) yr[i] = xr[i] * rs * w[i];
  }
}

// y_i = x_i r w_i, r = (mean x^2 + eps)^-1/2:
// dx_i = r (w_i dy_i - x_i r^2 / dim * sum_j w_j dy_j x_j)
template <class T>
void RMSNorm<T>::backward(const T* dy, T* dx, bool accumulate) {
  const T* w = weight.value.data();
#pragma omp parallel for schedule(static)
  for (int r = 0; r < n_; ++r) {
    const T* xr = x_.data() + size_t(r) * dim;
    const T* dyr = dy + size_t(r) * dim;
    T* dxr = dx + size_t(r) * dim;
    const T rs = rstd_[r];
    T dot = 0;
    for (int i = 0; i < dim; ++i) dot += w[i] * dyr[i] * xr[i];
    const T c = dot * rs * rs / dim;
    for (int i = 0; i < dim; ++i) {
      const T g = rs * (w[i] * dyr[i] - xr[i] * c);
      dxr[i] = accumulate ? dxr[i] + g : g;
    }
  }
  // The weight gradient is a sum over rows: serial, so it is the same for any thread count.
  T* dw = weight.grad.data();
  for (int r = 0; r < n_; ++r) {
    const T* xr = x_.data() + size_t(r) * dim;
    const T* dyr = dy + size_t(r) * dim;
    for (int i = 0; i < dim; ++i) dw[i] += dyr[i] * xr[i] * rstd_[r];
  }
}

template <class T>
void GatedRMSNorm<T>::init(int d, double epsilon) {
  dim = d;
  eps = epsilon;
  weight.init({d}, false);
  weight.fill(T(1));
}

template <class T>
void GatedRMSNorm<T>::forward(const T* x, const T* z, int rows, T* y) {
  rows_ = rows;
  x_.assign(x, x + size_t(rows) * dim);
  z_.assign(z, z + size_t(rows) * dim);
  rstd_.resize(rows);
  const T* w = weight.value.data();
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; ++r) {
    const T* xr = x + size_t(r) * dim;
    const T* zr = z + size_t(r) * dim;
    T ss = 0;
    for (int i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    const T rs = T(1) / std::sqrt(ss / dim + T(eps));
    rstd_[r] = rs;
    T* yr = y + size_t(r) * dim;
    for (int i = 0; i < dim; ++i) yr[i] = xr[i] * rs * w[i] * silu(zr[i]);
  }
}

// With u_i = w_i silu(z_i) the norm part is an RMSNorm with weight u; dz from silu'.
template <class T>
void GatedRMSNorm<T>::backward(const T* dy, T* dx, T* dz) {
  const T* w = weight.value.data();
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows_; ++r) {
    const T* xr = x_.data() + size_t(r) * dim;
    const T* zr = z_.data() + size_t(r) * dim;
    const T* dyr = dy + size_t(r) * dim;
    const T rs = rstd_[r];
    T dot = 0;
    for (int i = 0; i < dim; ++i) dot += w[i] * silu(zr[i]) * dyr[i] * xr[i];
    const T c = dot * rs * rs / dim;
    for (int i = 0; i < dim; ++i) {
      const T u = w[i] * silu(zr[i]);
      dx[size_t(r) * dim + i] = rs * (u * dyr[i] - xr[i] * c);
      dz[size_t(r) * dim + i] = dyr[i] * xr[i] * rs * w[i] * silu_grad(zr[i]);
    }
  }
  T* dw = weight.grad.data();
  for (int r = 0; r < rows_; ++r) {
    const T* xr = x_.data() + size_t(r) * dim;
    const T* zr = z_.data() + size_t(r) * dim;
    const T* dyr = dy + size_t(r) * dim;
    for (int i = 0; i < dim; ++i) dw[i] += dyr[i] * xr[i] * rstd_[r] * silu(zr[i]);
  }
}

template struct RMSNorm<float>;
template struct RMSNorm<double>;
template struct GatedRMSNorm<float>;
template struct GatedRMSNorm<double>;

}  // namespace gdn::nn
