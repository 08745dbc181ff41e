// SwiGLU MLP: y = down( silu(gate x) * up x ), FLA's GatedMLP names.
#pragma once

#include "gdn/nn/linear.h"

namespace gdn::nn {

template <class T>
struct SwiGLU {
  int dim = 0, hidden = 0;
  Linear<T> gate_proj, up_proj, down_proj;

  void init(int d, int hidden_size, Rng& rng, double std, double out_std);
  void collect(const std::string& prefix, ParamList<T>& list);
  void forward(const T* x, int n, T* y);
  void backward(const T* dy, T* dx);  // writes dx

 private:
  std::vector<T> x_, g_, u_, h_;
  std::vector<T> dh_, dg_, du_;  // backward scratch
  int n_ = 0;
};

}  // namespace gdn::nn
