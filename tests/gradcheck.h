// Central finite differences in fp64 against a layer's analytic gradients.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gdn/nn/param.h"

namespace gdn::test {

// A fresh seed each run unless GDN_TEST_SEED is set (the same for every test of the run).
inline uint64_t fresh_seed() {
  static const uint64_t s = [] {
    if (const char* e = std::getenv("GDN_TEST_SEED")) return uint64_t(std::strtoull(e, nullptr, 10));
    return uint64_t(std::random_device{}());
  }();
  return s;
}

inline std::vector<double> randn(nn::Rng& rng, size_t n, double std = 1.0) {
  std::vector<double> v(n);
  for (auto& x : v) x = rng.normal() * std;
  return v;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Compares grad[i] with the fourth-order central difference
//   (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h,  h = 1e-4
// (truncation error O(h^4), so the check stays sharp where the loss curves strongly, as
// through an L2 norm of a short vector) on up to `samples` entries; the error is
// ||analytic - numeric|| / ||numeric|| over the sampled entries.
inline void expect_grad(const std::string& what, std::vector<double>& x, const std::vector<double>& grad,
                        const std::function<double()>& loss, nn::Rng& rng, int samples = 24,
                        double tol = 1e-6) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  std::vector<size_t> idx;
  if (x.size() <= size_t(samples)) {
    for (size_t i = 0; i < x.size(); ++i) idx.push_back(i);
  } else {
    for (int s = 0; s < samples; ++s) idx.push_back(rng.below(x.size()));
  }
  const double h = 1e-4;
  double num2 = 0, err2 = 0;
  for (size_t i : idx) {
    const double x0 = x[i];
    auto at = [&](double d) {
      x[i] = x0 + d;
      return loss();
    };
    const double numeric = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
    x[i] = x0;
    ASSERT_TRUE(std::isfinite(grad[i])) << what << "[" << i << "] analytic gradient is not finite";
    num2 += numeric * numeric;
    err2 += (grad[i] - numeric) * (grad[i] - numeric);
  }
  const double rel = std::sqrt(err2) / std::max(std::sqrt(num2), 1e-12);
  EXPECT_LT(rel, tol) << what << ": relative gradient error " << rel << " (|numeric| " << std::sqrt(num2) << ")";
}

inline void expect_param_grads(const nn::ParamList<double>& params, const std::function<double()>& loss,
                               nn::Rng& rng, double tol = 1e-6) {
  for (auto& [name, p] : params) {
    const std::vector<double> g = p->grad;
    expect_grad(name, p->value, g, loss, rng, 24, tol);
  }
}

}  // namespace gdn::test
