// The inference model's layers: gdn::nn training layers driven with a decode state.
#pragma once

#include <vector>

#include "gdn/infer.h"
#include "gdn/nn/conv.h"
#include "gdn/nn/embedding.h"
#include "gdn/nn/linear.h"
#include "gdn/nn/mlp.h"
#include "gdn/nn/norm.h"

namespace gdn::infer {

struct DeltaLayer {
  nn::Linear<float> q_proj, k_proj, v_proj, a_proj, b_proj, g_proj, o_proj;
  nn::ShortConv<float> q_conv1d, k_conv1d, v_conv1d;
  nn::Param<float> A_log, dt_bias;  // [HV]
  nn::GatedRMSNorm<float> o_norm;
};

struct AttentionLayer {
  nn::Linear<float> q_proj, k_proj, v_proj, o_proj;
  nn::Linear<float> gate_proj;        // Qwen3-Next output gate (split from its q_proj)
  nn::RMSNorm<float> q_norm, k_norm;  // Qwen3-Next, per head
};

struct Block {
  nn::RMSNorm<float> attn_norm, mlp_norm;
  DeltaLayer delta;
  AttentionLayer attn;
  nn::SwiGLU<float> mlp;
};

struct Model::Impl {
  Config cfg;
  nn::Embedding<float> embeddings;
  std::vector<Block> blocks;
  nn::RMSNorm<float> norm;
  nn::Linear<float> lm_head;  // with tied embeddings a copy of them, made by finalize()

  // Shapes every parameter from cfg (values zero): the loaders fill them, random() draws them.
  void shape();
  // After the values are in: ties the head, drops the gradient buffers.
  void finalize();
  void run(State& state, const int32_t* ids, int n, float* last_logits, float* all_logits, Form prefill_form);
  void drop_buffers();
  // Every parameter under its FLA name (gdn and FLA layouts; Qwen3-Next maps onto these).
  std::vector<std::pair<std::string, nn::Param<float>*>> params();
};

}  // namespace gdn::infer
