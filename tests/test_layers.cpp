// fp64 finite-difference checks of every layer's backward (loss = <y, r>, r random).
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cmath>

#include "gdn/common.h"
#include "gdn/nn/activations.h"
#include "gdn/nn/autoencoder.h"
#include "gdn/nn/conv.h"
#include "gdn/nn/embedding.h"
#include "gdn/nn/linear.h"
#include "gdn/nn/loss.h"
#include "gdn/nn/mixer.h"
#include "gdn/nn/mlp.h"
#include "gdn/nn/norm.h"
#include "gradcheck.h"

using namespace gdn;
using namespace gdn::nn;
using gdn::test::dot;
using gdn::test::expect_grad;
using gdn::test::randn;

namespace {

struct LayerCheck : ::testing::TestWithParam<uint64_t> {
  Rng rng{GetParam()};
  void SetUp() override { RecordProperty("seed", std::to_string(GetParam())); }
};

// Deep layers (attention, the mixers) curve more, so their finite differences are less
// exact; a wrong gradient is off by O(1), far above either tolerance.
constexpr double kDeepTol = 1e-5;

// Runs forward/backward once for the analytic gradients, then checks dx and every param.
template <class Fwd, class Bwd>
void check_layer(const std::string& name, std::vector<double>& x, size_t ny, ParamList<double> params, Fwd fwd,
                 Bwd bwd, Rng& rng, double tol = 1e-6) {
  std::vector<double> y(ny), r = randn(rng, ny), dx(x.size());
  for (auto& [n, p] : params) std::fill(p->grad.begin(), p->grad.end(), 0.0);
  fwd(y);
  bwd(r, dx);
  auto loss = [&] {
    fwd(y);
    return dot(y, r);
  };
  if (!x.empty()) expect_grad(name + " dx", x, dx, loss, rng, 24, tol);
  for (auto& [n, p] : params) {
    const std::vector<double> g = p->grad;
    expect_grad(name + " " + n, p->value, g, loss, rng, 24, tol);
  }
}

TEST_P(LayerCheck, Linear) {
  Linear<double> lin;
  lin.init(7, 5, rng, 0.5);
  const int n = 6;
  auto x = randn(rng, size_t(n) * 7);
  ParamList<double> ps;
  lin.collect("lin", ps);
  check_layer("linear", x, size_t(n) * 5, ps, [&](std::vector<double>& y) { lin.forward(x.data(), n, y.data()); },
              [&](const std::vector<double>& dy, std::vector<double>& dx) {
                lin.backward(x.data(), dy.data(), n, dx.data(), false);
              },
              rng);
}

TEST_P(LayerCheck, LinearWithBias) {
  Linear<double> lin;
  lin.init(6, 4, rng, 0.5, true);
  lin.bias.normal(rng, 1.0);
  const int n = 5;
  auto x = randn(rng, size_t(n) * 6);
  ParamList<double> ps;
  lin.collect("lin", ps);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[1].first, "lin.bias");
  EXPECT_FALSE(lin.bias.decay);
  check_layer("linear+bias", x, size_t(n) * 4, ps, [&](std::vector<double>& y) { lin.forward(x.data(), n, y.data()); },
              [&](const std::vector<double>& dy, std::vector<double>& dx) {
                lin.backward(x.data(), dy.data(), n, dx.data(), false);
              },
              rng);
}

TEST_P(LayerCheck, Gelu) {
  // Against its own finite differences, and the erf form against the integral's symmetry
  // gelu(x) - gelu(-x) = x.
  for (int i = 0; i < 50; ++i) {
    const double x = rng.normal() * 3, h = 1e-5;
    const double numeric = (gelu(x + h) - gelu(x - h)) / (2 * h);
    EXPECT_NEAR(gelu_grad(x), numeric, 1e-8) << "x = " << x;
    EXPECT_NEAR(gelu(x) - gelu(-x), x, 1e-12) << "x = " << x;
    EXPECT_NEAR(double(gelu(float(x))), gelu(x), 1e-6 * (1 + std::abs(x)));
  }
}

