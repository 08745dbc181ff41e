#include "gdn/nn/mlp.h"

#include "gdn/nn/activations.h"

namespace gdn::nn {

template <class T>
void SwiGLU<T>::init(int d, int hidden_size, Rng& rng, double std, double out_std) {
  dim = d;
  hidden = hidden_size;
  gate_proj.init(d, hidden, rng, std);
  up_proj.init(d, hidden, rng, std);
  down_proj.init(hidden, d, rng, out_std);
}

template <class T>
void SwiGLU<T>::collect(const std::string& prefix, ParamList<T>& list) {
  gate_proj.collect(prefix + ".gate_proj", list);
  up_proj.collect(prefix + ".up_proj", list);
  down_proj.collect(prefix + ".down_proj", list);
}

template <class T>
void SwiGLU<T>::forward(const T* x, int n, T* y) {
  n_ = n;
  const size_t nh = size_t(n) * hidden;
  x_.assign(x, x + size_t(n) * dim);
  g_.resize(nh);
  u_.resize(nh);
  h_.resize(nh);
  gate_proj.forward(x, n, g_.data());
  up_proj.forward(x, n, u_.data());
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < nh; ++i) h_[i] = silu(g_[i]) * u_[i];
  down_proj.forward(h_.data(), n, y);
}

template <class T>
void SwiGLU<T>::backward(const T* dy, T* dx) {
  const size_t nh = size_t(n_) * hidden;
  dh_.resize(nh);  // kept between calls, written before read
  dg_.resize(nh);
  du_.resize(nh);
  down_proj.backward(h_.data(), dy, n_, dh_.data(), false);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < nh; ++i) {
    dg_[i] = dh_[i] * u_[i] * silu_grad(g_[i]);
    du_[i] = dh_[i] * silu(g_[i]);
  }
  gate_proj.backward(x_.data(), dg_.data(), n_, dx, false);
  up_proj.backward(x_.data(), du_.data(), n_, dx, true);
}

template struct SwiGLU<float>;
template struct SwiGLU<double>;

}  // namespace gdn::nn
