// RMSNorm (y = x / rms(x) * w) and the gated per-head RMSNorm of the GDN output
// (y = x / rms(x) * w * silu(z), FLA's FusedRMSNormGated, norm before gate).
#pragma once

#include "gdn/nn/param.h"

namespace gdn::nn {

template <class T>
struct RMSNorm {
  int dim = 0;
  double eps = 1e-6;
  Param<T> weight;  // [dim], ones

  void init(int d, double epsilon);
  void collect(const std::string& prefix, ParamList<T>& list) { list.push_back({prefix + ".weight", &weight}); }
  // x [n, dim] -> y [n, dim]; keeps x and 1/rms for the backward.
  void forward(const T* x, int n, T* y);
  // Adds to weight.grad; writes dx (accumulate: adds).
  void backward(const T* dy, T* dx, bool accumulate);

 private:
  std::vector<T> x_, rstd_;
  int n_ = 0;
};

// Normalises each group of `dim` values (one head) with a weight shared by all heads.
template <class T>
struct GatedRMSNorm {
  int dim = 0;
  double eps = 1e-6;
  Param<T> weight;  // [dim], ones

  void init(int d, double epsilon);
  void collect(const std::string& prefix, ParamList<T>& list) { list.push_back({prefix + ".weight", &weight}); }
  // x, z [rows, dim] (rows = tokens x heads) -> y [rows, dim]
  void forward(const T* x, const T* z, int rows, T* y);
  void backward(const T* dy, T* dx, T* dz);

 private:
  std::vector<T> x_, z_, rstd_;
  int rows_ = 0;
};

}  // namespace gdn::nn
