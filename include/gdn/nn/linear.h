// Linear layer: y = x W^T (+ b), W [out, in]. FLA's projections have no bias; MAD's
// auto-encoder decoder has one.
#pragma once

#include "gdn/nn/param.h"

namespace gdn::nn {

template <class T>
struct Linear {
  int in = 0, out = 0;
  Param<T> weight;  // [out, in], PyTorch layout
  Param<T> bias;    // [out], zeros; empty without a bias

  void init(int in_features, int out_features, Rng& rng, double std, bool with_bias = false);
  bool has_bias() const { return !bias.value.empty(); }
  void collect(const std::string& prefix, ParamList<T>& list) {
    list.push_back({prefix + ".weight", &weight});
    if (has_bias()) list.push_back({prefix + ".bias", &bias});
  }
  // x [n, in] -> y [n, out]
  void forward(const T* x, int n, T* y) const;
  // Adds dy^T x to weight.grad (and the column sums of dy to bias.grad); writes (or with
  // accumulate adds) dx = dy W when dx is given.
  void backward(const T* x, const T* dy, int n, T* dx, bool accumulate);
};

}  // namespace gdn::nn