// MAD's table: [sin(p w) | cos(p w)], w from 1 down to 1e-4 in a geometric series.
TEST_P(LayerCheck, SinusoidalPositions) {
  for (int dim : {4, 9, 16}) {
    const int P = 7, half = dim / 2;
    const auto table = sinusoidal_positions(P, dim);
    ASSERT_EQ(table.size(), size_t(P) * dim);
    for (int p = 0; p < P; ++p) {
      const double* row = &table[size_t(p) * dim];
      for (int i = 0; i < half; ++i) {
        EXPECT_NEAR(row[i] * row[i] + row[half + i] * row[half + i], 1.0, 1e-12);
        if (i == 0) EXPECT_NEAR(row[0], std::sin(double(p)), 1e-12);
        if (i == half - 1) EXPECT_NEAR(row[i], std::sin(p * 1e-4), 1e-12);
        // consecutive frequencies keep one ratio
        if (p == 1 && i > 0 && i + 1 < half)
          EXPECT_NEAR(std::asin(row[i]) * std::asin(row[i]), std::asin(row[i - 1]) * std::asin(row[i + 1]), 1e-12);
      }
      if (dim % 2) EXPECT_EQ(row[dim - 1], 0.0);
    }
  }
  EXPECT_THROW(sinusoidal_positions(4, 3), gdn::Error);
}

// MAD's auto-encoder decoder: the code's gradient (summed over every decoded position) and
// each parameter's, against finite differences.
TEST_P(LayerCheck, AutoencoderDecoder) {
  AutoencoderDecoder<double> dec;
  dec.init(6, 1e-6, rng, 0.5);
  for (Param<double>* p : {&dec.fc1.bias, &dec.fc2.bias, &dec.norm1.weight, &dec.norm2.weight}) p->normal(rng, 0.5);
  const int B = 2, T = 5;
  auto code = randn(rng, size_t(B) * 6);
  ParamList<double> ps;
  dec.collect("decoder", ps);
  ASSERT_EQ(ps.size(), 6u);
  check_layer("autoencoder decoder", code, size_t(B) * T * 6, ps,
              [&](std::vector<double>& y) { dec.forward(code.data(), B, T, y.data()); },
              [&](const std::vector<double>& dy, std::vector<double>& dcode) { dec.backward(dy.data(), dcode.data()); },
              rng);
  // Row b * T + t depends on sequence b's code only, and differs between positions.
  std::vector<double> y0(size_t(B) * T * 6), y1(y0.size());
  dec.forward(code.data(), B, T, y0.data());
  code[6] += 1.0;
  dec.forward(code.data(), B, T, y1.data());
  for (size_t i = 0; i < size_t(T) * 6; ++i) EXPECT_EQ(y0[i], y1[i]) << "sequence 0 moved with sequence 1's code";
  EXPECT_NE(y0[0], y0[6]) << "positions 0 and 1 decode alike";
}

TEST_P(LayerCheck, RMSNorm) {
  RMSNorm<double> norm;
  norm.init(9, 1e-6);
  norm.weight.normal(rng, 1.0);
  const int n = 5;
  auto x = randn(rng, size_t(n) * 9);
  ParamList<double> ps;
  norm.collect("norm", ps);
  check_layer("rmsnorm", x, x.size(), ps, [&](std::vector<double>& y) { norm.forward(x.data(), n, y.data()); },
              [&](const std::vector<double>& dy, std::vector<double>& dx) { norm.backward(dy.data(), dx.data(), false); },
              rng);
}

