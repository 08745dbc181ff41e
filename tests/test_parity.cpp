// Parity with the reference implementations: the fixtures of tests/fixtures (written by
// tests/fixtures/make_fixtures.py from transformers and FLA) hold tiny random models and
// the logits their libraries computed; gdn must match them in fp32, for a prefill and for
// decode steps. The loading errors and the constant-size decode state are tested here too.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "gdn/common.h"
#include "gdn/infer.h"
#include "gdn/nn/model.h"
#include "gdn/safetensors.h"

namespace fs = std::filesystem;
using gdn::infer::Model;

namespace {

const fs::path kFixtures = fs::path(GDN_SOURCE_DIR) / "tests" / "fixtures";

double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

struct Reference {
  std::vector<int32_t> prompt, decode;
  std::vector<float> prefill_logits, decode_logits;
  int vocab = 0;
};

Reference read_reference(const fs::path& dir) {
  const auto f = gdn::SafeTensorsFile::load((dir / "reference.safetensors").string());
  Reference r;
  r.prompt = f.get_i32("prompt_ids");
  r.decode = f.get_i32("decode_ids");
  r.prefill_logits = f.get_f32("prefill_logits");
  r.decode_logits = f.get_f32("decode_logits");
  r.vocab = int(f.info("prefill_logits").shape.at(1));
  return r;
}

// Prefill over the prompt (logits at every position), then one token at a time.
void expect_parity(Model& model, const Reference& ref, gdn::Form form, double tol) {
  const int P = int(ref.prompt.size()), V = ref.vocab;
  ASSERT_EQ(model.config().vocab, V);
  auto state = model.new_state();
  std::vector<float> logits(size_t(P) * V, NAN), last(size_t(V), NAN);
  model.forward(state, ref.prompt.data(), P, last.data(), logits.data(), form);
  const double e_prefill = rel_err(logits.data(), ref.prefill_logits.data(), logits.size());
  EXPECT_LE(e_prefill, tol) << "prefill logits, form " << gdn::form_name(form);
  // Conv and recurrent states have a fixed size; attention caches are checked for bounded
  // growth in RandomHybridPrefillEqualsDecodeSteps (sliding windows trim in amortised steps).
  auto fixed_bytes = [](const auto& s) {
    size_t n = s.bytes();
    for (const auto& l : s.layers) n -= (l.keys.size() + l.values.size()) * sizeof(float);
    return n;
  };
  const size_t state_bytes = fixed_bytes(state);
  for (size_t i = 0; i < ref.decode.size(); ++i) {
    std::fill(last.begin(), last.end(), NAN);
    model.forward(state, &ref.decode[i], 1, last.data());
    const double e = rel_err(last.data(), ref.decode_logits.data() + i * V, size_t(V));
    EXPECT_LE(e, tol) << "decode step " << i;
  }
  EXPECT_EQ(state.position, P + int64_t(ref.decode.size()));
  EXPECT_EQ(fixed_bytes(state), state_bytes);
  std::printf("  prefill rel err %.2e (%s), %zu decode steps\n", e_prefill, gdn::form_name(form), ref.decode.size());
}

fs::path fixture(const std::string& name) {
  const fs::path d = kFixtures / name;
  if (!fs::exists(d / "reference.safetensors")) return {};
  return d;
}

// A copy of a fixture directory in a fresh temporary directory.
fs::path copy_fixture(const fs::path& src, const std::string& tag) {
  const fs::path dst = fs::temp_directory_path() / ("gdn_parity_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(dst);
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(src)) fs::copy_file(e.path(), dst / e.path().filename());
  return dst;
}

}  // namespace

TEST(Parity, Qwen3NextPrefillAndDecode) {
  const fs::path dir = fixture("qwen3_next");
  ASSERT_FALSE(dir.empty()) << "missing fixture " << (kFixtures / "qwen3_next");
  Model model = Model::load(dir.string());
  EXPECT_EQ(model.config().layout, gdn::infer::Layout::qwen3_next);
  const Reference ref = read_reference(dir);
  expect_parity(model, ref, gdn::Form::chunk, 1e-4);
  expect_parity(model, ref, gdn::Form::recurrent, 1e-4);
}

