// Causal softmax attention (full or sliding window) with RoPE and grouped KV heads.
#include <algorithm>
#include <cmath>

#include "gdn/common.h"
#include "gdn/nn/mixer.h"
#include "gdn/nn/rope.h"

namespace gdn::nn {

template <class T>
Attention<T>::Attention(const ModelConfig& cfg, int window, Rng& rng, double out_std)
    : D_(cfg.d_model),
      H_(cfg.num_attn_heads()),
      KVH_(cfg.num_attn_kv_heads()),
      Dh_(cfg.attn_dim()),
      window_(window),
      theta_(cfg.rope_theta) {
  q_proj.init(D_, H_ * Dh_, rng, cfg.init_std);
  k_proj.init(D_, KVH_ * Dh_, rng, cfg.init_std);
  v_proj.init(D_, KVH_ * Dh_, rng, cfg.init_std);
  o_proj.init(H_ * Dh_, D_, rng, out_std);
}

template <class T>
void Attention<T>::collect(const std::string& prefix, ParamList<T>& list) {
  q_proj.collect(prefix + ".q_proj", list);
  k_proj.collect(prefix + ".k_proj", list);
  v_proj.collect(prefix + ".v_proj", list);
  o_proj.collect(prefix + ".o_proj", list);
}

template <class T>
void Attention<T>::forward(const T* x, int B, int Tn, T* y) {
  B_ = B;
  T_ = Tn;
  const int N = B * Tn;
  x_.assign(x, x + size_t(N) * D_);
  q_.resize(size_t(N) * H_ * Dh_);
  k_.resize(size_t(N) * KVH_ * Dh_);
  v_.resize(size_t(N) * KVH_ * Dh_);
  q_proj.forward(x, N, q_.data());
  k_proj.forward(x, N, k_.data());
  v_proj.forward(x, N, v_.data());
  apply_rope(q_.data(), B, Tn, H_, Dh_, Dh_, theta_, 0, false);
  apply_rope(k_.data(), B, Tn, KVH_, Dh_, Dh_, theta_, 0, false);
  p_.assign(size_t(B) * H_ * Tn * Tn, T(0));
  o_.assign(size_t(N) * H_ * Dh_, T(0));
  const T scale = T(1 / std::sqrt(double(Dh_)));
  const int group = H_ / KVH_;
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H_; ++h) {
      const int kh = h / group;
      for (int i = 0; i < Tn; ++i) {
        const int lo = window_ > 0 ? std::max(0, i - window_ + 1) : 0;
        const T* qi = q_.data() + ((size_t(b) * Tn + i) * H_ + h) * Dh_;
        T* p = p_.data() + ((size_t(b) * H_ + h) * Tn + i) * Tn;
        T mx = -INFINITY;
        for (int j = lo; j <= i; ++j) {
          const T* kj = k_.data() + ((size_t(b) * Tn + j) * KVH_ + kh) * Dh_;
          T s = 0;
          for (int d = 0; d < Dh_; ++d) s += qi[d] * kj[d];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        T sum = 0;
        for (int j = lo; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
        T* oi = o_.data() + ((size_t(b) * Tn + i) * H_ + h) * Dh_;
        for (int j = lo; j <= i; ++j) {
          p[j] /= sum;
          const T* vj = v_.data() + ((size_t(b) * Tn + j) * KVH_ + kh) * Dh_;
          for (int d = 0; d < Dh_; ++d) oi[d] += p[j] * vj[d];
        }
      }
    }
  o_proj.forward(o_.data(), N, y);
}

template <class T>
void Attention<T>::backward(const T* dy, T* dx) {
  const int N = B_ * T_, Tn = T_;
  std::vector<T> d_o(size_t(N) * H_ * Dh_), dq(q_.size(), T(0)), dk(k_.size(), T(0)), dv(v_.size(), T(0));
  o_proj.backward(o_.data(), dy, N, d_o.data(), false);
  const T scale = T(1 / std::sqrt(double(Dh_)));
  const int group = H_ / KVH_;
  // One task per (batch, kv head): the query heads of a group all write its dk, dv.
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int b = 0; b < B_; ++b)
    for (int kh = 0; kh < KVH_; ++kh) {
      std::vector<T> ds(Tn);
      for (int h = kh * group; h < (kh + 1) * group; ++h)
        for (int i = 0; i < Tn; ++i) {
          const int lo = window_ > 0 ? std::max(0, i - window_ + 1) : 0;
          const size_t qrow = ((size_t(b) * Tn + i) * H_ + h) * Dh_;
          const T* doi = d_o.data() + qrow;
          const T* p = p_.data() + ((size_t(b) * H_ + h) * Tn + i) * Tn;
          T dot = 0;
          for (int j = lo; j <= i; ++j) {
            const size_t krow = ((size_t(b) * Tn + j) * KVH_ + kh) * Dh_;
            T dp = 0;
            for (int d = 0; d < Dh_; ++d) {
              dp += doi[d] * v_[krow + d];
              dv[krow + d] += p[j] * doi[d];
            }
            ds[j] = dp;
            dot += p[j] * dp;
          }
          for (int j = lo; j <= i; ++j) {
            const size_t krow = ((size_t(b) * Tn + j) * KVH_ + kh) * Dh_;
            const T s = p[j] * (ds[j] - dot) * scale;
            for (int d = 0; d < Dh_; ++d) {
              dq[qrow + d] += s * k_[krow + d];
              dk[krow + d] += s * q_[qrow + d];
            }
          }
        }
    }
  apply_rope(dq.data(), B_, T_, H_, Dh_, Dh_, theta_, 0, true);
  apply_rope(dk.data(), B_, T_, KVH_, Dh_, Dh_, theta_, 0, true);
  q_proj.backward(x_.data(), dq.data(), N, dx, false);
  k_proj.backward(x_.data(), dk.data(), N, dx, true);
  v_proj.backward(x_.data(), dv.data(), N, dx, true);
}

template class Attention<float>;
template class Attention<double>;

}  // namespace gdn::nn