TEST_P(LayerCheck, GatedRMSNorm) {
  GatedRMSNorm<double> norm;
  norm.init(8, 1e-6);
  norm.weight.normal(rng, 1.0);
  const int rows = 6;
  auto x = randn(rng, size_t(rows) * 8), z = randn(rng, size_t(rows) * 8, 2.0);
  ParamList<double> ps;
  norm.collect("o_norm", ps);
  std::vector<double> dz(z.size());
  auto fwd = [&](std::vector<double>& y) { norm.forward(x.data(), z.data(), rows, y.data()); };
  check_layer("gated_rmsnorm", x, x.size(), ps, fwd,
              [&](const std::vector<double>& dy, std::vector<double>& dx) { norm.backward(dy.data(), dx.data(), dz.data()); },
              rng);
  // dz separately: the same loss, perturbing z
  std::vector<double> y(x.size()), r = randn(rng, x.size()), dx(x.size());
  fwd(y);
  norm.backward(r.data(), dx.data(), dz.data());
  expect_grad("gated_rmsnorm dz", z, dz, [&] { fwd(y); return dot(y, r); }, rng);
}

TEST_P(LayerCheck, ShortConv) {
  using Act = ShortConv<double>::Activation;
  for (auto [act, name] : {std::pair{Act::silu, "conv+silu"}, {Act::elu_plus_one, "conv+elu+1"}, {Act::none, "conv"}}) {
    ShortConv<double> conv;
    conv.init(5, 4, rng);
    conv.activation = act;
    const int B = 2, T = 7;
    auto x = randn(rng, size_t(B) * T * 5);
    ParamList<double> ps;
    conv.collect("conv", ps);
    // elu + 1 has a jump in its second derivative at 0, which central differences feel there.
    check_layer(name, x, x.size(), ps,
                [&](std::vector<double>& y) { conv.forward(x.data(), B, T, y.data()); },
                [&](const std::vector<double>& dy, std::vector<double>& dx) { conv.backward(dy.data(), dx.data()); }, rng,
                act == Act::elu_plus_one ? kDeepTol : 1e-6);
  }
}

// The convolution is causal and per sequence: changing token t of row b changes only
// outputs t .. t + width - 1 of that row.
TEST_P(LayerCheck, ShortConvIsCausal) {
  ShortConv<double> conv;
  conv.init(3, 4, rng);
  const int B = 2, T = 9;
  auto x = randn(rng, size_t(B) * T * 3);
  std::vector<double> y0(x.size()), y1(x.size());
  conv.forward(x.data(), B, T, y0.data());
  const int t = 3;
  x[(size_t(1) * T + t) * 3 + 1] += 1.0;
  conv.forward(x.data(), B, T, y1.data());
  for (int b = 0; b < B; ++b)
    for (int s = 0; s < T; ++s)
      for (int c = 0; c < 3; ++c) {
        const size_t i = (size_t(b) * T + s) * 3 + c;
        const bool may_change = b == 1 && c == 1 && s >= t && s < t + 4;
        if (!may_change) EXPECT_EQ(y0[i], y1[i]) << "b=" << b << " s=" << s << " c=" << c;
      }
}

TEST_P(LayerCheck, Embedding) {
  Embedding<double> emb;
  emb.init(11, 4, rng, 1.0);
  std::vector<int32_t> ids = {3, 0, 10, 3, 7};
  std::vector<double> none;
  ParamList<double> ps;
  emb.collect("emb", ps);
  check_layer("embedding", none, ids.size() * 4, ps,
              [&](std::vector<double>& y) { emb.forward(ids.data(), int(ids.size()), y.data()); },
              [&](const std::vector<double>& dy, std::vector<double>&) { emb.backward(dy.data()); }, rng);
  ids[2] = 11;
  std::vector<double> y(ids.size() * 4);
  EXPECT_THROW(emb.forward(ids.data(), int(ids.size()), y.data()), gdn::Error);
}

TEST_P(LayerCheck, SwiGLU) {
  SwiGLU<double> mlp;
  mlp.init(6, 10, rng, 0.5, 0.5);
  const int n = 5;
  auto x = randn(rng, size_t(n) * 6);
  ParamList<double> ps;
  mlp.collect("mlp", ps);
  check_layer("swiglu", x, x.size(), ps, [&](std::vector<double>& y) { mlp.forward(x.data(), n, y.data()); },
              [&](const std::vector<double>& dy, std::vector<double>& dx) { mlp.backward(dy.data(), dx.data()); }, rng);
}

