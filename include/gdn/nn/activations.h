// Pointwise functions and their derivatives, written to stay finite for any finite input.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace gdn::nn {

// exp for fp32 that the compiler can vectorise (no branch, no errno): Cody-Waite range
// reduction and Cephes' degree-6 polynomial, relative error < 2e-7; saturates below
// e^-87 and above e^88 instead of returning 0 / inf. fp64 keeps std::exp (the checks).
inline float exp_fast(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3333452301e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * std::bit_cast<float>((int32_t(n) + 127) << 23);
}
inline float exp_t(float x) { return exp_fast(x); }
inline double exp_t(double x) { return std::exp(x); }

template <class T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + exp_t(-x));
}
template <class T>
inline T silu(T x) {
  return x * sigmoid(x);
}
// d silu / dx = s (1 + x (1 - s)), s = sigmoid(x)
template <class T>
inline T silu_grad(T x) {
  const T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}
// elu(x) + 1: kernel linear attention's positive feature map (Katharopoulos et al. 2020).
template <class T>
inline T elu_plus_one(T x) {
  return x > T(0) ? x + T(1) : std::exp(x);
}
template <class T>
inline T elu_plus_one_grad(T x) {
  return x > T(0) ? T(1) : std::exp(x);
}
// GELU, the exact (erf) form of PyTorch's nn.GELU(): x Phi(x), Phi the normal CDF.
template <class T>
inline T gelu(T x) {
  return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
}
// d gelu / dx = Phi(x) + x phi(x)
template <class T>
inline T gelu_grad(T x) {
  return T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440))) +
         x * T(0.39894228040143267794) * std::exp(T(-0.5) * x * x);
}
// softplus(x) = log(1 + e^x); its derivative is sigmoid(x). PyTorch's threshold (20).
template <class T>
inline T softplus(T x) {
  return x > T(20) ? x : std::log1p(std::exp(x));
}
// log sigmoid(x) = -softplus(-x); derivative sigmoid(-x).
template <class T>
inline T log_sigmoid(T x) {
  return -softplus(-x);
}

// The decay of Gated DeltaNet, Mamba2 and KDA as FLA parametrises it, in log space:
// g = -exp(A_log) softplus(a + dt_bias), a from the layer's gate projection.
template <class T>
inline T log_decay(T a, T A_log, T dt_bias) {
  return -std::exp(A_log) * softplus(a + dt_bias);
}
// The delta rule's write strength: sigmoid(b), in (0, 2) when negative eigenvalues are allowed.
template <class T>
inline T delta_beta(T b, bool allow_neg_eigval) {
  return (allow_neg_eigval ? T(2) : T(1)) * sigmoid(b);
}

}  // namespace gdn::nn
