// Loss and every parameter gradient of small fp32 gdn models (GDN, H1, H2) against the
// independent PyTorch implementation in tests/torch/model_torch.py (fp64), as llm.c checks
// itself against PyTorch. Skipped when python3 with torch is not installed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "gdn/common.h"
#include "gdn/nn/model.h"
#include "gdn/safetensors.h"
#include "gradcheck.h"

using namespace gdn;
using namespace gdn::nn;

namespace {

// The first interpreter that imports torch (Debian's python3-torch lives in /usr/bin's
// python3, which a pyenv or venv python3 on PATH may hide); empty when none does.
const std::string& torch_python() {
  static const std::string found = [] {
    for (const char* py : {"python3", "/usr/bin/python3"})
      if (std::system(cat(py, " -c 'import torch' >/dev/null 2>&1").c_str()) == 0) return std::string(py);
    return std::string();
  }();
  return found;
}

struct TorchModel : ::testing::TestWithParam<std::string> {};

TEST_P(TorchModel, LossAndGradients) {
  if (torch_python().empty()) GTEST_SKIP() << "python3 with torch not found";
  const std::string which = GetParam();
  ModelConfig c;
  c.vocab_size = 50;
  c.d_model = 32;
  c.heads = 2;
  c.head_dim = 8;
  c.mlp_hidden = 48;
  c.window = 5;
  c.attn_heads = 4;
  c.attn_kv_heads = 2;
  c.init_std = 0.1;
  if (which == "gdn") {
    c.layers = 2;
    c.mixers = {"gated_deltanet"};
    c.v_heads = 4;  // grouped value heads
    c.expand_v = 2;
  } else if (which == "h1") {
    c.layers = 2;
    c.mixers = {"gated_deltanet", "swa"};
    c.allow_neg_eigval = true;
  } else if (which == "h2") {
    c.layers = 3;
    c.mixers = {"mamba2", "gated_deltanet", "attention"};
    c.tie_embeddings = true;
  } else {  // MAD's auto-encoder
    c.layers = 2;
    c.mixers = {"deltanet", "attention"};
    c.head = "autoencoder";
  }
  const uint64_t seed = test::fresh_seed();
  Model<float> model(c, seed);
  Rng rng(seed + 1);
  // Biases start at zero; nonzero ones check that the forward uses them.
  for (const auto& [name, p] : model.params())
    if (name.ends_with(".bias")) p->normal(rng, 0.5);
  const int B = 2, T = 19;
  std::vector<int32_t> ids(B * T), labels(B * T);
  for (auto& x : ids) x = int32_t(rng.below(c.vocab_size));
  for (auto& x : labels) x = rng.uniform() < 0.25 ? kIgnoreIndex : int32_t(rng.below(c.vocab_size));
  model.zero_grad();
  const LossStats st = model.forward(ids.data(), labels.data(), B, T);
  model.backward();

  SafeTensorsWriter w;
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [name, p] : model.params()) {
    w.add_f32(name, p->shape, p->value.data());
    w.add_f32("grad." + name, p->shape, p->grad.data());
    names.push_back(name);
  }
  w.add_i32("ids", {B, T}, ids.data());
  w.add_i32("labels", {B, T}, labels.data());
  w.set_metadata("model_config", c.to_json().dump());
  w.set_metadata("params", names.dump());
  w.set_metadata("loss", cat(std::scientific, st.loss));
  const auto dir = std::filesystem::temp_directory_path() / cat("gdn_torch_", ::getpid());
  std::filesystem::create_directories(dir);
  const std::string dump = (dir / (which + ".safetensors")).string();
  w.write(dump);
  const std::string script = (std::filesystem::path(__FILE__).parent_path() / "torch" / "model_torch.py").string();
  const std::string cmd = cat(torch_python(), " ", script, " ", dump, " 2>&1");
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, pipe)) out += buf;
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << "seed " << seed << "\n" << out;
  std::printf("%s", out.c_str());
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Models, TorchModel, ::testing::Values("gdn", "h1", "h2", "ae"));

}  // namespace
