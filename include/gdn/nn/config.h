// Model configuration, read from JSON. Unknown keys are errors (a typo must not silently
// train a different model). Mixer names: the op variants (gated_deltanet, deltanet,
// linear_attention, retnet, mamba2, gla, kda, longhorn) and "attention" (full causal
// softmax attention) / "swa" (sliding window of `window` tokens).
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <array>
#include <string>
#include <vector>

#include "gdn/ops.h"

namespace gdn::nn {

struct ModelConfig {
  int vocab_size = 8192;
  int d_model = 64;
  int layers = 2;
  // Mixer of layer i is mixers[i % mixers.size()]: ["gated_deltanet", "swa"] is H1,
  // ["mamba2", "gated_deltanet", "swa"] is H2.
  std::vector<std::string> mixers = {"gated_deltanet"};

  // Delta-family mixers (FLA GatedDeltaNet naming).
  int heads = 2;          // q/k heads (FLA num_heads)
  int v_heads = 0;        // value heads, 0: = heads (FLA num_v_heads, GVA when larger)
  int head_dim = 32;      // K (FLA head_dim)
  double expand_v = 1.0;  // V = head_dim * expand_v (FLA default 2)
  int conv_size = 4;
  bool use_short_conv = true;
  bool allow_neg_eigval = false;  // beta in (0, 2)
  // q/k of the linear_attention mixer: "elu_plus_one" (kernel linear attention, Katharopoulos
  // et al. 2020: positive features, no L2 norm) or "silu_l2norm" (the family's shell, which
  // makes it DeltaNet without the delta rule).
  std::string linear_attention_feature_map = "elu_plus_one";
  // Initial dt of the decay gates (GDN, Mamba2, KDA), log-uniform in [min, max] (FLA and
  // mamba_ssm: dt_min 1e-3, dt_max 0.1); the per-token decay starts at A * dt. Models with
  // few heads and long-range tasks may want smaller values (longer initial memory).
  std::array<double, 2> gate_dt_range = {1e-3, 0.1};
  Form form = Form::chunk;  // the op's form for fp32 training
  int chunk_size = 64;

  // Softmax attention mixers (attention, swa).
  int attn_heads = 0;     // 0: = heads
  int attn_kv_heads = 0;  // 0: = attn_heads (GQA when fewer)
  int attn_head_dim = 0;  // 0: d_model / attn_heads
  int window = 2048;      // swa window in tokens (the query's own token included)
  double rope_theta = 10000.0;

  // SwiGLU MLP after every mixer; 0: FLA's size, 256 * ceil(8 d_model / 3 / 256); -1: none.
  int mlp_hidden = 0;
  bool tie_embeddings = false;
  double norm_eps = 1e-6;
  double init_std = 0.02;

  static ModelConfig from_json(const nlohmann::json& j);  // throws gdn::Error
  static ModelConfig load(const std::string& path);       // throws gdn::Error naming the file
  nlohmann::json to_json() const;
  void validate() const;  // throws gdn::Error naming the field

  int num_v_heads() const { return v_heads > 0 ? v_heads : heads; }
  int v_dim() const { return int(head_dim * expand_v); }
  int num_attn_heads() const { return attn_heads > 0 ? attn_heads : heads; }
  int num_attn_kv_heads() const { return attn_kv_heads > 0 ? attn_kv_heads : num_attn_heads(); }
  int attn_dim() const { return attn_head_dim > 0 ? attn_head_dim : d_model / num_attn_heads(); }
  int mlp_size() const;
  const std::string& mixer(int layer) const { return mixers[size_t(layer) % mixers.size()]; }
};

bool is_attention_mixer(const std::string& name);
// Every accepted mixer name, for error messages and help.
std::vector<std::string> mixer_names();

}  // namespace gdn::nn
