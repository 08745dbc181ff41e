// Checkpoint loading for the three layouts (see gdn/infer.h). Every tensor is read with
// its expected shape; a missing one, a wrong shape, a non-finite value, a tensor nothing
// reads and an option gdn does not implement are errors that name the tensor or key.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "gdn/common.h"
#include "gdn/nn/config.h"
#include "gdn/safetensors.h"
#include "infer/model_impl.h"

namespace gdn::infer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kGdnCheckpointFormat = "gdn-checkpoint-1";  // written by gdn train

json read_json(const fs::path& path) {
  std::ifstream f(path);
  GDN_CHECK(f, "cannot open ", path.string());
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    fail(path.string(), ": not valid JSON (", e.what(), ")");
  }
}

// The weights of one model: one safetensors file or the shards of an index.
class TensorStore {
 public:
  static TensorStore open_dir(const fs::path& dir) {
    TensorStore s;
    const fs::path index = dir / "model.safetensors.index.json", single = dir / "model.safetensors";
    if (fs::exists(index)) {
      const json j = read_json(index);
      GDN_CHECK(j.contains("weight_map") && j["weight_map"].is_object(), index.string(), ": no \"weight_map\" object");
      std::map<std::string, size_t> file_of_shard;
      for (const auto& [name, shard] : j["weight_map"].items()) {
        GDN_CHECK(shard.is_string(), index.string(), ": weight_map[\"", name, "\"] is not a file name");
        const std::string file = shard.get<std::string>();
        auto it = file_of_shard.find(file);
        if (it == file_of_shard.end()) {
          it = file_of_shard.emplace(file, s.files_.size()).first;
          s.files_.push_back(SafeTensorsFile::load((dir / file).string()));
        }
        GDN_CHECK(s.files_[it->second].has(name), index.string(), ": tensor ", name, " is listed in ", file,
                  " but that file does not hold it");
        s.where_[name] = it->second;
      }
    } else {
      GDN_CHECK(fs::exists(single), "model directory ", dir.string(),
                ": neither model.safetensors nor model.safetensors.index.json is there");
      s.add_file(SafeTensorsFile::load(single.string()));
    }
    return s;
  }
  static TensorStore from_file(SafeTensorsFile f) {
    TensorStore s;
    s.add_file(std::move(f));
    return s;
  }

  bool has(const std::string& name) const { return where_.count(name) != 0; }
  std::vector<float> get(const std::string& name, const std::vector<int64_t>& shape) {
    auto it = where_.find(name);
    GDN_CHECK(it != where_.end(), "checkpoint: tensor ", name, " ", shape_str(shape), " is missing");
    const SafeTensorsFile& f = files_[it->second];
    std::vector<float> v = f.get_f32(name, shape);
    for (float x : v) GDN_CHECK(std::isfinite(x), "tensor ", name, " in ", f.path(), " holds a non-finite value");
    used_.insert(name);
    return v;
  }
  // Fails on the first tensor no part of the model read (a layout misread, or an option
  // such as MoE experts that the config did not announce), except those `ignore` accepts.
  template <class Ignore>
  void check_all_used(Ignore ignore) const {
    for (const auto& [name, file] : where_)
      GDN_CHECK(used_.count(name) || ignore(name), "checkpoint ", files_[file].path(), ": tensor ", name,
                " is not part of the model this config describes");
  }

 private:
  void add_file(SafeTensorsFile f) {
    for (const auto& name : f.names()) where_[name] = files_.size();
    files_.push_back(std::move(f));
  }
  std::vector<SafeTensorsFile> files_;
  std::map<std::string, size_t> where_;
  std::set<std::string> used_;
};

// Typed access to config.json keys with the library's default when absent.
template <class T>
T value(const json& j, const std::string& key, T fallback, const std::string& file) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    fail(file, ": key \"", key, "\" has the wrong type (", j[key].dump(), ")");
  }
}

