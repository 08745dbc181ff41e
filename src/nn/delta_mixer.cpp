// The delta-rule family's layer shell (include/gdn/nn/mixer.h), forward and backward.
#include <cmath>

#include "gdn/common.h"
#include "gdn/nn/activations.h"
#include "gdn/nn/mixer.h"
#include "nn/op_call.h"

namespace gdn::nn {

namespace {
constexpr double kGlaGateNormalizer = 16.0;  // FLA GLA's gate_logit_normalizer

// FLA's dt initialisation: dt log-uniform in [dt_min, dt_max] (FLA: [1e-3, 0.1]; its floor
// of 1e-4 never binds there); dt_bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
template <class T>
void init_dt_bias(Param<T>& p, const std::array<double, 2>& dt_range, Rng& rng) {
  for (auto& x : p.value) {
    const double dt = std::exp(rng.uniform(std::log(dt_range[0]), std::log(dt_range[1])));
    x = T(dt + std::log(-std::expm1(-dt)));
  }
}
}  // namespace

template <class T>
DeltaMixer<T>::DeltaMixer(const ModelConfig& cfg, Variant variant, Rng& rng, double out_std)
    : cfg_(cfg), variant_(variant), delta_(variant_info(variant).delta) {
  D_ = cfg.d_model;
  H_ = cfg.heads;
  HV_ = cfg.num_v_heads();
  K_ = cfg.head_dim;
  V_ = cfg.v_dim();
  const double std = cfg.init_std;
  q_proj.init(D_, H_ * K_, rng, std);
  k_proj.init(D_, H_ * K_, rng, std);
  v_proj.init(D_, HV_ * V_, rng, std);
  q_conv1d.init(H_ * K_, cfg.conv_size, rng);
  k_conv1d.init(H_ * K_, cfg.conv_size, rng);
  v_conv1d.init(HV_ * V_, cfg.conv_size, rng);
  if (positive_feature_map()) {
    q_conv1d.activation = ShortConv<T>::Activation::elu_plus_one;
    k_conv1d.activation = ShortConv<T>::Activation::elu_plus_one;
  }
  if (scalar_gate()) {
    a_proj.init(D_, HV_, rng, std);
    A_log.init({HV_}, false);
    for (auto& a : A_log.value) a = T(std::log(rng.uniform(1e-4, 16.0)));  // A ~ U(0, 16)
    dt_bias.init({HV_}, false);
    init_dt_bias(dt_bias, cfg.gate_dt_range, rng);
  }
  if (vector_gate()) gk_proj.init(D_, HV_ * K_, rng, std);
  if (variant_ == Variant::kda) {
    A_log.init({HV_}, false);
    for (auto& a : A_log.value) a = T(std::log(rng.uniform(1.0, 16.0)));
    dt_bias.init({HV_ * K_}, false);
    init_dt_bias(dt_bias, cfg.gate_dt_range, rng);
  }
  if (delta_) b_proj.init(D_, HV_, rng, std);
  g_proj.init(D_, HV_ * V_, rng, std);
  o_norm.init(V_, cfg.norm_eps);
  o_proj.init(HV_ * V_, D_, rng, out_std);
}

template <class T>
void DeltaMixer<T>::collect(const std::string& prefix, ParamList<T>& list) {
  q_proj.collect(prefix + ".q_proj", list);
  k_proj.collect(prefix + ".k_proj", list);
  v_proj.collect(prefix + ".v_proj", list);
  if (scalar_gate()) {
    a_proj.collect(prefix + ".a_proj", list);
  }
  if (variant_ == Variant::gla) gk_proj.collect(prefix + ".gk_proj", list);
  if (variant_ == Variant::kda) gk_proj.collect(prefix + ".f_proj", list);
  if (delta_) b_proj.collect(prefix + ".b_proj", list);
  if (scalar_gate() || variant_ == Variant::kda) {
    list.push_back({prefix + ".A_log", &A_log});
    list.push_back({prefix + ".dt_bias", &dt_bias});
  }
  q_conv1d.collect(prefix + ".q_conv1d", list);
  k_conv1d.collect(prefix + ".k_conv1d", list);
  v_conv1d.collect(prefix + ".v_conv1d", list);
  g_proj.collect(prefix + ".g_proj", list);
  o_norm.collect(prefix + ".o_norm", list);
  o_proj.collect(prefix + ".o_proj", list);
}

template <class T>
OpConfig DeltaMixer<T>::op_config(int B, int Tn) const {
  OpConfig c;
  c.variant = variant_;
  c.B = B;
  c.T = Tn;
  c.H = H_;
  c.HV = HV_;
  c.K = K_;
  c.V = V_;
  c.l2norm_qk = !positive_feature_map();
  c.chunk_size = cfg_.chunk_size;
  return c;
}

template <class T>
void DeltaMixer<T>::forward(const T* x, int B, int Tn, T* y) {
  B_ = B;
  T_ = Tn;
  const int N = B * Tn;
  const size_t nk = size_t(N) * H_ * K_, nv = size_t(N) * HV_ * V_;
  x_.assign(x, x + size_t(N) * D_);
  std::vector<T> lin(std::max(nk, nv));
  q_.resize(nk);
  k_.resize(nk);
  v_.resize(nv);
  q_proj.forward(x, N, lin.data());
  q_conv1d.forward(lin.data(), B, Tn, q_.data());
  k_proj.forward(x, N, lin.data());
  k_conv1d.forward(lin.data(), B, Tn, k_.data());
  v_proj.forward(x, N, lin.data());
  v_conv1d.forward(lin.data(), B, Tn, v_.data());

  const T* v_in = v_.data();
  g_.clear();
  if (scalar_gate()) {
    gate_pre_.resize(size_t(N) * HV_);
    g_.resize(size_t(N) * HV_);
    a_proj.forward(x, N, gate_pre_.data());
    for (int n = 0; n < N; ++n)
      for (int h = 0; h < HV_; ++h) {
        const size_t i = size_t(n) * HV_ + h;
        g_[i] = log_decay(gate_pre_[i], A_log.value[h], dt_bias.value[h]);
      }
    if (variant_ == Variant::mamba2) {  // Mamba2's input is dt * x: scale v by dt
      vin_.resize(nv);
      for (int n = 0; n < N; ++n)
        for (int h = 0; h < HV_; ++h) {
          const size_t i = size_t(n) * HV_ + h;
          const T dt = softplus(gate_pre_[i] + dt_bias.value[h]);
          for (int j = 0; j < V_; ++j) vin_[i * V_ + j] = v_[i * V_ + j] * dt;
        }
      v_in = vin_.data();
    }
  } else if (vector_gate()) {
    const size_t ng = size_t(N) * HV_ * K_;
    gate_pre_.resize(ng);
    g_.resize(ng);
    gk_proj.forward(x, N, gate_pre_.data());
    for (size_t i = 0; i < ng; ++i) {
      if (variant_ == Variant::gla) {
        g_[i] = T(log_sigmoid(gate_pre_[i]) / kGlaGateNormalizer);
      } else {
        const size_t hk = i % (size_t(HV_) * K_);
        g_[i] = log_decay(gate_pre_[i], A_log.value[hk / K_], dt_bias.value[hk]);
      }
    }
  }
  beta_.clear();
  if (delta_) {
    beta_pre_.resize(size_t(N) * HV_);
    beta_.resize(size_t(N) * HV_);
    b_proj.forward(x, N, beta_pre_.data());
    for (size_t i = 0; i < beta_.size(); ++i) beta_[i] = delta_beta(beta_pre_[i], cfg_.allow_neg_eigval);
  }

  o_.resize(nv);
  OpInputs<T> in;
  in.q = q_.data();
  in.k = k_.data();
  in.v = v_in;
  in.g = g_.empty() ? nullptr : g_.data();
  in.beta = beta_.empty() ? nullptr : beta_.data();
  op_forward(cfg_.form, op_config(B, Tn), in, OpOutputs<T>{o_.data(), nullptr});

  z_.resize(nv);
  g_proj.forward(x, N, z_.data());
  y_norm_.resize(nv);
  o_norm.forward(o_.data(), z_.data(), N * HV_, y_norm_.data());
  o_proj.forward(y_norm_.data(), N, y);
}

template <class T>
void DeltaMixer<T>::backward(const T* dy, T* dx) {
  const int N = B_ * T_;
  const size_t nk = size_t(N) * H_ * K_, nv = size_t(N) * HV_ * V_;
  std::vector<T> dy_norm(nv), d_o(nv), dz(nv);
  o_proj.backward(y_norm_.data(), dy, N, dy_norm.data(), false);
  o_norm.backward(dy_norm.data(), d_o.data(), dz.data());
  g_proj.backward(x_.data(), dz.data(), N, dx, false);

  std::vector<T> dq(nk), dk(nk), dv(nv), dg(g_.size()), dbeta(beta_.size());
  OpInputs<T> in;
  in.q = q_.data();
  in.k = k_.data();
  in.v = variant_ == Variant::mamba2 ? vin_.data() : v_.data();
  in.g = g_.empty() ? nullptr : g_.data();
  in.beta = beta_.empty() ? nullptr : beta_.data();
  OpGrads<T> grads;
  grads.dq = dq.data();
  grads.dk = dk.data();
  grads.dv = dv.data();
  grads.dg = g_.empty() ? nullptr : dg.data();
  grads.dbeta = beta_.empty() ? nullptr : dbeta.data();
  op_backward(cfg_.form, op_config(B_, T_), in, OpGradOutputs<T>{d_o.data(), nullptr}, grads);

  if (scalar_gate()) {
    std::vector<T> da(size_t(N) * HV_);
    for (int n = 0; n < N; ++n)
      for (int h = 0; h < HV_; ++h) {
        const size_t i = size_t(n) * HV_ + h;
        const T pre = gate_pre_[i] + dt_bias.value[h];
        const T sp = softplus(pre), a = std::exp(A_log.value[h]);
        A_log.grad[h] += dg[i] * g_[i];  // d(-e^A sp)/dA_log = g
        T dsp = -a * dg[i];
        if (variant_ == Variant::mamba2) {  // v_in = v * dt, dt = sp
          T ddt = 0;
          for (int j = 0; j < V_; ++j) {
            ddt += dv[i * V_ + j] * v_[i * V_ + j];
            dv[i * V_ + j] *= sp;
          }
          dsp += ddt;
        }
        da[i] = dsp * sigmoid(pre);
        dt_bias.grad[h] += da[i];
      }
    a_proj.backward(x_.data(), da.data(), N, dx, true);
  } else if (vector_gate()) {
    const size_t ng = g_.size();
    std::vector<T> dpre(ng);
    for (size_t i = 0; i < ng; ++i) {
      if (variant_ == Variant::gla) {
        dpre[i] = T(dg[i] / kGlaGateNormalizer) * sigmoid(-gate_pre_[i]);
      } else {
        const size_t hk = i % (size_t(HV_) * K_);
        const T pre = gate_pre_[i] + dt_bias.value[hk];
        A_log.grad[hk / K_] += dg[i] * g_[i];
        dpre[i] = -std::exp(A_log.value[hk / K_]) * dg[i] * sigmoid(pre);
        dt_bias.grad[hk] += dpre[i];
      }
    }
    gk_proj.backward(x_.data(), dpre.data(), N, dx, true);
  }
  if (delta_) {
    const T c = cfg_.allow_neg_eigval ? T(2) : T(1);
    std::vector<T> db(beta_.size());
    for (size_t i = 0; i < db.size(); ++i) {
      const T s = sigmoid(beta_pre_[i]);
      db[i] = dbeta[i] * c * s * (T(1) - s);
    }
    b_proj.backward(x_.data(), db.data(), N, dx, true);
  }

  std::vector<T> dlin(std::max(nk, nv));
  q_conv1d.backward(dq.data(), dlin.data());
  q_proj.backward(x_.data(), dlin.data(), N, dx, true);
  k_conv1d.backward(dk.data(), dlin.data());
  k_proj.backward(x_.data(), dlin.data(), N, dx, true);
  v_conv1d.backward(dv.data(), dlin.data());
  v_proj.backward(x_.data(), dlin.data(), N, dx, true);
}

template class DeltaMixer<float>;
template class DeltaMixer<double>;

}  // namespace gdn::nn
