// Causal depthwise short convolution with SiLU (FLA's ShortConvolution, activation silu):
//   y[t, c] = silu( sum_{j<W} w[c, j] x[t - W + 1 + j, c] ),   x[t < 0] = 0 (per sequence).
// Kernel linear attention puts its positive feature map elu + 1 here instead of SiLU.
#pragma once

#include "gdn/nn/param.h"

namespace gdn::nn {

template <class T>
struct ShortConv {
  int channels = 0, width = 4;
  enum class Activation { none, silu, elu_plus_one };
  Activation activation = Activation::silu;
  Param<T> weight;         // [channels, 1, width], PyTorch Conv1d(groups=channels) layout

  void init(int c, int w, Rng& rng);
  void collect(const std::string& prefix, ParamList<T>& list) { list.push_back({prefix + ".weight", &weight}); }
  // x, y [B, T, channels]
  void forward(const T* x, int B, int T_, T* y);
  void backward(const T* dy, T* dx);  // writes dx, adds to weight.grad

 private:
  std::vector<T> x_, pre_, dpre_;
  int B_ = 0, T_ = 0;
};

}  // namespace gdn::nn