// eos_token_id may be one id or a list of them (the first is used).
int first_id(const json& j, const std::string& key, int fallback, const std::string& file) {
  if (j.contains(key) && j[key].is_array()) {
    const json& ids = j[key];
    GDN_CHECK(ids.empty() || ids[0].is_number_integer(), file, ": ", key, " holds a non-integer (", ids.dump(), ")");
    return ids.empty() ? fallback : ids[0].get<int>();
  }
  return value<int>(j, key, fallback, file);
}

// ---------------------------------------------------------------------------- gdn

Config config_from_gdn(const nn::ModelConfig& m) {
  Config c;
  c.layout = Layout::gdn;
  c.vocab = m.vocab_size;
  c.d_model = m.d_model;
  c.norm_eps = m.norm_eps;
  c.tie_embeddings = m.tie_embeddings;
  c.mlp_hidden = std::max(0, m.mlp_size());
  GDN_CHECK(!m.autoencoder(), "model config: head \"autoencoder\" (MAD's compression task) decodes a sequence from ",
            "its last position and does not generate text; gdn's inference runs the lm head");
  GDN_CHECK(m.use_short_conv, "model config: use_short_conv false is not supported by gdn's inference");
  for (int i = 0; i < m.layers; ++i) {
    const std::string& mixer = m.mixer(i);
    GDN_CHECK(mixer == "gated_deltanet" || nn::is_attention_mixer(mixer), "model config: layer ", i, " mixer \"", mixer,
              "\": gdn's inference runs gated_deltanet, attention and swa layers");
    c.attention.push_back(nn::is_attention_mixer(mixer));
    c.window.push_back(mixer == "swa" ? m.window : 0);
  }
  c.heads = m.heads;
  c.v_heads = m.num_v_heads();
  c.head_k = m.head_dim;
  c.head_v = m.v_dim();
  c.conv_size = m.conv_size;
  c.allow_neg_eigval = m.allow_neg_eigval;
  c.attn_heads = m.num_attn_heads();
  c.attn_kv_heads = m.num_attn_kv_heads();
  c.attn_head_dim = m.attn_dim();
  c.rotary_dim = m.attn_dim();
  c.rope_theta = m.rope_theta;
  return c;
}

// ---------------------------------------------------------------------------- FLA

