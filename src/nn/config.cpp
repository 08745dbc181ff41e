#include "gdn/nn/config.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "gdn/common.h"
#include "io/json_fields.h"

namespace gdn::nn {

bool is_attention_mixer(const std::string& name) { return name == "attention" || name == "swa"; }

std::vector<std::string> mixer_names() {
  std::vector<std::string> names;
  for (const auto& v : all_variants()) names.push_back(v.name);
  names.push_back("attention");
  names.push_back("swa");
  return names;
}

int ModelConfig::mlp_size() const {
  if (mlp_hidden != 0) return mlp_hidden;
  const int h = int(d_model * 4 * 2 / 3);  // FLA: hidden_ratio 4, * 2/3, rounded up to 256
  return 256 * ((h + 255) / 256);
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j) {
  GDN_CHECK(j.is_object(), "model config: expected a JSON object, got ", j.type_name());
  const JsonFields fields(j, "model config");
  fields.allow_only({"vocab_size", "d_model", "layers", "mixers", "heads", "v_heads", "head_dim",
                                "expand_v", "conv_size", "allow_neg_eigval", "linear_attention_feature_map",
                                "gate_dt_range", "form", "chunk_size",
                                "attn_heads", "attn_kv_heads", "attn_head_dim", "window", "rope_theta",
                                "mlp_hidden", "tie_embeddings", "norm_eps", "init_std"});
  ModelConfig c;
  fields.read("vocab_size", c.vocab_size);
  fields.read("d_model", c.d_model);
  fields.read("layers", c.layers);
  if (j.contains("mixers") && j["mixers"].is_string()) {
    c.mixers = {j["mixers"].get<std::string>()};
  } else {
    fields.read("mixers", c.mixers);
  }
  fields.read("heads", c.heads);
  fields.read("v_heads", c.v_heads);
  fields.read("head_dim", c.head_dim);
  fields.read("expand_v", c.expand_v);
  fields.read("conv_size", c.conv_size);
  fields.read("allow_neg_eigval", c.allow_neg_eigval);
  fields.read("linear_attention_feature_map", c.linear_attention_feature_map);
  if (j.contains("gate_dt_range")) {
    std::vector<double> range;
    fields.read("gate_dt_range", range);
    GDN_CHECK(range.size() == 2, "model config: gate_dt_range must be [min, max], got ", j["gate_dt_range"].dump());
    c.gate_dt_range = {range[0], range[1]};
  }
  if (j.contains("form")) {
    std::string f;
    fields.read("form", f);
    c.form = parse_form(f);
  }
  fields.read("chunk_size", c.chunk_size);
  fields.read("attn_heads", c.attn_heads);
  fields.read("attn_kv_heads", c.attn_kv_heads);
  fields.read("attn_head_dim", c.attn_head_dim);
  fields.read("window", c.window);
  fields.read("rope_theta", c.rope_theta);
  fields.read("mlp_hidden", c.mlp_hidden);
  fields.read("tie_embeddings", c.tie_embeddings);
  fields.read("norm_eps", c.norm_eps);
  fields.read("init_std", c.init_std);
  c.validate();
  return c;
}

ModelConfig ModelConfig::load(const std::string& path) {
  std::ifstream f(path);
  GDN_CHECK(f.good(), "model config ", path, ": cannot open the file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail("model config ", path, ": not valid JSON: ", e.what());
  }
  try {
    return from_json(j.contains("model") ? j["model"] : j);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

nlohmann::json ModelConfig::to_json() const {
  return {{"vocab_size", vocab_size}, {"d_model", d_model},     {"layers", layers},
          {"mixers", mixers},         {"heads", heads},         {"v_heads", v_heads},
          {"head_dim", head_dim},     {"expand_v", expand_v},   {"conv_size", conv_size},
          {"allow_neg_eigval", allow_neg_eigval},
          {"linear_attention_feature_map", linear_attention_feature_map}, {"gate_dt_range", gate_dt_range},
          {"form", form_name(form)},
          {"chunk_size", chunk_size}, {"attn_heads", attn_heads}, {"attn_kv_heads", attn_kv_heads},
          {"attn_head_dim", attn_head_dim}, {"window", window}, {"rope_theta", rope_theta},
          {"mlp_hidden", mlp_hidden}, {"tie_embeddings", tie_embeddings}, {"norm_eps", norm_eps},
          {"init_std", init_std}};
}

void ModelConfig::validate() const {
  auto positive = [](const char* name, double v) { GDN_CHECK(v > 0, "model config: ", name, " must be > 0, got ", v); };
  positive("vocab_size", vocab_size);
  positive("d_model", d_model);
  positive("layers", layers);
  positive("heads", heads);
  positive("head_dim", head_dim);
  positive("expand_v", expand_v);
  positive("conv_size", conv_size);
  positive("norm_eps", norm_eps);
  positive("rope_theta", rope_theta);
  GDN_CHECK(init_std >= 0, "model config: init_std must be >= 0, got ", init_std);
  GDN_CHECK(v_dim() > 0 && head_dim * expand_v == double(v_dim()),
            "model config: head_dim * expand_v must be a positive integer, got ", head_dim * expand_v);
  GDN_CHECK(num_v_heads() % heads == 0, "model config: v_heads (", num_v_heads(), ") must be a multiple of heads (",
            heads, ")");
  GDN_CHECK(chunk_size == 16 || chunk_size == 32 || chunk_size == 64,
            "model config: chunk_size must be 16, 32 or 64, got ", chunk_size);
  GDN_CHECK(linear_attention_feature_map == "elu_plus_one" || linear_attention_feature_map == "silu_l2norm",
            "model config: linear_attention_feature_map must be elu_plus_one or silu_l2norm, got \"",
            linear_attention_feature_map, "\"");
  GDN_CHECK(gate_dt_range[0] > 0 && gate_dt_range[0] <= gate_dt_range[1],
            "model config: gate_dt_range must be [min, max] with 0 < min <= max, got [", gate_dt_range[0], ", ",
            gate_dt_range[1], "]");
  GDN_CHECK(form != Form::reference, "model config: form must be recurrent or chunk (reference is the fp64 check)");
  GDN_CHECK(!mixers.empty(), "model config: mixers must list at least one mixer");
  const auto names = mixer_names();
  for (const auto& m : mixers) {
    bool ok = false;
    for (const auto& n : names) ok = ok || n == m;
    if (!ok) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      fail("model config: unknown mixer \"", m, "\" (known: ", list, ")");
    }
    if (is_attention_mixer(m)) {
      GDN_CHECK(num_attn_heads() > 0 && num_attn_kv_heads() > 0 && num_attn_heads() % num_attn_kv_heads() == 0,
                "model config: attn_heads (", num_attn_heads(), ") must be a multiple of attn_kv_heads (",
                num_attn_kv_heads(), ")");
      GDN_CHECK(attn_dim() > 0 && attn_dim() % 2 == 0, "model config: the attention head dim must be even (RoPE), got ",
                attn_dim());
      GDN_CHECK(window >= 0, "model config: window must be >= 0 (0: full attention), got ", window);
    }
  }
  GDN_CHECK(mlp_hidden >= -1, "model config: mlp_hidden must be -1 (none), 0 (FLA size) or > 0, got ", mlp_hidden);
}

}  // namespace gdn::nn
