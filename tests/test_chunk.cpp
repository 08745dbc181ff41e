// The fp32 chunkwise form: against the fp64 reference over every member, chunk size, odd
// shape and extreme gate; against the fp32 recurrent form at T = 4096 (forward and every
// gradient) and T = 65536 (forward drift). Its speed is measured by `gdn bench ops`.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "ops/core.h"
#include "op_test_util.h"

namespace gdn::test {
namespace {

struct Shape {
  int B, T, H, HV, K, V;
  std::vector<int32_t> cu_seqlens;
};

// Each shape runs at every chunk size.
const std::vector<Shape>& chunk_shapes() {
  static const std::vector<Shape> shapes = {
      {2, 1, 2, 2, 16, 16, {}},                        // T = 1
      {1, 63, 2, 4, 32, 16, {}},                       // GVA 2x, K != V, T < 64
      {2, 65, 1, 4, 100, 24, {}},                      // K = 100, GVA 4x, one token past a chunk
      {1, 100, 2, 2, 16, 32, {0, 1, 2, 40, 41, 100}},  // varlen with sequences of length 1
      {1, 150, 1, 1, 64, 64, {}},                      // several chunks, partial last one
      {1, 130, 2, 2, 8, 4, {}},                        // heads narrower than a 16-row block
  };
  return shapes;
}

class ChunkVsReference : public ::testing::TestWithParam<Variant> {};

TEST_P(ChunkVsReference, ShapesGatesChunkSizes) {
  const uint64_t seed = fresh_seed();
  for (const Shape& s : chunk_shapes()) {
    for (int chunk : {16, 32, 64}) {
      OpConfig c = config(GetParam(), s.B, s.T, s.H, s.HV, s.K, s.V);
      c.cu_seqlens = s.cu_seqlens;
      c.chunk_size = chunk;
      for (GateMode m : {GateMode::random, GateMode::zero, GateMode::very_negative, GateMode::mixed}) {
        if (c.info().gate == GateKind::none && m != GateMode::random) continue;
        for (bool h0 : {true, false}) {
          const Problem p = make_problem(c, seed + s.T + int(m) + chunk, m, h0, h0);
          expect_close(run_form(Form::chunk, p), run_reference(p), 1e-5, 1e-4, describe(p, seed, m));
        }
      }
    }
  }
}

TEST_P(ChunkVsReference, FixedSeedsNoL2NormScale) {
  for (uint64_t seed : {uint64_t(1), uint64_t(2024)}) {
    OpConfig c = config(GetParam(), 2, 77, 2, 4, 24, 40);
    c.l2norm_qk = false;
    c.scale = 0.3f;
    c.chunk_size = 32;
    Problem p = make_problem(c, seed, GateMode::mixed);
    // Unnormalised keys, |k|^2 ~ 1 but not exactly: with beta up to 2 the transition's
    // eigenvalues reach about -1 and A = (I + Diag(beta) N)^-1 is far from I, while the
    // sequence stays finite.
    for (double& x : p.k) x /= std::sqrt(double(c.K));
    expect_close(run_form(Form::chunk, p), run_reference(p), 1e-5, 1e-4, describe(p, seed, GateMode::mixed));
  }
}

std::string variant_name(const ::testing::TestParamInfo<Variant>& info) { return variant_info(info.param).name; }

INSTANTIATE_TEST_SUITE_P(Chunk, ChunkVsReference,
                         ::testing::Values(Variant::linear_attention, Variant::retnet, Variant::mamba2, Variant::gla,
                                           Variant::deltanet, Variant::gated_deltanet, Variant::kda,
                                           Variant::longhorn),
                         variant_name);

// The core itself (what dispatch calls): every output element written, dq and dk per value
// head under GVA, on outputs poisoned with NaN, against the fp64 reference core.
template <class T>
struct CoreRun {
  std::vector<T> q, k, v, g, beta, h0, d_o, dht;           // inputs
  std::vector<T> o, ht, dq, dk, dv, dg, dbeta, dh0;        // outputs
  detail::CoreProblem<T> problem;