TEST_P(LayerCheck, LMHeadLoss) {
  const int n = 7, D = 5, vocab = 13;
  Param<double> head;
  head.init({vocab, D}, true);
  head.normal(rng, 1.0);
  auto h = randn(rng, size_t(n) * D);
  std::vector<int32_t> labels = {kIgnoreIndex, 4, 12, kIgnoreIndex, 0, 4, kIgnoreIndex};
  LMHeadLoss<double> ce;
  auto loss = [&] { return ce.forward(h.data(), labels.data(), n, D, head).loss; };
  const LossStats st = ce.forward(h.data(), labels.data(), n, D, head);
  EXPECT_EQ(st.count, 4);
  std::vector<double> dh(h.size(), 7.0);
  ce.backward(dh.data(), head);
  for (int i : {0, 3, 6})
    for (int d = 0; d < D; ++d) EXPECT_EQ(dh[size_t(i) * D + d], 0.0) << "unlabelled row " << i;
  expect_grad("ce dh", h, dh, loss, rng);
  const std::vector<double> g = head.grad;
  expect_grad("ce head", head.value, g, loss, rng);
  // With a bias (the autoencoder head's).
  Param<double> bias;
  bias.init({vocab}, false);
  bias.normal(rng, 1.0);
  auto biased = [&] { return ce.forward(h.data(), labels.data(), n, D, head, &bias).loss; };
  EXPECT_NE(biased(), loss());
  std::fill(head.grad.begin(), head.grad.end(), 0.0);
  biased();
  ce.backward(dh.data(), head, &bias);
  expect_grad("ce+bias dh", h, dh, biased, rng);
  const std::vector<double> gb = bias.grad, gh = head.grad;
  expect_grad("ce+bias bias", bias.value, gb, biased, rng);
  expect_grad("ce+bias head", head.value, gh, biased, rng);
  labels[1] = vocab;
  EXPECT_THROW(ce.forward(h.data(), labels.data(), n, D, head), gdn::Error);
}

TEST_P(LayerCheck, Attention) {
  struct Case {
    int heads, kv_heads, window;
  };
  for (Case c : {Case{2, 2, 0}, Case{4, 2, 3}, Case{2, 1, 1}}) {
    ModelConfig cfg;
    cfg.d_model = 8;
    cfg.attn_heads = c.heads;
    cfg.attn_kv_heads = c.kv_heads;
    cfg.attn_head_dim = 4;
    Attention<double> attn(cfg, c.window, rng, 0.5);
    for (Linear<double>* l : {&attn.q_proj, &attn.k_proj, &attn.v_proj}) l->weight.normal(rng, 0.5);
    const int B = 2, T = 6;
    auto x = randn(rng, size_t(B) * T * 8);
    ParamList<double> ps;
    attn.collect("attn", ps);
    check_layer(cat("attention h", c.heads, " kv", c.kv_heads, " w", c.window), x, x.size(), ps,
                [&](std::vector<double>& y) { attn.forward(x.data(), B, T, y.data()); },
                [&](const std::vector<double>& dy, std::vector<double>& dx) { attn.backward(dy.data(), dx.data()); },
                rng, kDeepTol);
  }
}