// FLA's GatedDeltaNetConfig (fla/models/gated_deltanet) with its defaults.
Config config_from_fla(const json& j, const std::string& file) {
  Config c;
  c.layout = Layout::fla;
  auto get_i = [&](const char* k, int d) { return value<int>(j, k, d, file); };
  auto get_b = [&](const char* k, bool d) { return value<bool>(j, k, d, file); };
  c.vocab = get_i("vocab_size", 32000);
  c.d_model = get_i("hidden_size", 2048);
  c.norm_eps = value<double>(j, "norm_eps", 1e-6, file);
  c.tie_embeddings = get_b("tie_word_embeddings", false);
  c.bos_token = get_i("bos_token_id", 1);
  c.eos_token = first_id(j, "eos_token_id", 2, file);
  const int layers = get_i("num_hidden_layers", 21);
  c.heads = get_i("num_heads", 6);
  c.v_heads = get_i("num_v_heads", c.heads);
  c.head_k = get_i("head_dim", 256);
  const double expand_v = value<double>(j, "expand_v", 2.0, file);
  c.head_v = int(std::lround(c.head_k * expand_v));
  GDN_CHECK(std::abs(c.head_v - c.head_k * expand_v) < 1e-6, file, ": head_dim * expand_v = ", c.head_k * expand_v,
            " is not an integer");
  c.conv_size = get_i("conv_size", 4);
  c.allow_neg_eigval = get_b("allow_neg_eigval", false);
  GDN_CHECK(get_b("use_gate", true), file, ": use_gate false is not supported (gdn runs the gated output norm)");
  GDN_CHECK(get_b("use_short_conv", true), file, ": use_short_conv false is not supported");
  const std::string act = value<std::string>(j, "hidden_act", "swish", file);
  GDN_CHECK(act == "swish" || act == "silu", file, ": hidden_act \"", act, "\" is not supported (swish only)");
  GDN_CHECK(!j.contains("attnres_block_size") || j["attnres_block_size"].is_null(), file,
            ": attnres_block_size (attention residuals) is not supported");
  const int inter = get_i("intermediate_size", 0);
  if (inter > 0) {
    c.mlp_hidden = inter;
  } else {  // FLA's GatedMLP: 2/3 * hidden_ratio * hidden, rounded up to a multiple of 256
    const int h = int(c.d_model * get_i("hidden_ratio", 4) * 2.0 / 3.0);
    c.mlp_hidden = 256 * ((h + 255) / 256);
  }

  c.attention.assign(size_t(layers), false);
  c.window.assign(size_t(layers), 0);
  if (j.contains("attn") && !j["attn"].is_null()) {
    const json& a = j["attn"];
    const json specs = a.is_array() ? a : json::array({a});
    for (const json& s : specs) {
      GDN_CHECK(s.is_object() && s.contains("layers") && s.contains("num_heads"), file,
                ": attn must hold {\"layers\": [...], \"num_heads\": N, ...}");
      const int h = value<int>(s, "num_heads", 0, file), kv = value<int>(s, "num_kv_heads", h, file);
      GDN_CHECK(!value<bool>(s, "qkv_bias", false, file), file, ": attn qkv_bias true is not supported");
      GDN_CHECK(c.attn_heads == 0 || (c.attn_heads == h && c.attn_kv_heads == kv), file,
                ": attention specs with different head counts are not supported");
      c.attn_heads = h;
      c.attn_kv_heads = kv;
      c.attn_head_dim = c.d_model / h;
      c.rotary_dim = c.attn_head_dim;
      c.rope_theta = value<double>(s, "rope_theta", 10000.0, file);
      const int window = value<int>(s, "window_size", 0, file);
      for (const json& l : s["layers"]) {
        const int i = l.get<int>();
        GDN_CHECK(i >= 0 && i < layers, file, ": attn layer ", i, " outside [0, ", layers, ")");
        c.attention[size_t(i)] = true;
        c.window[size_t(i)] = window;
      }
    }
  }
  return c;
}

// ---------------------------------------------------------------------------- Qwen3-Next

