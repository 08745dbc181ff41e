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
//   D(h) = (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h
// on up to `samples` entries; the error is ||analytic - numeric|| / ||numeric|| over them.
// The step starts at 1e-4 and is halved until halving it moves D by less than a tenth of
// the tolerance (on the scale of the sampled gradient): along q/k-path weights of the small
// mixers (q and k of 4 entries through an L2 norm) the loss can curve so strongly that
// D(1e-4) is off by up to 6e-4 relative (4 of 200 seeds), while D(1e-5) agrees to 1e-8.
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
  double grad2 = 0;
  for (size_t i : idx) {
    ASSERT_TRUE(std::isfinite(grad[i])) << what << "[" << i << "] analytic gradient is not finite";
    grad2 += grad[i] * grad[i];
  }
  const double settled = 0.1 * tol * std::sqrt(grad2 / double(idx.size()));
  constexpr int kMaxHalvings = 6;  // down to h = 1.6e-6, where fp64 rounding is still far below tol
  double num2 = 0, err2 = 0;
  for (size_t i : idx) {
    const double x0 = x[i];
    auto at = [&](double d) {
      x[i] = x0 + d;
      return loss();
    };
    double h = 1e-4;
    double f1p = at(h), f1m = at(-h), f2p = at(2 * h), f2m = at(-2 * h);
    double numeric = (8 * (f1p - f1m) - (f2p - f2m)) / (12 * h);
    for (int k = 0; k < kMaxHalvings; ++k) {  // D(h/2) reuses f(x +- h)
      h /= 2;
      f2p = f1p, f2m = f1m;
      f1p = at(h), f1m = at(-h);
      const double finer = (8 * (f1p - f1m) - (f2p - f2m)) / (12 * h);
      const bool converged = std::abs(finer - numeric) <= settled;  // false for NaN
      numeric = finer;
      if (converged) break;
    }
    x[i] = x0;
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