// Sliding window: token i must not see tokens <= i - window.
TEST_P(LayerCheck, AttentionWindowIsRespected) {
  ModelConfig cfg;
  cfg.d_model = 8;
  cfg.attn_heads = 2;
  cfg.attn_head_dim = 4;
  Attention<double> attn(cfg, 3, rng, 0.5);
  const int T = 8;
  auto x = randn(rng, size_t(T) * 8);
  std::vector<double> y0(x.size()), y1(x.size());
  attn.forward(x.data(), 1, T, y0.data());
  x[1 * 8 + 2] += 1.0;  // token 1 is visible to 1, 2, 3 only
  attn.forward(x.data(), 1, T, y1.data());
  for (int t = 0; t < T; ++t) {
    double diff = 0;
    for (int d = 0; d < 8; ++d) diff += std::abs(y0[t * 8 + d] - y1[t * 8 + d]);
    if (t >= 1 && t <= 3) {
      EXPECT_GT(diff, 0) << "t=" << t;
    } else {
      EXPECT_EQ(diff, 0) << "t=" << t;
    }
  }
}

// The checker itself where the loss curves sharply: the L2 norm of a 4-vector of norm 1e-3
// (a fixed step of 1e-4 is off by about 1e-4 relative there). It must pass the exact
// gradient and still catch one that is off by 1e-4.
TEST_P(LayerCheck, FiniteDifferencesAtNearlyZeroL2Norm) {
  auto x = randn(rng, 4);
  const double to_norm = 1e-3 / std::sqrt(dot(x, x));
  for (auto& e : x) e *= to_norm;
  const auto r = randn(rng, 4);
  auto loss = [&] { return dot(x, r) / std::sqrt(dot(x, x)); };  // <x / |x|, r>
  const double n = std::sqrt(dot(x, x)), y_dot_r = dot(x, r) / n;
  std::vector<double> grad(4), off(4);
  for (int d = 0; d < 4; ++d) {
    grad[d] = (r[d] - x[d] / n * y_dot_r) / n;
    off[d] = grad[d] * (1 + 1e-4);
  }
  expect_grad("l2norm", x, grad, loss, rng);
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter intercept(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    expect_grad("l2norm, gradient off by 1e-4", x, off, loss, rng);
  }
  EXPECT_EQ(failures.size(), 1) << "a gradient off by 1e-4 passed the check";
}

INSTANTIATE_TEST_SUITE_P(Seeds, LayerCheck, ::testing::Values(uint64_t(1), uint64_t(20261125), gdn::test::fresh_seed()));

}  // namespace

namespace {

// Every member of the family in the shared layer shell, differentiated through the op's
// fp64 reference; with grouped value heads and negative eigenvalues where they apply.
struct MixerCheck : ::testing::TestWithParam<std::tuple<std::string, uint64_t>> {};

TEST_P(MixerCheck, Gradients) {
  const auto& [name, seed] = GetParam();
  Rng rng(seed);
  for (int v_heads : {2, 4}) {
    ModelConfig cfg;
    cfg.d_model = 8;
    cfg.heads = 2;
    cfg.v_heads = v_heads;
    cfg.head_dim = 4;
    cfg.expand_v = 1.5;
    cfg.allow_neg_eigval = v_heads == 4;
    DeltaMixer<double> mixer(cfg, parse_variant(name), rng, 0.5);
    // Larger weights than the init, so that every path carries a visible gradient.
    ParamList<double> ps;
    mixer.collect("attn", ps);
    for (auto& [n, p] : ps)
      if (n.find("proj") != std::string::npos) p->normal(rng, 0.4);
    const int B = 2, T = 5;
    auto x = randn(rng, size_t(B) * T * 8);
    check_layer(cat(name, " v_heads ", v_heads), x, x.size(), ps,
                [&](std::vector<double>& y) { mixer.forward(x.data(), B, T, y.data()); },
                [&](const std::vector<double>& dy, std::vector<double>& dx) { mixer.backward(dy.data(), dx.data()); },
                rng, kDeepTol);
  }
}

std::vector<std::string> family_names() {
  std::vector<std::string> names;
  for (const auto& v : all_variants()) names.push_back(v.name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(Family, MixerCheck,
                         ::testing::Combine(::testing::ValuesIn(family_names()),
                                            ::testing::Values(uint64_t(7), gdn::test::fresh_seed())));

}  // namespace