// transformers' Qwen3NextConfig with its defaults; rope settings either in rope_parameters
// (transformers >= 5) or at the top level (the published checkpoints).
Config config_from_qwen3_next(const json& j, const std::string& file) {
  Config c;
  c.layout = Layout::qwen3_next;
  auto get_i = [&](const char* k, int d) { return value<int>(j, k, d, file); };
  c.vocab = get_i("vocab_size", 151936);
  c.d_model = get_i("hidden_size", 2048);
  c.norm_eps = value<double>(j, "rms_norm_eps", 1e-6, file);
  c.tie_embeddings = value<bool>(j, "tie_word_embeddings", false, file);
  c.mlp_hidden = get_i("intermediate_size", 5632);
  c.bos_token = get_i("bos_token_id", -1);
  c.eos_token = first_id(j, "eos_token_id", -1, file);
  const int layers = get_i("num_hidden_layers", 48);
  const std::string act = value<std::string>(j, "hidden_act", "silu", file);
  GDN_CHECK(act == "silu" || act == "swish", file, ": hidden_act \"", act, "\" is not supported (silu only)");
  GDN_CHECK(!value<bool>(j, "attention_bias", false, file), file, ": attention_bias true is not supported");

  // Dense MLP everywhere, or refuse: Qwen3NextDecoderLayer builds a sparse MoE block where
  // layer not in mlp_only_layers and num_experts > 0 and (layer + 1) % decoder_sparse_step == 0.
  const int experts = get_i("num_experts", 512), sparse_step = get_i("decoder_sparse_step", 1);
  const auto mlp_only = value<std::vector<int>>(j, "mlp_only_layers", {}, file);
  for (int i = 0; i < layers; ++i) {
    const bool dense = std::find(mlp_only.begin(), mlp_only.end(), i) != mlp_only.end();
    GDN_CHECK(dense || experts <= 0 || sparse_step <= 0 || (i + 1) % sparse_step != 0, file, ": layer ", i,
              " is a mixture-of-experts block (num_experts ", experts, ", decoder_sparse_step ", sparse_step,
              "); gdn loads dense Qwen3-Next models only (num_experts 0 or every layer in mlp_only_layers)");
  }

  std::vector<std::string> types;
  if (j.contains("layer_types") && !j["layer_types"].is_null()) {
    types = value<std::vector<std::string>>(j, "layer_types", {}, file);
    GDN_CHECK(int(types.size()) == layers, file, ": layer_types has ", types.size(), " entries, num_hidden_layers ",
              layers);
  } else {
    const int interval = get_i("full_attention_interval", 4);
    for (int i = 0; i < layers; ++i) types.push_back((i + 1) % interval ? "linear_attention" : "full_attention");
  }
  for (int i = 0; i < layers; ++i) {
    GDN_CHECK(types[size_t(i)] == "linear_attention" || types[size_t(i)] == "full_attention", file, ": layer_types[", i,
              "] \"", types[size_t(i)], "\" is not linear_attention or full_attention");
    c.attention.push_back(types[size_t(i)] == "full_attention");
    c.window.push_back(0);
  }

  c.heads = get_i("linear_num_key_heads", 16);
  c.v_heads = get_i("linear_num_value_heads", 32);
  c.head_k = get_i("linear_key_head_dim", 128);
  c.head_v = get_i("linear_value_head_dim", 128);
  c.conv_size = get_i("linear_conv_kernel_dim", 4);

  c.attn_heads = get_i("num_attention_heads", 16);
  c.attn_kv_heads = get_i("num_key_value_heads", 2);
  c.attn_head_dim = get_i("head_dim", 256);
  c.attn_qk_norm = true;
  c.attn_out_gate = true;
  const json rope = j.contains("rope_parameters") && j["rope_parameters"].is_object() ? j["rope_parameters"] : json();
  GDN_CHECK(!j.contains("rope_scaling") || j["rope_scaling"].is_null(), file,
            ": rope_scaling is not supported (default RoPE only)");
  const std::string rope_type = value<std::string>(rope, "rope_type", "default", file);
  GDN_CHECK(rope_type == "default", file, ": rope_type \"", rope_type, "\" is not supported (default RoPE only)");
  c.rope_theta = value<double>(rope, "rope_theta", value<double>(j, "rope_theta", 10000.0, file), file);
  const double partial =
      value<double>(rope, "partial_rotary_factor", value<double>(j, "partial_rotary_factor", 0.25, file), file);
  c.rotary_dim = int(c.attn_head_dim * partial);
  return c;
}

// Rows [begin, begin + n) of a row-major matrix with `cols` columns, appended to `out`.
void take_rows(const std::vector<float>& m, int64_t cols, int64_t begin, int64_t n, std::vector<float>& out) {
  out.insert(out.end(), m.begin() + begin * cols, m.begin() + (begin + n) * cols);
}

std::vector<float> one_plus(std::vector<float> w) {
  for (auto& x : w) x += 1.f;  // Qwen3NextRMSNorm scales by (1 + w)
  return w;
}

