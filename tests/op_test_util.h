// Shared by the op tests: random problems, running every form, error metrics.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gdn/ops.h"

namespace gdn::test {

// Fresh inputs each run unless GDN_TEST_SEED is set; failures print the seed.
inline uint64_t fresh_seed() {
  if (const char* s = std::getenv("GDN_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

enum class GateMode { random, zero, very_negative, mixed };

inline const char* gate_mode_name(GateMode m) {
  switch (m) {
    case GateMode::random: return "random";
    case GateMode::zero: return "zero";
    case GateMode::very_negative: return "very_negative";
    case GateMode::mixed: return "mixed";
  }
  return "?";
}

// All the tensors of one problem in fp64 (the reference's precision); fp32 copies on demand.
struct Problem {
  OpConfig cfg;
  bool with_h0 = false, with_dht = false;
  std::vector<double> q, k, v, g, beta, h0, d_o, dht;

  size_t qk_numel() const { return size_t(cfg.B) * cfg.T * cfg.H * cfg.K; }
  size_t v_numel() const { return size_t(cfg.B) * cfg.T * cfg.HV * cfg.V; }
  size_t bt_numel() const { return size_t(cfg.B) * cfg.T * cfg.HV; }
  size_t state_numel() const { return size_t(cfg.num_seqs()) * cfg.HV * cfg.K * cfg.V; }
  bool has_gate() const { return cfg.info().gate != GateKind::none; }

  template <class T>
  OpInputs<T> inputs(const std::vector<T>& q_, const std::vector<T>& k_, const std::vector<T>& v_,
                     const std::vector<T>& g_, const std::vector<T>& beta_, const std::vector<T>& h0_) const {
    OpInputs<T> in;
    in.q = q_.data(), in.k = k_.data(), in.v = v_.data();
    in.g = g_.empty() ? nullptr : g_.data();
    in.beta = beta_.empty() ? nullptr : beta_.data();
    in.h0 = h0_.empty() ? nullptr : h0_.data();
    return in;
  }
};

inline std::vector<float> to_f32(const std::vector<double>& x) { return {x.begin(), x.end()}; }

inline Problem make_problem(const OpConfig& cfg, uint64_t seed, GateMode gates = GateMode::random,
                            bool with_h0 = true, bool with_dht = true) {
  Problem p;
  p.cfg = cfg;
  p.with_h0 = with_h0, p.with_dht = with_dht;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0, 1);
  std::uniform_real_distribution<double> unif(0, 1);
  auto fill = [&](std::vector<double>& x, size_t n, double sd) {
    x.resize(n);
    for (auto& e : x) e = sd * normal(rng);
  };
  fill(p.q, p.qk_numel(), 1);
  fill(p.k, p.qk_numel(), 1);
  fill(p.v, p.v_numel(), 1);
  fill(p.d_o, p.v_numel(), 1);
  const GateKind gk = cfg.info().gate;
  if (gk != GateKind::none) {
    p.g.resize(cfg.g_numel());
    for (auto& e : p.g) {
      switch (gates) {
        case GateMode::random: e = std::log(0.7 + 0.29 * unif(rng)); break;  // alpha in [0.7, 0.99]
        case GateMode::zero: e = 0; break;
        case GateMode::very_negative: e = -30 - 5 * unif(rng); break;
        case GateMode::mixed: {
          const double u = unif(rng);
          e = u < 0.3 ? 0.0 : u < 0.5 ? -30.0 : -4 * unif(rng);
          break;
        }
      }
    }
  }
  if (cfg.info().delta) {
    p.beta.resize(p.bt_numel());
    for (auto& e : p.beta) e = 2 * unif(rng);  // [0, 2): negative eigenvalues included
  }
  if (with_h0) fill(p.h0, p.state_numel(), 0.5);
  if (with_dht) fill(p.dht, p.state_numel(), 0.5);
  return p;
}

struct Result {
  std::vector<double> o, ht, dq, dk, dv, dg, dbeta, dh0;
};

// Runs the fp64 reference, forward and backward.
inline Result run_reference(const Problem& p) {
  const OpConfig& c = p.cfg;
  Result r;
  r.o.assign(p.v_numel(), NAN);
  r.ht.assign(p.state_numel(), NAN);
  const OpInputs<double> in = p.inputs(p.q, p.k, p.v, p.g, p.beta, p.h0);
  reference_forward(c, in, {r.o.data(), r.ht.data()});
  r.dq.assign(p.qk_numel(), NAN), r.dk.assign(p.qk_numel(), NAN), r.dv.assign(p.v_numel(), NAN);
  if (!p.g.empty()) r.dg.assign(p.g.size(), NAN);
  if (!p.beta.empty()) r.dbeta.assign(p.beta.size(), NAN);
  if (!p.h0.empty()) r.dh0.assign(p.h0.size(), NAN);
  OpGrads<double> gr{r.dq.data(), r.dk.data(), r.dv.data(), r.dg.empty() ? nullptr : r.dg.data(),
                     r.dbeta.empty() ? nullptr : r.dbeta.data(), r.dh0.empty() ? nullptr : r.dh0.data()};
  reference_backward(c, in, {p.d_o.data(), p.dht.empty() ? nullptr : p.dht.data()}, gr);
  return r;
}

// Runs an fp32 form; outputs are poisoned with NaN first so an unwritten element fails.
inline Result run_form(Form form, const Problem& p, bool with_backward = true) {
  const OpConfig& c = p.cfg;
  const auto q = to_f32(p.q), k = to_f32(p.k), v = to_f32(p.v), g = to_f32(p.g), beta = to_f32(p.beta),
             h0 = to_f32(p.h0), d_o = to_f32(p.d_o), dht = to_f32(p.dht);
  const OpInputs<float> in = p.inputs(q, k, v, g, beta, h0);
  std::vector<float> o(p.v_numel(), NAN), ht(p.state_numel(), NAN);
  forward(form, c, in, {o.data(), ht.data()});
  Result r;
  r.o.assign(o.begin(), o.end());
  r.ht.assign(ht.begin(), ht.end());
  if (!with_backward) return r;
  std::vector<float> dq(p.qk_numel(), NAN), dk(p.qk_numel(), NAN), dv(p.v_numel(), NAN), dg(g.size(), NAN),
      dbeta(beta.size(), NAN), dh0(h0.size(), NAN);
  OpGrads<float> gr{dq.data(), dk.data(), dv.data(), dg.empty() ? nullptr : dg.data(),
                    dbeta.empty() ? nullptr : dbeta.data(), dh0.empty() ? nullptr : dh0.data()};
  backward(form, c, in, {d_o.data(), dht.empty() ? nullptr : dht.data()}, gr);
  r.dq.assign(dq.begin(), dq.end()), r.dk.assign(dk.begin(), dk.end()), r.dv.assign(dv.begin(), dv.end());
  r.dg.assign(dg.begin(), dg.end()), r.dbeta.assign(dbeta.begin(), dbeta.end()), r.dh0.assign(dh0.begin(), dh0.end());
  return r;
}

// ||a - b|| / ||b||; any NaN/Inf in a gives +inf so that it never passes. Two all-zero
// tensors agree exactly (0); a nonzero a against an all-zero b gives +inf.
inline double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return std::sqrt(num / den);
}

inline double rms(const std::vector<double>& x) {
  double ss = 0;
  for (double e : x) ss += e * e;
  return x.empty() ? 0 : std::sqrt(ss / double(x.size()));
}
inline double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double e : x) m = std::max(m, std::abs(e));
  return m;
}