TEST(Parity, FlaGatedDeltaNetHybridPrefillAndDecode) {
  const fs::path dir = fixture("fla_gdn");
  ASSERT_FALSE(dir.empty()) << "missing fixture " << (kFixtures / "fla_gdn");
  Model model = Model::load(dir.string());
  EXPECT_EQ(model.config().layout, gdn::infer::Layout::fla);
  const Reference ref = read_reference(dir);
  expect_parity(model, ref, gdn::Form::chunk, 1e-4);
}

// bf16 weights on disk: every tensor is the fp32 one rounded to bf16, and the logits stay
// within bf16 accuracy of the fp32 reference.
TEST(Parity, Qwen3NextBf16Weights) {
  const fs::path dir = fixture("qwen3_next");
  ASSERT_FALSE(dir.empty());
  const auto f32 = gdn::SafeTensorsFile::load((dir / "model.safetensors").string());
  const auto b16 = gdn::SafeTensorsFile::load((dir / "model.bf16.safetensors").string());
  ASSERT_EQ(f32.names(), b16.names());
  for (const auto& name : f32.names()) {
    ASSERT_EQ(b16.info(name).dtype, gdn::DType::BF16) << name;
    const auto a = f32.get_f32(name), b = b16.get_f32(name);
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_EQ(b[i], gdn::bf16_to_f32(gdn::f32_to_bf16(a[i]))) << name << "[" << i << "]";
  }
  const fs::path tmp = copy_fixture(dir, "bf16");
  fs::rename(tmp / "model.bf16.safetensors", tmp / "model.safetensors");
  Model model = Model::load(tmp.string());
  const Reference ref = read_reference(dir);
  auto state = model.new_state();
  std::vector<float> logits(ref.prefill_logits.size());
  model.forward(state, ref.prompt.data(), int(ref.prompt.size()), nullptr, logits.data());
  const double e = rel_err(logits.data(), ref.prefill_logits.data(), logits.size());
  EXPECT_LE(e, 3e-2);
  EXPECT_GE(e, 1e-6) << "bf16 weights gave the fp32 logits exactly: were they rounded?";
  fs::remove_all(tmp);
}

// The same weights split over two shards with model.safetensors.index.json.
TEST(Parity, Qwen3NextShardedCheckpoint) {
  const fs::path dir = fixture("qwen3_next");
  ASSERT_FALSE(dir.empty());
  const fs::path tmp = copy_fixture(dir, "sharded");
  fs::remove(tmp / "model.bf16.safetensors");
  const auto full = gdn::SafeTensorsFile::load((tmp / "model.safetensors").string());
  fs::remove(tmp / "model.safetensors");
  gdn::SafeTensorsWriter shard[2];
  nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
  const auto names = full.names();
  for (size_t i = 0; i < names.size(); ++i) {
    const int s = i % 2;
    const auto v = full.get_f32(names[i]);
    shard[s].add_f32(names[i], full.info(names[i]).shape, v.data());
    index["weight_map"][names[i]] = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
  }
  for (int s = 0; s < 2; ++s)
    shard[s].write((tmp / ("model-0000" + std::to_string(s + 1) + "-of-00002.safetensors")).string());
  std::ofstream(tmp / "model.safetensors.index.json") << index.dump(1);
  Model model = Model::load(tmp.string());
  expect_parity(model, read_reference(dir), gdn::Form::chunk, 1e-4);
  fs::remove_all(tmp);
}

