// The language model: embeddings, blocks (x += Mixer(RMSNorm(x)); x += SwiGLU(RMSNorm(x))),
// final RMSNorm, LM head (tied to the embeddings or not). Parameter names are FLA's
// (model.embeddings.weight, model.layers.N.attn.q_proj.weight, ..., lm_head.weight).
// With head "autoencoder" (MAD's compression task) the blocks are the encoder and
// model.decoder.* decodes every position from the last one's stream (nn/autoencoder.h)
// before the final norm and the head, which then has a bias (lm_head.bias).
#pragma once

#include <memory>

#include "gdn/nn/autoencoder.h"
#include "gdn/nn/config.h"
#include "gdn/nn/embedding.h"
#include "gdn/nn/loss.h"
#include "gdn/nn/mixer.h"
#include "gdn/nn/mlp.h"
#include "gdn/nn/norm.h"

namespace gdn::nn {

template <class T>
struct Block {
  RMSNorm<T> attn_norm, mlp_norm;
  std::unique_ptr<Mixer<T>> attn;
  SwiGLU<T> mlp;
  bool has_mlp = true;
};

template <class T>
class Model {
 public:
  Model(const ModelConfig& cfg, uint64_t seed);

  const ModelConfig& config() const { return cfg_; }
  const ParamList<T>& params() const { return params_; }
  Param<T>* find(const std::string& name) const;  // null when absent
  size_t num_params() const;
  Param<T>& head() { return cfg_.tie_embeddings ? embeddings.weight : lm_head; }
  Param<T>* head_bias() { return cfg_.autoencoder() ? &lm_head_bias : nullptr; }

  // ids, labels [B, T]; returns the loss over labelled positions, keeps the activations.
  // Label t is the target of the prediction at t (the decoded position t with the
  // autoencoder head).
  LossStats forward(const int32_t* ids, const int32_t* labels, int B, int T_);
  // Adds the gradients of the last forward's mean loss into every Param::grad.
  void backward();
  void zero_grad();

  Embedding<T> embeddings;
  std::vector<Block<T>> layers;
  AutoencoderDecoder<T> decoder;  // autoencoder head only
  RMSNorm<T> norm;
  Param<T> lm_head;       // [vocab, d_model]; unused (empty) with tied embeddings
  Param<T> lm_head_bias;  // [vocab]; autoencoder head only

 private:
  ModelConfig cfg_;
  ParamList<T> params_;
  LMHeadLoss<T> loss_;
  int B_ = 0, T_ = 0;
  // Forward: the residual stream, its norm, a block's output; backward: their gradients.
  std::vector<T> stream_, normed_, branch_;
  std::vector<T> code_;  // autoencoder: the stream at each sequence's last position [B, D]
};

}  // namespace gdn::nn
