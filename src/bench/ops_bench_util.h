// Pieces shared by the CPU and CUDA op benchmarks (ops_bench.cpp, ops_bench_cuda.cpp).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/ops_bench.h"
#include "gdn_build_commit.h"  // generated in the build tree
#include "gdn/common.h"
#include "gdn/ops.h"

namespace gdn::bench {

// Host wall-clock median of `repeats` calls of fn after `warmup` calls.
template <class Fn>
Timing time_runs(int warmup, int repeats, Fn&& fn) {
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  return {n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2, ms.front(), ms.back(), int(n)};
}

inline nlohmann::json timing_json(const Timing& t) {
  return {{"median_ms", t.median_ms}, {"min_ms", t.min_ms}, {"max_ms", t.max_ms}, {"runs", t.runs}};
}

inline std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The commit this binary was built from (git describe at build time; "-dirty" with local changes),
// not the commit of whatever directory it runs in.
inline std::string build_commit() { return GDN_BUILD_COMMIT; }

inline double rel_err(const std::vector<float>& x, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(x[i]) - ref[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Random inputs of the op at cfg: unit-normal q, k, v, do; log-gates in [-0.5, -0.01]
// (alpha in [0.6, 0.99], the range trained GDN layers use); beta in (0, 1).
struct Problem {
  std::vector<float> q, k, v, g, beta, d_o;
  OpInputs<float> inputs() const {
    return {q.data(), k.data(), v.data(), g.empty() ? nullptr : g.data(), beta.empty() ? nullptr : beta.data(),
            nullptr};
  }
};

inline Problem make_problem(const OpConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> gate(-0.5f, -0.01f), unit(0.01f, 0.99f);
  const size_t BT = size_t(c.B) * c.T;
  auto fill = [&](size_t n, auto& dist) {
    std::vector<float> x(n);
    for (auto& e : x) e = dist(rng);
    return x;
  };
  Problem p;
  p.q = fill(BT * c.H * c.K, normal);
  p.k = fill(BT * c.H * c.K, normal);
  p.v = fill(BT * c.HV * c.V, normal);
  p.d_o = fill(BT * c.HV * c.V, normal);
  if (c.g_numel() && c.info().gate != GateKind::fixed) p.g = fill(c.g_numel(), gate);
  if (c.info().delta) p.beta = fill(BT * c.HV, unit);
  return p;
}

inline std::string shape_label(const OpConfig& c) {
  return cat(c.info().name, " B=", c.B, " T=", c.T, " H=", c.H, " HV=", c.HV, " K=", c.K, " V=", c.V);
}

// The table of a record from run_ops_bench_cuda (format_ops_bench calls it).
std::string format_ops_bench_cuda(const nlohmann::json& record);

}  // namespace gdn::bench
