#include "gdn/nn/autoencoder.h"

#include "gdn/common.h"
#include "gdn/nn/activations.h"
#include "gdn/nn/embedding.h"

namespace gdn::nn {

template <class T>
void AutoencoderDecoder<T>::init(int d, double eps, Rng& rng, double std) {
  GDN_CHECK(d >= 4, "autoencoder decoder: the width must be >= 4 (sinusoidal positions), got ", d);
  dim = d;
  norm1.init(d, eps);
  fc1.init(d, d, rng, std, true);
  norm2.init(d, eps);
  fc2.init(d, d, rng, std, true);
}

template <class T>
void AutoencoderDecoder<T>::collect(const std::string& prefix, ParamList<T>& list) {
  norm1.collect(prefix + ".norm1", list);
  fc1.collect(prefix + ".fc1", list);
  norm2.collect(prefix + ".norm2", list);
  fc2.collect(prefix + ".fc2", list);
}

template <class T>
void AutoencoderDecoder<T>::forward(const T* code, int B, int Tn, T* y) {
  GDN_CHECK(B > 0 && Tn > 0, "autoencoder decoder: batch and length must be positive, got B=", B, " T=", Tn);
  if (Tn != T_ || positions_.empty()) {
    const std::vector<double> table = sinusoidal_positions(Tn, dim);
    positions_.assign(table.begin(), table.end());
  }
  B_ = B;
  T_ = Tn;
  const int n = B * Tn;
  const size_t size = size_t(n) * dim;
  z_.resize(size);
  u_.resize(size);
  a1_.resize(size);
  h1_.resize(size);
  v_.resize(size);
  a2_.resize(size);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tn; ++t)
      for (int j = 0; j < dim; ++j)
        z_[(size_t(b) * Tn + t) * dim + j] = code[size_t(b) * dim + j] + positions_[size_t(t) * dim + j];
  norm1.forward(z_.data(), n, u_.data());
  fc1.forward(u_.data(), n, a1_.data());
  for (size_t i = 0; i < size; ++i) h1_[i] = gelu(a1_[i]);
  norm2.forward(h1_.data(), n, v_.data());
  fc2.forward(v_.data(), n, a2_.data());
  for (size_t i = 0; i < size; ++i) y[i] = gelu(a2_[i]);
}

template <class T>
void AutoencoderDecoder<T>::backward(const T* dy, T* dcode) {
  const int n = B_ * T_;
  const size_t size = size_t(n) * dim;
  d1_.resize(size);
  d2_.resize(size);
  for (size_t i = 0; i < size; ++i) d2_[i] = dy[i] * gelu_grad(a2_[i]);  // d a2
  fc2.backward(v_.data(), d2_.data(), n, d1_.data(), false);            // d v
  norm2.backward(d1_.data(), d2_.data(), false);                        // d h1
  for (size_t i = 0; i < size; ++i) d2_[i] *= gelu_grad(a1_[i]);        // d a1
  fc1.backward(u_.data(), d2_.data(), n, d1_.data(), false);            // d u
  norm1.backward(d1_.data(), d2_.data(), false);                        // d z
  // Every position's input holds the same code.
  std::fill(dcode, dcode + size_t(B_) * dim, T(0));
  for (int b = 0; b < B_; ++b)
    for (int t = 0; t < T_; ++t)
      for (int j = 0; j < dim; ++j) dcode[size_t(b) * dim + j] += d2_[(size_t(b) * T_ + t) * dim + j];
}

template struct AutoencoderDecoder<float>;
template struct AutoencoderDecoder<double>;

}  // namespace gdn::nn