void load_qwen3_next(Model::Impl& m, TensorStore& ts) {
  const Config& c = m.cfg;
  const int64_t D = c.d_model;
  m.embeddings.weight.value = ts.get("model.embed_tokens.weight", {c.vocab, D});
  for (int i = 0; i < c.layers(); ++i) {
    Block& b = m.blocks[size_t(i)];
    const std::string pre = cat("model.layers.", i, ".");
    b.attn_norm.weight.value = one_plus(ts.get(pre + "input_layernorm.weight", {D}));
    b.mlp_norm.weight.value = one_plus(ts.get(pre + "post_attention_layernorm.weight", {D}));
    b.mlp.gate_proj.weight.value = ts.get(pre + "mlp.gate_proj.weight", {c.mlp_hidden, D});
    b.mlp.up_proj.weight.value = ts.get(pre + "mlp.up_proj.weight", {c.mlp_hidden, D});
    b.mlp.down_proj.weight.value = ts.get(pre + "mlp.down_proj.weight", {D, c.mlp_hidden});
    if (c.attention[size_t(i)]) {
      // q_proj holds, per head, head_dim query rows then head_dim output-gate rows.
      AttentionLayer& a = b.attn;
      const int64_t H = c.attn_heads, KVH = c.attn_kv_heads, hd = c.attn_head_dim;
      const auto qg = ts.get(pre + "self_attn.q_proj.weight", {H * hd * 2, D});
      a.q_proj.weight.value.clear();
      a.gate_proj.weight.value.clear();
      for (int64_t h = 0; h < H; ++h) {
        take_rows(qg, D, h * 2 * hd, hd, a.q_proj.weight.value);
        take_rows(qg, D, h * 2 * hd + hd, hd, a.gate_proj.weight.value);
      }
      a.k_proj.weight.value = ts.get(pre + "self_attn.k_proj.weight", {KVH * hd, D});
      a.v_proj.weight.value = ts.get(pre + "self_attn.v_proj.weight", {KVH * hd, D});
      a.o_proj.weight.value = ts.get(pre + "self_attn.o_proj.weight", {D, H * hd});
      a.q_norm.weight.value = one_plus(ts.get(pre + "self_attn.q_norm.weight", {hd}));
      a.k_norm.weight.value = one_plus(ts.get(pre + "self_attn.k_norm.weight", {hd}));
    } else {
      // in_proj_qkvz holds, per key head, [q (K), k (K), v (r V), z (r V)] rows with
      // r = HV / H value heads per key head; in_proj_ba holds [b (r), a (r)] per key head.
      DeltaLayer& d = b.delta;
      const int64_t H = c.heads, HV = c.v_heads, K = c.head_k, V = c.head_v, r = HV / H;
      const int64_t block = 2 * K + 2 * r * V;
      const auto qkvz = ts.get(pre + "linear_attn.in_proj_qkvz.weight", {H * block, D});
      const auto ba = ts.get(pre + "linear_attn.in_proj_ba.weight", {2 * HV, D});
      for (auto* w : {&d.q_proj, &d.k_proj, &d.v_proj, &d.g_proj, &d.a_proj, &d.b_proj}) w->weight.value.clear();
      for (int64_t g = 0; g < H; ++g) {
        take_rows(qkvz, D, g * block, K, d.q_proj.weight.value);
        take_rows(qkvz, D, g * block + K, K, d.k_proj.weight.value);
        take_rows(qkvz, D, g * block + 2 * K, r * V, d.v_proj.weight.value);
        take_rows(qkvz, D, g * block + 2 * K + r * V, r * V, d.g_proj.weight.value);
        take_rows(ba, D, g * 2 * r, r, d.b_proj.weight.value);
        take_rows(ba, D, g * 2 * r + r, r, d.a_proj.weight.value);
      }
      // conv1d runs over the concatenation [q | k | v] (depthwise: a split per channel).
      const int64_t W = c.conv_size, kd = H * K, vd = HV * V;
      const auto conv = ts.get(pre + "linear_attn.conv1d.weight", {2 * kd + vd, 1, W});
      d.q_conv1d.weight.value.assign(conv.begin(), conv.begin() + kd * W);
      d.k_conv1d.weight.value.assign(conv.begin() + kd * W, conv.begin() + 2 * kd * W);
      d.v_conv1d.weight.value.assign(conv.begin() + 2 * kd * W, conv.end());
      d.A_log.value = ts.get(pre + "linear_attn.A_log", {HV});
      d.dt_bias.value = ts.get(pre + "linear_attn.dt_bias", {HV});
      d.o_norm.weight.value = ts.get(pre + "linear_attn.norm.weight", {V});  // plain w (gated norm)
      d.o_proj.weight.value = ts.get(pre + "linear_attn.out_proj.weight", {D, vd});
    }
  }
  m.norm.weight.value = one_plus(ts.get("model.norm.weight", {D}));
  if (!c.tie_embeddings) m.lm_head.weight.value = ts.get("lm_head.weight", {c.vocab, D});
  ts.check_all_used([&](const std::string& name) {
    return name.rfind("mtp.", 0) == 0 || (c.tie_embeddings && name == "lm_head.weight");
  });
}