  CoreRun(const Problem& p, bool fixed_as_scalar = true) {
    const OpConfig& c = p.cfg;
    auto conv = [](const std::vector<double>& x, double f = 1) {
      std::vector<T> y(x.size());
      for (size_t i = 0; i < x.size(); ++i) y[i] = T(f * x[i]);
      return y;
    };
    const double unit = 1 / std::sqrt(double(c.K));  // keys and queries of norm ~1
    q = conv(p.q, unit), k = conv(p.k, unit), v = conv(p.v), g = conv(p.g), beta = conv(p.beta);
    h0 = conv(p.h0), d_o = conv(p.d_o), dht = conv(p.dht);
    const size_t per_head = size_t(c.B) * c.T * c.HV * c.K;
    o.assign(p.v_numel(), NAN), ht.assign(p.state_numel(), NAN);
    dq.assign(per_head, NAN), dk.assign(per_head, NAN), dv.assign(p.v_numel(), NAN);
    dg.assign(g.size(), NAN), dbeta.assign(beta.size(), NAN), dh0.assign(h0.size(), NAN);
    detail::CoreProblem<T>& cp = problem;
    cp.B = c.B, cp.T = c.T, cp.H = c.H, cp.HV = c.HV, cp.K = c.K, cp.V = c.V, cp.N = c.num_seqs();
    cp.cu_seqlens = c.cu_seqlens.empty() ? nullptr : c.cu_seqlens.data();
    cp.gate = c.info().gate == GateKind::fixed && fixed_as_scalar ? GateKind::scalar : c.info().gate;
    cp.delta = c.info().delta, cp.scale = T(c.effective_scale()), cp.chunk_size = c.chunk_size;
    cp.q = q.data(), cp.k = k.data(), cp.v = v.data();
    cp.g = g.empty() ? nullptr : g.data(), cp.beta = beta.empty() ? nullptr : beta.data();
    cp.h0 = h0.empty() ? nullptr : h0.data();
  }
  detail::CoreOutputs<T> outputs() { return {o.data(), ht.data()}; }
  detail::CoreGradOutputs<T> grad_outputs() const { return {d_o.data(), dht.empty() ? nullptr : dht.data()}; }
  detail::CoreGrads<T> grads() {
    return {dq.data(), dk.data(), dv.data(), dg.empty() ? nullptr : dg.data(),
            dbeta.empty() ? nullptr : dbeta.data(), dh0.empty() ? nullptr : dh0.data()};
  }
  Result result() const {
    auto d = [](const std::vector<T>& x) { return std::vector<double>(x.begin(), x.end()); };
    return {d(o), d(ht), d(dq), d(dk), d(dv), d(dg), d(dbeta), d(dh0)};
  }
};

TEST(ChunkCore, WritesEveryOutputAgainstReferenceCore) {
  const uint64_t seed = fresh_seed();
  struct Case {
    Variant variant;
    Shape shape;
    int chunk;
  };
  const std::vector<Case> cases = {
      {Variant::gated_deltanet, {1, 70, 2, 8, 100, 24, {}}, 32},                 // GVA 4x, K = 100
      {Variant::kda, {1, 45, 1, 2, 40, 16, {0, 1, 17, 18, 45}}, 16},            // varlen, vector gate
      {Variant::gla, {2, 33, 2, 4, 24, 40, {}}, 64},                            // additive, vector gate
      {Variant::mamba2, {1, 90, 1, 1, 32, 32, {0, 64, 65, 90}}, 64},            // a sequence of one full chunk
      {Variant::deltanet, {2, 19, 1, 2, 16, 8, {}}, 16},
      {Variant::linear_attention, {1, 5, 1, 1, 8, 8, {}}, 16},
  };
  for (const Case& cs : cases) {
    OpConfig c = config(cs.variant, cs.shape.B, cs.shape.T, cs.shape.H, cs.shape.HV, cs.shape.K, cs.shape.V);
    c.cu_seqlens = cs.shape.cu_seqlens;
    c.chunk_size = cs.chunk;
    const Problem p = make_problem(c, seed + cs.shape.T, GateMode::mixed);
    CoreRun<float> chunk(p);
    CoreRun<double> ref(p);
    detail::chunk_core_forward(chunk.problem, chunk.outputs());
    detail::chunk_core_backward(chunk.problem, chunk.grad_outputs(), chunk.grads());
    detail::reference_core_forward(ref.problem, ref.outputs());
    detail::reference_core_backward(ref.problem, ref.grad_outputs(), ref.grads());
    expect_close(chunk.result(), ref.result(), 1e-5, 1e-4, "core: " + describe(p, seed, GateMode::mixed));
  }
}

// The brief's accuracy bar at the benchmark's length: chunk vs recurrent at T = 4096.
TEST(ChunkVsRecurrent, GatedDeltaNetT4096) {
  const uint64_t seed = fresh_seed();
  for (Variant v : {Variant::gated_deltanet, Variant::kda}) {
    OpConfig c = config(v, 1, 4096, 2, 4, 64, 64);
    const Problem p = make_problem(c, seed, GateMode::random);
    expect_close(run_form(Form::chunk, p), run_form(Form::recurrent, p), 1e-5, 1e-4, describe(p, seed, GateMode::random));
  }
}

// Long sequences: the chunk form must not drift from the recurrence.
TEST(ChunkVsRecurrent, NoDriftAtT65536) {
  const uint64_t seed = fresh_seed();
  OpConfig c = config(Variant::gated_deltanet, 1, 65536, 1, 1, 32, 32);
  const Problem p = make_problem(c, seed, GateMode::random);
  expect_close(run_form(Form::chunk, p, false), run_form(Form::recurrent, p, false), 1e-5, 0,
               describe(p, seed, GateMode::random));
}

}  // namespace
}  // namespace gdn::test
