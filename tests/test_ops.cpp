// The op family on the CPU: the fp64 reference against finite differences of itself, the
// fp32 recurrent form against the reference, and the errors bad input must give.
#include <gtest/gtest.h>

#include <functional>

#include "gdn/common.h"
#include "op_test_util.h"

namespace gdn::test {
namespace {

// ---------------------------------------------------------------------------------------
// Finite differences: the reference's backward is the gradient of its own forward.

// loss = sum(o * do) + sum(ht * dht)
double reference_loss(const Problem& p) {
  std::vector<double> o(p.v_numel()), ht(p.state_numel());
  reference_forward(p.cfg, p.inputs(p.q, p.k, p.v, p.g, p.beta, p.h0), {o.data(), ht.data()});
  double loss = 0;
  for (size_t i = 0; i < o.size(); ++i) loss += o[i] * p.d_o[i];
  for (size_t i = 0; i < ht.size(); ++i) loss += ht[i] * p.dht[i];
  return loss;
}

void check_finite_differences(Problem p, const std::string& what) {
  const Result analytic = run_reference(p);
  struct Input {
    const char* name;
    std::vector<double>* x;
    const std::vector<double>* grad;
  };
  std::vector<Input> inputs = {{"q", &p.q, &analytic.dq}, {"k", &p.k, &analytic.dk}, {"v", &p.v, &analytic.dv}};
  if (!p.g.empty()) inputs.push_back({"g", &p.g, &analytic.dg});
  if (!p.beta.empty()) inputs.push_back({"beta", &p.beta, &analytic.dbeta});
  if (!p.h0.empty()) inputs.push_back({"h0", &p.h0, &analytic.dh0});
  const double h = 1e-6;
  for (const Input& in : inputs) {
    std::vector<double> numeric(in.x->size());
    for (size_t i = 0; i < in.x->size(); ++i) {
      const double saved = (*in.x)[i];
      (*in.x)[i] = saved + h;
      const double up = reference_loss(p);
      (*in.x)[i] = saved - h;
      const double down = reference_loss(p);
      (*in.x)[i] = saved;
      numeric[i] = (up - down) / (2 * h);
    }
    const double e = rel_error(*in.grad, numeric);
    EXPECT_LE(e, 1e-6) << what << ": d" << in.name << " vs finite differences, relative error " << e;
  }
}

class ReferenceGradient : public ::testing::TestWithParam<Variant> {};

TEST_P(ReferenceGradient, MatchesFiniteDifferences) {
  for (uint64_t seed : {uint64_t(7), fresh_seed()}) {
    for (bool l2norm : {true, false}) {
      OpConfig c = config(GetParam(), 2, 5, 1, 2, 3, 2);
      c.l2norm_qk = l2norm;
      Problem p = make_problem(c, seed);
      check_finite_differences(p, describe(p, seed, GateMode::random));
    }
    OpConfig varlen = config(GetParam(), 1, 6, 2, 4, 3, 2);  // GVA 2x, sequences of 1, 2 and 3 tokens
    varlen.cu_seqlens = {0, 1, 3, 6};
    Problem p = make_problem(varlen, seed);
    check_finite_differences(p, describe(p, seed, GateMode::random));
  }
}

// ---------------------------------------------------------------------------------------
// Recurrent (fp32) against the reference (fp64) over odd shapes and extreme gates.

struct Shape {
  int B, T, H, HV, K, V;
  std::vector<int32_t> cu_seqlens;
};

const std::vector<Shape>& odd_shapes() {
  static const std::vector<Shape> shapes = {
      {2, 1, 2, 2, 16, 16, {}},                   // T = 1
      {1, 63, 2, 4, 32, 16, {}},                  // GVA 2x, K != V
      {2, 65, 1, 4, 100, 64, {}},                 // K = 100, GVA 4x
      {1, 100, 2, 2, 16, 32, {0, 1, 2, 40, 41, 100}},  // varlen with sequences of length 1
      {1, 130, 1, 1, 64, 64, {}},                 // K = V = 64
      {1, 70, 1, 2, 128, 128, {}},                // K = V = 128
      {1, 1000, 1, 2, 32, 32, {}},                // T = 1000
  };
  return shapes;
}

class RecurrentVsReference : public ::testing::TestWithParam<Variant> {};

TEST_P(RecurrentVsReference, OddShapesAndGates) {
  const uint64_t seed = fresh_seed();
  for (const Shape& s : odd_shapes()) {
    OpConfig c = config(GetParam(), s.B, s.T, s.H, s.HV, s.K, s.V);
    c.cu_seqlens = s.cu_seqlens;
    for (GateMode m : {GateMode::random, GateMode::zero, GateMode::very_negative, GateMode::mixed}) {
      if (c.info().gate == GateKind::none && m != GateMode::random) continue;
      for (bool h0 : {true, false}) {
        const Problem p = make_problem(c, seed + s.T + int(m), m, h0, h0);
        expect_close(run_form(Form::recurrent, p), run_reference(p), 1e-5, 1e-4, describe(p, seed, m));
      }
    }
  }
}

TEST_P(RecurrentVsReference, FixedSeedNoL2Norm) {
  OpConfig c = config(GetParam(), 2, 17, 2, 2, 8, 12);
  c.l2norm_qk = false;
  c.scale = 0.3f;
  const Problem p = make_problem(c, 1234);
  expect_close(run_form(Form::recurrent, p), run_reference(p), 1e-5, 1e-4, describe(p, 1234, GateMode::random));
}

std::string variant_name(const ::testing::TestParamInfo<Variant>& info) { return variant_info(info.param).name; }

const auto kAllVariants =
    ::testing::Values(Variant::linear_attention, Variant::retnet, Variant::mamba2, Variant::gla, Variant::deltanet,
                      Variant::gated_deltanet, Variant::kda, Variant::longhorn);
INSTANTIATE_TEST_SUITE_P(Ops, ReferenceGradient, kAllVariants, variant_name);
INSTANTIATE_TEST_SUITE_P(Ops, RecurrentVsReference, kAllVariants, variant_name);

// RetNet without g uses its fixed per-head decay: equal to mamba2 given those gates.
TEST(RetNet, FixedGatesAreTheDefinition) {
  OpConfig c = config(Variant::retnet, 1, 20, 2, 4, 8, 8);
  Problem p = make_problem(c, fresh_seed());
  p.g.clear();
  const Result fixed = run_reference(p);
  OpConfig m = c;
  m.variant = Variant::mamba2;
  Problem explicit_gates = p;
  explicit_gates.cfg = m;
  explicit_gates.g.resize(p.bt_numel());
  for (size_t i = 0; i < explicit_gates.g.size(); ++i)
    explicit_gates.g[i] = std::log(1 - std::exp2(-5.0 - double(i % c.HV)));
  Result want = run_reference(explicit_gates);
  want.dg.clear();
  EXPECT_LE(rel_error(fixed.o, want.o), 1e-12);
  EXPECT_LE(rel_error(fixed.dq, want.dq), 1e-12);
}

// Longhorn is DeltaNet with beta' = beta / (1 + beta |k|^2).
TEST(Longhorn, IsDeltaNetWithNormalisedBeta) {
  OpConfig c = config(Variant::longhorn, 1, 12, 1, 2, 6, 5);
  c.l2norm_qk = false;
  const Problem p = make_problem(c, fresh_seed());
  Problem d = p;
  d.cfg.variant = Variant::deltanet;
  for (int t = 0; t < c.T; ++t)
    for (int hv = 0; hv < c.HV; ++hv) {
      double kk = 0;
      for (int i = 0; i < c.K; ++i) kk += p.k[t * c.K + i] * p.k[t * c.K + i];
      const double b = p.beta[t * c.HV + hv];
      d.beta[t * c.HV + hv] = b / (1 + b * kk);
    }
  EXPECT_LE(rel_error(run_reference(p).o, run_reference(d).o), 1e-12);
}

// ---------------------------------------------------------------------------------------
// Bad input: a clear gdn::Error naming the tensor.

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

TEST(Validation, BadInputsNameTheTensor) {
  const OpConfig good = config(Variant::gated_deltanet, 1, 8, 2, 4, 4, 4);
  const Problem p = make_problem(good, 3);
  auto run = [](const Problem& q) { (void)run_form(Form::recurrent, q, false); };
  {
    Problem bad = p;
    bad.cfg.HV = 3;
    expect_error([&] { run(bad); }, "multiple of the q/k head count");
  }
  {
    Problem bad = p;
    bad.q[5] = NAN;
    expect_error([&] { run(bad); }, "tensor q");
  }
  {
    Problem bad = p;
    bad.beta[2] = INFINITY;
    expect_error([&] { run(bad); }, "tensor beta");
  }
  {
    Problem bad = p;
    bad.g.clear();
    expect_error([&] { run(bad); }, "tensor g");
  }
  {
    Problem bad = p;
    bad.g[1] = 0.5;
    expect_error([&] { run(bad); }, "log-gates must be <= 0");
  }
  {
    Problem bad = p;
    bad.h0[0] = NAN;
    expect_error([&] { run(bad); }, "tensor h0");
  }
  for (const std::vector<int32_t>& cu : {std::vector<int32_t>{0, 5, 3, 8}, std::vector<int32_t>{1, 8},
                                        std::vector<int32_t>{0, 4, 7}, std::vector<int32_t>{0}}) {
    Problem bad = make_problem(good, 3);
    bad.cfg.cu_seqlens = cu;
    expect_error([&] { run(bad); }, "tensor cu_seqlens");
  }
  {
    Problem bad = p;
    bad.cfg.chunk_size = 48;
    expect_error([&] { run(bad); }, "chunk size");
  }
  expect_error([] { parse_variant("mamba3"); }, "gated_deltanet");
  expect_error([] { parse_form("parallel"); }, "chunk");
}

TEST(Validation, VarlenNeedsBatchOne) {
  OpConfig c = config(Variant::deltanet, 2, 8, 1, 1, 4, 4);
  c.cu_seqlens = {0, 8};
  Problem p = make_problem(config(Variant::deltanet, 2, 8, 1, 1, 4, 4), 1, GateMode::random, false, false);
  p.cfg = c;
  expect_error([&] { (void)run_form(Form::recurrent, p, false); }, "B must be 1");
}

}  // namespace
}  // namespace gdn::test