// gdn and FLA share the parameter names (gdn writes FLA's).
void load_fla_names(Model::Impl& m, TensorStore& ts) {
  for (auto& [name, p] : m.params()) p->value = ts.get(name, p->shape);
  const bool tied = m.cfg.tie_embeddings;
  ts.check_all_used(
      [&](const std::string& name) { return name.rfind("optimizer.", 0) == 0 || (tied && name == "lm_head.weight"); });
}

}  // namespace

Model Model::load(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  const fs::path p(path);
  GDN_CHECK(fs::exists(p), "model ", path, ": no such file or directory");
  if (fs::is_regular_file(p)) {  // a gdn train checkpoint
    SafeTensorsFile f = SafeTensorsFile::load(path);
    auto fmt = f.metadata().find("format");
    GDN_CHECK(fmt != f.metadata().end() && fmt->second == kGdnCheckpointFormat, "model ", path,
              ": a single file must be a gdn checkpoint (metadata format ", kGdnCheckpointFormat,
              "); give the directory of other models");
    auto mc = f.metadata().find("model_config");
    GDN_CHECK(mc != f.metadata().end(), "checkpoint ", path, ": metadata model_config is missing");
    json j;
    try {
      j = json::parse(mc->second);
    } catch (const json::exception&) {
      fail("checkpoint ", path, ": metadata model_config is not valid JSON");
    }
    impl->cfg = config_from_gdn(nn::ModelConfig::from_json(j));
    impl->cfg.validate();
    impl->shape();
    TensorStore ts = TensorStore::from_file(std::move(f));
    load_fla_names(*impl, ts);
  } else {
    const fs::path cfg_path = p / "config.json";
    GDN_CHECK(fs::exists(cfg_path), "model directory ", path, ": config.json is missing");
    const json j = read_json(cfg_path);
    const std::string file = cfg_path.string();
    const std::string type = value<std::string>(j, "model_type", "", file);
    if (type == "gated_deltanet") {
      impl->cfg = config_from_fla(j, file);
    } else if (type == "qwen3_next") {
      impl->cfg = config_from_qwen3_next(j, file);
    } else if (type.empty() || type == "gdn") {
      json own = j;
      own.erase("model_type");
      impl->cfg = config_from_gdn(nn::ModelConfig::from_json(own));
    } else {
      fail(file, ": model_type \"", type, "\" is not one gdn loads (gated_deltanet, qwen3_next, gdn)");
    }
    impl->cfg.validate();
    impl->shape();
    TensorStore ts = TensorStore::open_dir(p);
    if (impl->cfg.layout == Layout::qwen3_next)
      load_qwen3_next(*impl, ts);
    else
      load_fla_names(*impl, ts);
  }
  impl->finalize();
  return Model(std::move(impl));
}

Model Model::random(const Config& cfg, uint64_t seed) {
  cfg.validate();
  auto impl = std::make_unique<Impl>();
  impl->cfg = cfg;
  impl->shape();
  // gdn::nn's initialisation (shared/DESIGN.md §3): normal(0.02) projections, unit norms,
  // A ~ U(1, 16), dt log-uniform in [1e-3, 0.1].
  nn::Rng rng(seed);
  for (auto& [name, p] : impl->params()) {
    if (name.ends_with("A_log")) {
      for (auto& x : p->value) x = float(std::log(rng.uniform(1.0, 16.0)));
    } else if (name.ends_with("dt_bias")) {
      for (auto& x : p->value) {
        const double dt = std::max(1e-4, std::exp(rng.uniform(std::log(1e-3), std::log(0.1))));
        x = float(dt + std::log(-std::expm1(-dt)));
      }
    } else if (name.find("norm") != std::string::npos) {
      p->fill(1.f);
    } else {
      p->normal(rng, 0.02);
    }
  }
  impl->finalize();
  return Model(std::move(impl));
}

}  // namespace gdn::infer
