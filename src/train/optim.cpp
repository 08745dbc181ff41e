#include "gdn/train/optim.h"

#include <cmath>

#include "gdn/common.h"

namespace gdn::train {

AdamW::AdamW(const nn::ParamList<float>& params, AdamWConfig cfg) : params_(params), cfg_(cfg) {
  for (const auto& [name, p] : params_) {
    m_.emplace_back(p->numel(), 0.f);
    v_.emplace_back(p->numel(), 0.f);
  }
}

void AdamW::step(double lr) {
  ++t_;
  const double b1 = cfg_.beta1, b2 = cfg_.beta2;
  const double bc1 = 1 - std::pow(b1, double(t_)), bc2 = 1 - std::pow(b2, double(t_));
  const float step_size = float(lr / bc1), inv_bc2_sqrt = float(1 / std::sqrt(bc2));
  for (size_t i = 0; i < params_.size(); ++i) {
    nn::Param<float>& p = *params_[i].second;
    const float decay = p.decay ? float(1 - lr * cfg_.weight_decay) : 1.f;
    float* w = p.value.data();
    const float* g = p.grad.data();
    float* m = m_[i].data();
    float* v = v_[i].data();
    const size_t n = p.numel();
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < n; ++j) {
      w[j] *= decay;
      m[j] = float(b1) * m[j] + float(1 - b1) * g[j];
      v[j] = float(b2) * v[j] + float(1 - b2) * g[j] * g[j];
      w[j] -= step_size * m[j] / (std::sqrt(v[j]) * inv_bc2_sqrt + float(cfg_.eps));
    }
  }
}

double lr_at(int64_t step, int64_t total, int64_t warmup, double peak, double min_ratio) {
  if (warmup > 0 && step < warmup) return peak * double(step + 1) / double(warmup);
  const int64_t span = std::max<int64_t>(1, total - warmup - 1);
  const double progress = std::min(1.0, double(step - warmup) / double(span));
  const double cosine = 0.5 * (1 + std::cos(M_PI * progress));
  return peak * (min_ratio + (1 - min_ratio) * cosine);
}

double clip_grad_norm(const nn::ParamList<float>& params, double max_norm) {
  double sq = 0;
  for (const auto& [name, p] : params)
    for (float g : p->grad) sq += double(g) * g;
  const double norm = std::sqrt(sq);
  GDN_CHECK(std::isfinite(norm), "training: the gradient norm is not finite (", norm,
            "); lower the learning rate or check the data");
  if (max_norm > 0 && norm > max_norm) {
    const float s = float(max_norm / (norm + 1e-6));
    for (const auto& [name, p] : params)
      for (float& g : p->grad) g *= s;
  }
  return norm;
}

}  // namespace gdn::train