// Bad checkpoints fail with an error that names the tensor or the key.
TEST(Parity, LoadErrorsNameTheProblem) {
  const fs::path dir = fixture("qwen3_next");
  ASSERT_FALSE(dir.empty());
  auto expect_error = [](const fs::path& p, const std::string& needle) {
    try {
      Model::load(p.string());
      ADD_FAILURE() << "no error, expected one naming " << needle;
    } catch (const gdn::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const fs::path tmp = copy_fixture(dir, "errors");
  fs::remove(tmp / "model.bf16.safetensors");
  const auto cfg_text = [&] {
    std::ifstream f(dir / "config.json");
    return nlohmann::json::parse(f);
  }();
  auto write_cfg = [&](const nlohmann::json& j) { std::ofstream(tmp / "config.json") << j.dump(); };

  // MoE layers are refused, not misread.
  auto moe = cfg_text;
  moe["num_experts"] = 8;
  write_cfg(moe);
  expect_error(tmp, "mixture-of-experts");

  // A shape that does not match the config.
  auto wide = cfg_text;
  wide["intermediate_size"] = int(wide["intermediate_size"]) + 1;
  write_cfg(wide);
  expect_error(tmp, "mlp.gate_proj.weight");

  // A missing tensor.
  write_cfg(cfg_text);
  {
    const auto full = gdn::SafeTensorsFile::load((dir / "model.safetensors").string());
    gdn::SafeTensorsWriter w;
    for (const auto& name : full.names())
      if (name != "model.layers.2.linear_attn.A_log") {
        const auto v = full.get_f32(name);
        w.add_f32(name, full.info(name).shape, v.data());
      }
    w.write((tmp / "model.safetensors").string());
  }
  expect_error(tmp, "model.layers.2.linear_attn.A_log");

  // Unsupported options.
  auto rope = cfg_text;
  rope["rope_parameters"]["rope_type"] = "yarn";
  write_cfg(rope);
  expect_error(tmp, "rope_type");
  auto type = cfg_text;
  type["model_type"] = "llama";
  write_cfg(type);
  expect_error(tmp, "model_type");
  fs::remove_all(tmp);
}

// A random GDN + SWA model: the chunk prefill equals token-by-token decode, and the state
// stays the same size however long the context (the SWA cache is a window).
TEST(Parity, RandomHybridPrefillEqualsDecodeSteps) {
  gdn::infer::Config c;
  c.vocab = 97;
  c.d_model = 48;
  c.mlp_hidden = 64;
  c.attention = {false, true, false};
  c.window = {0, 16, 0};
  c.heads = 2;
  c.v_heads = 4;
  c.head_k = 16;
  c.head_v = 12;
  c.attn_heads = 4;
  c.attn_kv_heads = 2;
  c.attn_head_dim = 12;
  c.rotary_dim = 12;
  const uint64_t seed = std::random_device{}();
  Model model = Model::random(c, seed);
  std::mt19937 gen{uint32_t(seed)};
  const int T = 150;
  std::vector<int32_t> ids(T);
  for (auto& id : ids) id = int32_t(gen() % uint32_t(c.vocab));
  auto full = model.new_state();
  std::vector<float> all(size_t(T) * c.vocab), step(size_t(c.vocab));
  model.forward(full, ids.data(), T, nullptr, all.data(), gdn::Form::chunk);
  auto st = model.new_state();
  size_t early_max = 0;  // the largest state over the first 4 windows
  for (int t = 0; t < T; ++t) {
    model.forward(st, &ids[size_t(t)], 1, step.data());
    ASSERT_LE(rel_err(step.data(), all.data() + size_t(t) * c.vocab, step.size()), 1e-4)
        << "token " << t << " seed " << seed;
    if (t < 4 * 16)
      early_max = std::max(early_max, st.bytes());
    else
      ASSERT_LE(st.bytes(), early_max) << "the state grew at token " << t;
  }
  // A prompt longer than a prefill piece (4096 tokens) runs in pieces: the same logits.
  const int L = 5000;
  std::vector<int32_t> long_ids(L);
  for (auto& id : long_ids) id = int32_t(gen() % uint32_t(c.vocab));
  std::vector<float> every(size_t(L) * c.vocab), last(size_t(c.vocab));
  auto one_call = model.new_state(), pieces = model.new_state();
  model.forward(one_call, long_ids.data(), L, nullptr, every.data());
  model.forward(pieces, long_ids.data(), L, last.data());
  EXPECT_LE(rel_err(last.data(), every.data() + size_t(L - 1) * c.vocab, last.size()), 1e-4) << "seed " << seed;
}

// A training model (gdn::nn) with weights far from the initialisation, so that every part
// changes the loss, and the loss of its training forward on random tokens.
struct TrainedModel {
  gdn::nn::ModelConfig mc;
  std::unique_ptr<gdn::nn::Model<float>> model;
  std::vector<int32_t> ids, labels;
  double loss = 0;
};

TrainedModel trained_model(uint64_t seed) {
  TrainedModel t;
  auto& mc = t.mc;
  mc.vocab_size = 64;
  mc.d_model = 32;
  mc.layers = 3;
  mc.mixers = {"gated_deltanet", "swa"};
  mc.heads = 2;
  mc.v_heads = 4;
  mc.head_dim = 16;
  mc.expand_v = 1.5;
  mc.window = 8;
  mc.attn_heads = 4;
  mc.attn_kv_heads = 2;
  mc.mlp_hidden = 48;
  t.model = std::make_unique<gdn::nn::Model<float>>(mc, seed);
  gdn::nn::Rng rng(seed + 1);
  for (auto& [name, p] : t.model->params()) {
    if (name.ends_with("A_log") || name.ends_with("dt_bias")) continue;
    const bool norm = name.find("norm") != std::string::npos;
    const double std = norm ? 0.2 : p->shape.size() == 2 ? 1.0 / std::sqrt(double(p->shape[1])) : 0.4;
    for (auto& x : p->value) x = float((norm ? 1.0 : 0.0) + std * rng.normal());
  }
  const int T = 40;
  t.ids.resize(T);
  t.labels.assign(T, -100);
  for (auto& id : t.ids) id = int32_t(rng.below(uint64_t(mc.vocab_size)));
  for (int i = 0; i + 1 < T; ++i) t.labels[size_t(i)] = t.ids[size_t(i) + 1];
  t.loss = t.model->forward(t.ids.data(), t.labels.data(), 1, T).loss;
  return t;
}

// The inference model's mean cross-entropy on the same tokens.
void expect_training_loss(Model& model, const TrainedModel& t, uint64_t seed) {
  const int T = int(t.ids.size()), V = t.mc.vocab_size;
  auto state = model.new_state();
  std::vector<float> logits(size_t(T) * V);
  model.forward(state, t.ids.data(), T, nullptr, logits.data());
  double ce = 0, spread = 0;  // spread: the widest range of one position's logits
  for (int i = 0; i + 1 < T; ++i) {
    const float* l = logits.data() + size_t(i) * V;
    double mx = l[0], mn = l[0], z = 0;
    for (int v = 0; v < V; ++v) mx = std::max(mx, double(l[v])), mn = std::min(mn, double(l[v]));
    for (int v = 0; v < V; ++v) z += std::exp(l[v] - mx);
    ce += std::log(z) + mx - l[t.labels[size_t(i)]];
    spread = std::max(spread, mx - mn);
  }
  ce /= T - 1;
  EXPECT_NEAR(ce, t.loss, 1e-5 * t.loss) << "seed " << seed;
  // Unused weights leave every logit equal (the loss at ln V). Asking the loss itself to be
  // 0.1 away from ln V failed 4% of random models; the logits' spread is what tells.
  EXPECT_GT(spread, 0.1) << "every logit equal: weights unused? seed " << seed;
}

// gdn's own layout: a checkpoint in gdn train's format loads into the inference model,
// whose logits give the training forward's loss.
TEST(Parity, GdnCheckpointMatchesTrainingForward) {
  const uint64_t seed = std::random_device{}();
  const TrainedModel t = trained_model(seed);
  const fs::path file = fs::temp_directory_path() / ("gdn_parity_ckpt_" + std::to_string(::getpid()) + ".safetensors");
  gdn::SafeTensorsWriter w;
  for (const auto& [name, p] : t.model->params()) w.add_f32(name, p->shape, p->value.data());
  w.set_metadata("format", "gdn-checkpoint-1");
  w.set_metadata("model_config", t.mc.to_json().dump());
  w.write(file.string());
  Model model = Model::load(file.string());
  fs::remove(file);
  EXPECT_EQ(model.config().layout, gdn::infer::Layout::gdn);
  expect_training_loss(model, t, seed);
}

// FLA's layout: the same weights under FLA's config.json (GatedDeltaNetConfig keys, its
// hybrid `attn` spec) in bf16. Checks the reading of FLA's config against gdn's own;
// the fla_gdn fixture checks it against FLA.
TEST(Parity, FlaConfigDirectoryMatchesTrainingForward) {
  const uint64_t seed = std::random_device{}();
  TrainedModel t = trained_model(seed);
  const fs::path dir = fs::temp_directory_path() / ("gdn_parity_fla_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto& mc = t.mc;
  const nlohmann::json cfg = {{"model_type", "gated_deltanet"},
                              {"architectures", {"GatedDeltaNetForCausalLM"}},
                              {"vocab_size", mc.vocab_size},
                              {"hidden_size", mc.d_model},
                              {"num_hidden_layers", mc.layers},
                              {"num_heads", mc.heads},
                              {"num_v_heads", mc.v_heads},
                              {"head_dim", mc.head_dim},
                              {"expand_v", mc.expand_v},
                              {"intermediate_size", mc.mlp_hidden},
                              {"norm_eps", mc.norm_eps},
                              {"attn",
                               {{"layers", {1}},
                                {"num_heads", mc.attn_heads},
                                {"num_kv_heads", mc.attn_kv_heads},
                                {"window_size", mc.window},
                                {"rope_theta", mc.rope_theta}}}};
  std::ofstream(dir / "config.json") << cfg.dump(1);
  gdn::SafeTensorsWriter w;
  for (auto& [name, p] : t.model->params()) {
    std::vector<uint16_t> b(p->value.size());
    for (size_t i = 0; i < b.size(); ++i) {
      b[i] = gdn::f32_to_bf16(p->value[i]);
      p->value[i] = gdn::bf16_to_f32(b[i]);  // the training model runs the rounded weights too
    }
    w.add(name, gdn::DType::BF16, p->shape, b.data());
  }
  w.write((dir / "model.safetensors").string());
  t.loss = t.model->forward(t.ids.data(), t.labels.data(), 1, int(t.ids.size())).loss;
  Model model = Model::load(dir.string());
  fs::remove_all(dir);
  EXPECT_EQ(model.config().layout, gdn::infer::Layout::fla);
  expect_training_loss(model, t, seed);
}

// tests/fixtures/sentencepiece/tokenizer.model: a 300-piece unigram model with byte
// fallback, trained by SentencePiece's trainer on a few sentences about the delta rule
// (--normalization_rule_name=identity keeps the file small).
TEST(Tokenizer, SentencePieceRoundTrip) {
  if (!gdn::infer::have_sentencepiece()) GTEST_SKIP() << "built without libsentencepiece";
  gdn::infer::Config cfg;
  cfg.layout = gdn::infer::Layout::fla;
  const auto tok = gdn::infer::make_tokenizer((kFixtures / "sentencepiece").string(), cfg);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->name(), "sentencepiece");
  for (const std::string text : {"the delta rule reads the value", "gated memories fade \xC5\xBE 42"}) {
    const auto ids = tok->encode(text);
    ASSERT_FALSE(ids.empty());
    std::string back;
    for (int32_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, 300);
      back += tok->decode(id);
    }
    EXPECT_EQ(back, " " + text);  // SentencePiece marks the first word's start too
  }
  // Words it was trained on take fewer pieces than bytes.
  const std::string known = "the delta rule reads the value";
  EXPECT_LT(tok->encode(known).size(), known.size() * 2 / 3);
}

TEST(Tokenizer, BytesForGdnModels) {
  gdn::infer::Config cfg;
  cfg.vocab = 256;
  const auto tok = gdn::infer::make_tokenizer("", cfg);
  ASSERT_TRUE(tok);
  const std::string text = "Gated \xCE\x94";
  const auto ids = tok->encode(text);
  ASSERT_EQ(ids.size(), text.size());
  std::string back;
  for (int32_t id : ids) back += tok->decode(id);
  EXPECT_EQ(back, text);
  cfg.layout = gdn::infer::Layout::qwen3_next;  // no tokenizer.json reader: ids only
  EXPECT_FALSE(gdn::infer::make_tokenizer("", cfg));
}
