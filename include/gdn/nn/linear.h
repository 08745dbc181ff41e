// Linear layer without bias (FLA's projections have none): y = x W^T, W [out, in].
#pragma once

#include "gdn/nn/param.h"

namespace gdn::nn {

template <class T>
struct Linear {
  int in = 0, out = 0;
  Param<T> weight;  // [out, in], PyTorch layout

  void init(int in_features, int out_features, Rng& rng, double std);
  void collect(const std::string& prefix, ParamList<T>& list) { list.push_back({prefix + ".weight", &weight}); }
  // x [n, in] -> y [n, out]
  void forward(const T* x, int n, T* y) const;
  // Adds dy^T x to weight.grad; writes (or with accumulate adds) dx = dy W when dx is given.
  void backward(const T* x, const T* dy, int n, T* dx, bool accumulate);
};

}  // namespace gdn::nn
