#include "gdn/nn/model.h"

#include <algorithm>
#include <cmath>

#include "gdn/common.h"

namespace gdn::nn {

template <class T>
Model<T>::Model(const ModelConfig& cfg, uint64_t seed) : cfg_(cfg) {
  cfg_.validate();
  Rng rng(seed);
  const int D = cfg_.d_model;
  // Residual-branch outputs (o_proj, down_proj) scaled by 1/sqrt(2 layers), as FLA does.
  const double out_std = cfg_.init_std / std::sqrt(2.0 * cfg_.layers);
  embeddings.init(cfg_.vocab_size, D, rng, cfg_.init_std);
  layers.resize(cfg_.layers);
  for (int i = 0; i < cfg_.layers; ++i) {
    Block<T>& b = layers[i];
    b.attn_norm.init(D, cfg_.norm_eps);
    b.attn = make_mixer<T>(cfg_, i, rng, out_std);
    b.has_mlp = cfg_.mlp_hidden != -1;
    if (b.has_mlp) {
      b.mlp_norm.init(D, cfg_.norm_eps);
      b.mlp.init(D, cfg_.mlp_size(), rng, cfg_.init_std, out_std);
    }
  }
  if (cfg_.autoencoder()) decoder.init(D, cfg_.norm_eps, rng, cfg_.init_std);
  norm.init(D, cfg_.norm_eps);
  if (!cfg_.tie_embeddings) {
    lm_head.init({cfg_.vocab_size, D}, true);
    lm_head.normal(rng, cfg_.init_std);
  }
  if (cfg_.autoencoder()) lm_head_bias.init({cfg_.vocab_size}, false);

  embeddings.collect("model.embeddings", params_);
  for (int i = 0; i < cfg_.layers; ++i) {
    const std::string p = cat("model.layers.", i);
    layers[i].attn_norm.collect(p + ".attn_norm", params_);
    layers[i].attn->collect(p + ".attn", params_);
    if (layers[i].has_mlp) {
      layers[i].mlp_norm.collect(p + ".mlp_norm", params_);
      layers[i].mlp.collect(p + ".mlp", params_);
    }
  }
  if (cfg_.autoencoder()) decoder.collect("model.decoder", params_);
  norm.collect("model.norm", params_);
  if (!cfg_.tie_embeddings) params_.push_back({"lm_head.weight", &lm_head});
  if (cfg_.autoencoder()) params_.push_back({"lm_head.bias", &lm_head_bias});
}

template <class T>
Param<T>* Model<T>::find(const std::string& name) const {
  for (const auto& [n, p] : params_)
    if (n == name) return p;
  return nullptr;
}

template <class T>
size_t Model<T>::num_params() const {
  size_t n = 0;
  for (const auto& [name, p] : params_) n += p->numel();
  return n;
}

template <class T>
void Model<T>::zero_grad() {
  for (auto& [name, p] : params_) std::fill(p->grad.begin(), p->grad.end(), T(0));
}

template <class T>
LossStats Model<T>::forward(const int32_t* ids, const int32_t* labels, int B, int Tn) {
  GDN_CHECK(B > 0 && Tn > 0, "model: batch and sequence length must be positive, got B=", B, " T=", Tn);
  B_ = B;
  T_ = Tn;
  const int N = B * Tn, D = cfg_.d_model;
  // Kept between calls: every element is written before it is read.
  std::vector<T>&x = stream_, &h = normed_, &m = branch_;
  x.resize(size_t(N) * D);
  h.resize(x.size());
  m.resize(x.size());
  embeddings.forward(ids, N, x.data());
  for (auto& b : layers) {
    b.attn_norm.forward(x.data(), N, h.data());
    b.attn->forward(h.data(), B, Tn, m.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += m[i];
    if (b.has_mlp) {
      b.mlp_norm.forward(x.data(), N, h.data());
      b.mlp.forward(h.data(), N, m.data());
      for (size_t i = 0; i < x.size(); ++i) x[i] += m[i];
    }
  }
  if (cfg_.autoencoder()) {
    // MAD's code is the raw stream at the last position (no norm before the decoder's own).
    code_.resize(size_t(B) * D);
    for (int b = 0; b < B; ++b) std::copy_n(&x[(size_t(b) * Tn + Tn - 1) * D], D, &code_[size_t(b) * D]);
    decoder.forward(code_.data(), B, Tn, m.data());
    norm.forward(m.data(), N, h.data());
  } else {
    norm.forward(x.data(), N, h.data());
  }
  return loss_.forward(h.data(), labels, N, D, head(), head_bias());
}

template <class T>
void Model<T>::backward() {
  // The forward buffers are free again (the layers keep what backward needs).
  std::vector<T>&dx = stream_, &dh = normed_;
  const int D = cfg_.d_model;
  loss_.backward(dh.data(), head(), head_bias());
  if (cfg_.autoencoder()) {
    std::vector<T>& ddecoded = branch_;
    norm.backward(dh.data(), ddecoded.data(), false);
    decoder.backward(ddecoded.data(), code_.data());  // code_ now holds its gradient
    std::fill(dx.begin(), dx.end(), T(0));
    for (int b = 0; b < B_; ++b) std::copy_n(&code_[size_t(b) * D], D, &dx[(size_t(b) * T_ + T_ - 1) * D]);
  } else {
    norm.backward(dh.data(), dx.data(), false);
  }
  for (int l = cfg_.layers - 1; l >= 0; --l) {
    Block<T>& b = layers[l];
    if (b.has_mlp) {
      b.mlp.backward(dx.data(), dh.data());
      b.mlp_norm.backward(dh.data(), dx.data(), true);
    }
    b.attn->backward(dx.data(), dh.data());
    b.attn_norm.backward(dh.data(), dx.data(), true);
  }
  embeddings.backward(dx.data());
}

template class Model<float>;
template class Model<double>;

}  // namespace gdn::nn
