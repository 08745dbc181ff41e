// AdamW with decoupled weight decay (Loshchilov & Hutter; PyTorch's AdamW), linear warmup
// then cosine decay, and global-norm gradient clipping.
#pragma once

#include <cstdint>

#include "gdn/nn/param.h"

namespace gdn::train {

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.1;  // only on params with decay (not A_log, dt_bias, norms, biases)
};

class AdamW {
 public:
  AdamW(const nn::ParamList<float>& params, AdamWConfig cfg);
  // One update at learning rate lr (the schedule's value for this step).
  void step(double lr);
  int64_t steps() const { return t_; }
  void set_steps(int64_t t) { t_ = t; }
  std::vector<float>& exp_avg(size_t i) { return m_[i]; }
  std::vector<float>& exp_avg_sq(size_t i) { return v_[i]; }
  const std::vector<float>& exp_avg(size_t i) const { return m_[i]; }
  const std::vector<float>& exp_avg_sq(size_t i) const { return v_[i]; }
  const AdamWConfig& config() const { return cfg_; }

 private:
  nn::ParamList<float> params_;
  AdamWConfig cfg_;
  std::vector<std::vector<float>> m_, v_;
  int64_t t_ = 0;
};

// lr at `step` (0-based) of `total`: linear warmup over `warmup` steps to peak, then a
// cosine to min_ratio * peak at the last step.
double lr_at(int64_t step, int64_t total, int64_t warmup, double peak, double min_ratio);

// Scales every gradient so that the global L2 norm is at most max_norm (<= 0: no clipping).
// Returns the norm before clipping; throws gdn::Error if it is not finite.
double clip_grad_norm(const nn::ParamList<float>& params, double max_norm);

}  // namespace gdn::train
