// Sequence mixers: the delta-rule family in one layer shell (DeltaMixer) and softmax
// attention (Attention). Both work on x [B, T, d_model] and are named as FLA names them
// under "model.layers.N.attn".
#pragma once

#include <memory>

#include "gdn/nn/config.h"
#include "gdn/nn/conv.h"
#include "gdn/nn/linear.h"
#include "gdn/nn/norm.h"

namespace gdn::nn {

template <class T>
struct Mixer {
  virtual ~Mixer() = default;
  virtual void collect(const std::string& prefix, ParamList<T>& list) = 0;
  // x, y [B, T, d_model]; keeps what the backward needs.
  virtual void forward(const T* x, int B, int T_, T* y) = 0;
  // Writes dx for the last forward; adds to the parameter gradients.
  virtual void backward(const T* dy, T* dx) = 0;
};

// shared/DESIGN.md §3, the GDN layer, with each member's gate and update:
//   q = silu(conv(W_q x)), k = silu(conv(W_k x)), v = silu(conv(W_v x)); the op L2-normalises q, k
//     linear_attention instead takes kernel linear attention's positive feature map,
//     q = elu(conv(W_q x)) + 1, k likewise, without the L2 norm (linear_attention_feature_map)
//   gated_deltanet, mamba2:  g = -exp(A_log) softplus(W_a x + dt_bias)   (per value head)
//     mamba2 also scales v by dt = softplus(W_a x + dt_bias) (= k scaled by dt, Mamba2's input)
//   gla:  g = logsigmoid(W_gk x) / 16  (per value head and key dim)
//   kda:  g = -exp(A_log) softplus(W_f x + dt_bias)  (per value head and key dim)
//   retnet: fixed per-head gates; linear_attention, deltanet, longhorn: none
//   delta rule members: beta = sigmoid(W_b x) (x 2 with allow_neg_eigval)
//   y = W_o( RMSNorm_per_head(o) w silu(W_g x) )
template <class T>
class DeltaMixer final : public Mixer<T> {
 public:
  DeltaMixer(const ModelConfig& cfg, Variant variant, Rng& rng, double out_std);
  void collect(const std::string& prefix, ParamList<T>& list) override;
  void forward(const T* x, int B, int T_, T* y) override;
  void backward(const T* dy, T* dx) override;

  Variant variant() const { return variant_; }
  OpConfig op_config(int B, int T_) const;

  Linear<T> q_proj, k_proj, v_proj, a_proj, b_proj, gk_proj, g_proj, o_proj;
  ShortConv<T> q_conv1d, k_conv1d, v_conv1d;
  Param<T> A_log, dt_bias;
  GatedRMSNorm<T> o_norm;

 private:
  bool scalar_gate() const { return variant_ == Variant::gated_deltanet || variant_ == Variant::mamba2; }
  bool vector_gate() const { return variant_ == Variant::gla || variant_ == Variant::kda; }
  // q, k through elu + 1 and not L2-normalised (kernel linear attention).
  bool positive_feature_map() const {
    return variant_ == Variant::linear_attention && cfg_.linear_attention_feature_map == "elu_plus_one";
  }

  ModelConfig cfg_;
  Variant variant_;
  bool delta_;
  int D_, H_, HV_, K_, V_;
  int B_ = 0, T_ = 0;
  // Activations kept for the backward.
  std::vector<T> x_, q_, k_, v_, vin_, gate_pre_, g_, beta_pre_, beta_, o_, z_, y_norm_;
};

// Causal softmax attention with RoPE (rotate-half, as FLA / transformers), grouped KV
// heads, and an optional sliding window (window <= 0: full attention).
template <class T>
class Attention final : public Mixer<T> {
 public:
  Attention(const ModelConfig& cfg, int window, Rng& rng, double out_std);
  void collect(const std::string& prefix, ParamList<T>& list) override;
  void forward(const T* x, int B, int T_, T* y) override;
  void backward(const T* dy, T* dx) override;

  Linear<T> q_proj, k_proj, v_proj, o_proj;

 private:

  int D_, H_, KVH_, Dh_, window_;
  double theta_;
  int B_ = 0, T_ = 0;
  std::vector<T> x_, q_, k_, v_, p_, o_;  // q, k after RoPE; p [B, H, T, T] probabilities
};

template <class T>
std::unique_ptr<Mixer<T>> make_mixer(const ModelConfig& cfg, int layer, Rng& rng, double out_std);

}  // namespace gdn::nn