// Compares every output and gradient present in both results.
inline void expect_close(const Result& got, const Result& want, double fwd_tol, double bwd_tol,
                         const std::string& what) {
  auto check = [&](const char* name, const std::vector<double>& a, const std::vector<double>& b, double tol) {
    if (b.empty() && a.empty()) return;
    const double e = rel_error(a, b);
    EXPECT_LE(e, tol) << what << ": " << name << " relative error " << e;
  };
  check("o", got.o, want.o, fwd_tol);
  check("ht", got.ht, want.ht, fwd_tol);
  if (want.dq.empty() || got.dq.empty()) return;
  check("dq", got.dq, want.dq, bwd_tol);
  check("dk", got.dk, want.dk, bwd_tol);
  check("dv", got.dv, want.dv, bwd_tol);
  check("dg", got.dg, want.dg, bwd_tol);
  check("dbeta", got.dbeta, want.dbeta, bwd_tol);
  check("dh0", got.dh0, want.dh0, bwd_tol);
}

inline OpConfig config(Variant v, int B, int T, int H, int HV, int K, int V) {
  OpConfig c;
  c.variant = v, c.B = B, c.T = T, c.H = H, c.HV = HV, c.K = K, c.V = V;
  return c;
}

inline std::string describe(const Problem& p, uint64_t seed, GateMode m) {
  const OpConfig& c = p.cfg;
  std::string s = std::string(c.info().name) + " B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) +
                  " H=" + std::to_string(c.H) + " HV=" + std::to_string(c.HV) + " K=" + std::to_string(c.K) +
                  " V=" + std::to_string(c.V) + " C=" + std::to_string(c.chunk_size) +
                  (c.cu_seqlens.empty() ? "" : " varlen") + (c.l2norm_qk ? "" : " no-l2norm") +
                  " gates=" + gate_mode_name(m) + (p.with_h0 ? " h0" : "") + " seed=" + std::to_string(seed);
  return s;
}

}  // namespace gdn::test
