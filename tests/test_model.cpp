// Whole models: fp64 finite-difference gradients of the loss for every parameter, FLA
// names, and clear errors for malformed or unknown configurations.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <nlohmann/json.hpp>

#include "gdn/common.h"
#include "gdn/nn/model.h"
#include "gradcheck.h"

using namespace gdn;
using namespace gdn::nn;

namespace {

ModelConfig tiny(std::vector<std::string> mixers, int layers) {
  ModelConfig c;
  c.vocab_size = 13;
  c.d_model = 8;
  c.layers = layers;
  c.mixers = std::move(mixers);
  c.heads = 2;
  c.head_dim = 4;
  c.attn_heads = 2;
  c.attn_kv_heads = 1;
  c.window = 3;
  c.mlp_hidden = 12;
  c.init_std = 0.3;  // large enough that every path carries gradient
  return c;
}

struct ModelGrad : ::testing::TestWithParam<std::tuple<std::string, uint64_t>> {};

TEST_P(ModelGrad, EveryParameter) {
  const auto& [which, seed] = GetParam();
  ModelConfig cfg = which == "gdn"  ? tiny({"gated_deltanet"}, 2)
                    : which == "h1" ? tiny({"gated_deltanet", "swa"}, 2)
                                    : tiny({"mamba2", "gated_deltanet", "attention"}, 3);
  cfg.tie_embeddings = which == "h2";
  Model<double> model(cfg, seed);
  Rng rng(seed + 1);
  const int B = 2, T = 7;
  std::vector<int32_t> ids(B * T), labels(B * T);
  for (auto& x : ids) x = int32_t(rng.below(cfg.vocab_size));
  for (auto& x : labels) x = rng.uniform() < 0.3 ? kIgnoreIndex : int32_t(rng.below(cfg.vocab_size));
  labels[3] = 5;
  model.zero_grad();
  model.forward(ids.data(), labels.data(), B, T);
  model.backward();
  auto loss = [&] { return model.forward(ids.data(), labels.data(), B, T).loss; };
  for (auto& [name, p] : model.params()) {
    const std::vector<double> g = p->grad;
    test::expect_grad(name, p->value, g, loss, rng, 12, 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ModelGrad,
                         ::testing::Combine(::testing::Values("gdn", "h1", "h2"),
                                            ::testing::Values(uint64_t(3), test::fresh_seed())));

TEST(Model, FlaNames) {
  ModelConfig cfg = tiny({"gated_deltanet", "swa"}, 2);
  Model<float> model(cfg, 0);
  for (const char* name :
       {"model.embeddings.weight", "model.layers.0.attn_norm.weight", "model.layers.0.attn.q_proj.weight",
        "model.layers.0.attn.k_proj.weight", "model.layers.0.attn.v_proj.weight", "model.layers.0.attn.a_proj.weight",
        "model.layers.0.attn.b_proj.weight", "model.layers.0.attn.A_log", "model.layers.0.attn.dt_bias",
        "model.layers.0.attn.q_conv1d.weight", "model.layers.0.attn.g_proj.weight", "model.layers.0.attn.o_norm.weight",
        "model.layers.0.attn.o_proj.weight", "model.layers.0.mlp_norm.weight", "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight", "model.layers.1.attn.q_proj.weight",
        "model.layers.1.attn.o_proj.weight", "model.norm.weight", "lm_head.weight"})
    EXPECT_NE(model.find(name), nullptr) << name;
  EXPECT_EQ(model.find("model.layers.1.attn.A_log"), nullptr);
  EXPECT_EQ(model.find("model.layers.0.attn.q_conv1d.weight")->shape, (std::vector<int64_t>{8, 1, 4}));
  EXPECT_FALSE(model.find("model.layers.0.attn.A_log")->decay);
  EXPECT_FALSE(model.find("model.layers.0.attn.dt_bias")->decay);
  EXPECT_FALSE(model.find("model.norm.weight")->decay);
  EXPECT_TRUE(model.find("model.layers.0.attn.q_proj.weight")->decay);
}

// The decay gates start with dt = softplus(dt_bias) inside gate_dt_range (log-uniform), for
// every mixer that has them, and spread over it.
TEST(Model, GateDtInitRange) {
  ModelConfig cfg = tiny({"gated_deltanet", "mamba2", "kda"}, 3);
  cfg.heads = 8;
  for (const std::array<double, 2> range : {std::array<double, 2>{1e-3, 0.1}, {1e-5, 1e-4}, {0.02, 0.02}}) {
    cfg.gate_dt_range = range;
    Model<double> model(cfg, test::fresh_seed());
    double lo = 1e300, hi = 0;
    for (const char* name : {"model.layers.0.attn.dt_bias", "model.layers.1.attn.dt_bias", "model.layers.2.attn.dt_bias"}) {
      for (double b : model.find(name)->value) {
        const double dt = std::log1p(std::exp(b));
        lo = std::min(lo, dt);
        hi = std::max(hi, dt);
      }
    }
    EXPECT_GE(lo, range[0] * (1 - 1e-9)) << range[0] << ", " << range[1];
    EXPECT_LE(hi, range[1] * (1 + 1e-9)) << range[0] << ", " << range[1];
    // 48 draws (8 + 8 + 8 * head_dim) cover most of the log range unless it is a point.
    if (range[0] < range[1]) EXPECT_GT(std::log(hi / lo), 0.5 * std::log(range[1] / range[0])) << range[0] << ", " << range[1];
  }
}

// A config error message must name what is wrong.
void expect_config_error(const nlohmann::json& j, const std::string& needle) {
  try {
    ModelConfig::from_json(j);
    ADD_FAILURE() << "accepted " << j.dump();
  } catch (const gdn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, Errors) {
  expect_config_error({{"mixers", {"gated_deltanet", "transformer"}}}, "unknown mixer \"transformer\"");
  expect_config_error({{"d_modle", 64}}, "unknown field \"d_modle\"");
  expect_config_error({{"d_model", "wide"}}, "d_model");
  expect_config_error({{"d_model", 0}}, "d_model must be > 0");
  expect_config_error({{"heads", 3}, {"v_heads", 4}}, "multiple of heads");
  expect_config_error({{"chunk_size", 48}}, "chunk_size");
  expect_config_error({{"mixers", {"swa"}}, {"attn_heads", 4}, {"attn_kv_heads", 3}}, "attn_kv_heads");
  expect_config_error({{"mixers", nlohmann::json::array()}}, "at least one mixer");
  expect_config_error(nlohmann::json::array({1, 2}), "JSON object");
  expect_config_error({{"gate_dt_range", {0.1, 0.01}}}, "gate_dt_range must be [min, max]");
  expect_config_error({{"gate_dt_range", {0.0, 0.01}}}, "gate_dt_range must be [min, max]");
  expect_config_error({{"gate_dt_range", {1e-3, 1e-2, 0.1}}}, "gate_dt_range must be [min, max]");
  EXPECT_THROW(ModelConfig::load("/nonexistent/model.json"), gdn::Error);
}

TEST(ModelConfig, RoundTrip) {
  ModelConfig c = tiny({"mamba2", "gated_deltanet", "swa"}, 3);
  c.gate_dt_range = {1e-4, 2e-3};
  const ModelConfig d = ModelConfig::from_json(c.to_json());
  EXPECT_EQ(c.to_json(), d.to_json());
}

TEST(Model, RejectsBadTokens) {
  Model<float> model(tiny({"gated_deltanet"}, 1), 0);
  std::vector<int32_t> ids = {1, 2, 13}, labels = {1, -100, 2};
  EXPECT_THROW(model.forward(ids.data(), labels.data(), 1, 3), gdn::Error);
  ids[2] = 3;
  labels[1] = -7;
  EXPECT_THROW(model.forward(ids.data(), labels.data(), 1, 3), gdn::Error);
}

}  // namespace
