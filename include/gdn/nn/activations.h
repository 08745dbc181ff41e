// Pointwise functions and their derivatives, written to stay finite for any finite input.
#pragma once

#include <cmath>

namespace gdn::nn {

template <class T>
inline T sigmoid(T x) {
  return x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
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

}  // namespace gdn::nn
