#include "ops/prepare.h"

#include <cmath>

#include "gdn/common.h"

namespace gdn {

namespace {

constexpr double kL2NormEps = 1e-6;  // added to the sum of squares, as transformers does

template <class T>
void check_finite(const char* name, const T* x, size_t n, const char* shape) {
  for (size_t i = 0; i < n; ++i)
    GDN_CHECK(std::isfinite(x[i]), "tensor ", name, " ", shape, ": non-finite value ", x[i],
              " at flat index ", i);
}

}  // namespace

template <class T>
void validate(const OpConfig& c, const OpInputs<T>& in) {
  const VariantInfo& info = c.info();
  GDN_CHECK(c.B > 0 && c.T > 0 && c.H > 0 && c.HV > 0 && c.K > 0 && c.V > 0,
            "op shape: B, T, H, HV, K, V must be positive, got B=", c.B, " T=", c.T, " H=", c.H,
            " HV=", c.HV, " K=", c.K, " V=", c.V);
  GDN_CHECK(c.HV % c.H == 0, "tensor v: its head count HV=", c.HV,
            " must be a multiple of the q/k head count H=", c.H, " (grouped value heads)");
  GDN_CHECK(c.chunk_size == 16 || c.chunk_size == 32 || c.chunk_size == 64,
            "chunk size must be 16, 32 or 64, got ", c.chunk_size);
  if (!c.cu_seqlens.empty()) {
    const auto& cu = c.cu_seqlens;
    GDN_CHECK(c.B == 1, "tensor cu_seqlens: varlen inputs pack sequences along T, so B must be 1, got B=", c.B);
    GDN_CHECK(cu.size() >= 2, "tensor cu_seqlens: expected at least 2 offsets [N+1], got ", cu.size());
    GDN_CHECK(cu.front() == 0, "tensor cu_seqlens: must start at 0, got ", cu.front());
    GDN_CHECK(cu.back() == c.T, "tensor cu_seqlens: must end at T=", c.T, ", got ", cu.back());
    for (size_t i = 1; i < cu.size(); ++i)
      GDN_CHECK(cu[i] >= cu[i - 1], "tensor cu_seqlens: offsets must not decrease, got ", cu[i - 1],
                " then ", cu[i], " at index ", i);
  }
  const size_t BT = size_t(c.B) * c.T;
  const std::string qk_shape = cat("[B,T,H,K]=[", c.B, ",", c.T, ",", c.H, ",", c.K, "]");
  const std::string v_shape = cat("[B,T,HV,V]=[", c.B, ",", c.T, ",", c.HV, ",", c.V, "]");
  const std::string bt_shape = cat("[B,T,HV]=[", c.B, ",", c.T, ",", c.HV, "]");
  GDN_CHECK(in.q && in.k && in.v, "op inputs: q, k and v are required");
  check_finite("q", in.q, BT * c.H * c.K, qk_shape.c_str());
  check_finite("k", in.k, BT * c.H * c.K, qk_shape.c_str());
  check_finite("v", in.v, BT * c.HV * c.V, v_shape.c_str());
  if (info.gate == GateKind::scalar || info.gate == GateKind::vector)
    GDN_CHECK(in.g, "tensor g: variant ", info.name, " needs a gate g of shape ",
              info.gate == GateKind::vector ? "[B,T,HV,K]" : "[B,T,HV]");
  if (in.g && info.gate != GateKind::none) {
    const size_t n = c.g_numel();
    const std::string g_shape = info.gate == GateKind::vector
                                    ? cat("[B,T,HV,K]=[", c.B, ",", c.T, ",", c.HV, ",", c.K, "]")
                                    : bt_shape;
    check_finite("g", in.g, n, g_shape.c_str());
    for (size_t i = 0; i < n; ++i)
      GDN_CHECK(in.g[i] <= 0, "tensor g ", g_shape, ": log-gates must be <= 0, got ", in.g[i],
                " at flat index ", i);
  }
  if (info.delta) {
    GDN_CHECK(in.beta, "tensor beta: variant ", info.name, " needs beta of shape [B,T,HV]");
    check_finite("beta", in.beta, BT * c.HV, bt_shape.c_str());
    if (info.longhorn)
      for (size_t i = 0; i < BT * c.HV; ++i)
        GDN_CHECK(in.beta[i] >= 0, "tensor beta: longhorn needs beta >= 0, got ", in.beta[i],
                  " at flat index ", i);
  }
  if (in.h0)
    check_finite("h0", in.h0, size_t(c.num_seqs()) * c.HV * c.K * c.V,
                 cat("[N,HV,K,V]=[", c.num_seqs(), ",", c.HV, ",", c.K, ",", c.V, "]").c_str());
}

namespace detail {

namespace {

// x / sqrt(sum x^2 + eps) for each K-vector; keeps 1/sqrt(...) for the backward.
template <class T>
void l2norm_rows(const T* x, size_t rows, int K, std::vector<T>& out, std::vector<T>& rnorm) {
  out.resize(rows * K);
  rnorm.resize(rows);
#pragma omp parallel for schedule(static)
  for (size_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int d = 0; d < K; ++d) ss += double(x[r * K + d]) * x[r * K + d];
    const T inv = T(1 / std::sqrt(ss + kL2NormEps));
    rnorm[r] = inv;
    for (int d = 0; d < K; ++d) out[r * K + d] = x[r * K + d] * inv;
  }
}

// dx = (dy - y (y . dy)) / sqrt(sum x^2 + eps), in place on dy.
template <class T>
void l2norm_rows_backward(const T* y, const T* rnorm, size_t rows, int K, T* dy) {
#pragma omp parallel for schedule(static)
  for (size_t r = 0; r < rows; ++r) {
    double dot = 0;
    for (int d = 0; d < K; ++d) dot += double(y[r * K + d]) * dy[r * K + d];
    for (int d = 0; d < K; ++d) dy[r * K + d] = T((dy[r * K + d] - y[r * K + d] * dot) * rnorm[r]);
  }
}

template <class T>
T squared_norm(const T* x, int K) {
  T s = 0;
  for (int d = 0; d < K; ++d) s += x[d] * x[d];
  return s;
}

}  // namespace

template <class T>
Prepared<T> prepare(const OpConfig& c, const OpInputs<T>& in) {
  validate(c, in);
  const VariantInfo& info = c.info();
  const size_t BT = size_t(c.B) * c.T;
  Prepared<T> p;
  CoreProblem<T>& core = p.core;
  core.B = c.B, core.T = c.T, core.H = c.H, core.HV = c.HV, core.K = c.K, core.V = c.V;
  core.N = c.num_seqs();
  core.cu_seqlens = c.cu_seqlens.empty() ? nullptr : c.cu_seqlens.data();
  core.delta = info.delta;
  core.scale = T(c.effective_scale());
  core.chunk_size = c.chunk_size;
  core.q = in.q, core.k = in.k, core.v = in.v, core.h0 = in.h0;
  if (c.l2norm_qk) {
    l2norm_rows(in.q, BT * c.H, c.K, p.q, p.q_rnorm);
    l2norm_rows(in.k, BT * c.H, c.K, p.k, p.k_rnorm);
    core.q = p.q.data(), core.k = p.k.data();
  }
  switch (info.gate) {
    case GateKind::none: core.gate = GateKind::none; break;
    case GateKind::scalar:
    case GateKind::vector:
      core.gate = info.gate;
      core.g = in.g;
      break;
    case GateKind::fixed:
      core.gate = GateKind::scalar;
      if (in.g) {
        core.g = in.g;
      } else {  // RetNet: gamma_hv = 1 - 2^(-5 - hv)
        p.g.resize(BT * c.HV);
        for (size_t i = 0; i < BT; ++i)
          for (int hv = 0; hv < c.HV; ++hv)
            p.g[i * c.HV + hv] = T(std::log1p(-std::exp2(-5.0 - hv)));
        core.g = p.g.data();
      }
      break;
  }
  if (info.delta) {
    core.beta = in.beta;
    if (info.longhorn) {  // beta' = beta / (1 + beta |k|^2), k after normalisation
      p.beta.resize(BT * c.HV);
      const int group = c.HV / c.H;
      for (size_t i = 0; i < BT; ++i)
        for (int hv = 0; hv < c.HV; ++hv) {
          const T kk = squared_norm(core.k + (i * c.H + hv / group) * c.K, c.K);
          const T b = in.beta[i * c.HV + hv];
          p.beta[i * c.HV + hv] = b / (1 + b * kk);
        }
      core.beta = p.beta.data();
    }
  }
  return p;
}

template <class T>
CoreGradBuffers<T> core_grad_buffers(const OpConfig& c, const Prepared<T>& prep, const OpGrads<T>& grads) {
  GDN_CHECK(grads.dq && grads.dk && grads.dv, "op gradients: dq, dk and dv are required");
  const CoreProblem<T>& core = prep.core;
  const size_t BT = size_t(c.B) * c.T;
  CoreGradBuffers<T> b;
  b.dq.resize(BT * c.HV * c.K);
  b.dk.resize(BT * c.HV * c.K);
  b.grads.dq = b.dq.data();
  b.grads.dk = b.dk.data();
  b.grads.dv = grads.dv;
  if (core.g) {
    // The caller's dg is written directly unless the gate was made here (RetNet default).
    if (grads.dg && prep.g.empty()) {
      b.grads.dg = grads.dg;
    } else {
      b.dg.resize(prep.g.empty() ? c.g_numel() : prep.g.size());
      b.grads.dg = b.dg.data();
    }
  }
  if (core.delta) {
    b.dbeta.resize(BT * c.HV);
    b.grads.dbeta = b.dbeta.data();
  }
  if (core.h0) {
    GDN_CHECK(grads.dh0, "op gradients: dh0 is required when h0 is given");
    b.grads.dh0 = grads.dh0;
  }
  return b;
}

template <class T>
void finish_backward(const OpConfig& c, const OpInputs<T>& in, const Prepared<T>& prep,
                     const CoreGrads<T>& core_grads, const OpGrads<T>& grads) {
  const VariantInfo& info = c.info();
  const CoreProblem<T>& core = prep.core;
  const size_t BT = size_t(c.B) * c.T;
  const int group = c.HV / c.H, K = c.K;
  T* dk_v = core_grads.dk;
  if (info.delta && grads.dbeta) {
    for (size_t i = 0; i < BT * c.HV; ++i) grads.dbeta[i] = core_grads.dbeta[i];
    if (info.longhorn) {
      // d beta'/d beta = 1/(1+b n)^2;  d beta'/d n = -b^2/(1+b n)^2 with n = |k|^2.
      for (size_t i = 0; i < BT; ++i)
        for (int hv = 0; hv < c.HV; ++hv) {
          const T* kh = core.k + (i * c.H + hv / group) * K;
          const T n = squared_norm(kh, K), b = in.beta[i * c.HV + hv];
          const T denom = (1 + b * n) * (1 + b * n);
          const T db_eff = core_grads.dbeta[i * c.HV + hv];
          grads.dbeta[i * c.HV + hv] = db_eff / denom;
          const T dn = -db_eff * b * b / denom;
          T* dk = dk_v + (i * c.HV + hv) * K;
          for (int d = 0; d < K; ++d) dk[d] += 2 * dn * kh[d];
        }
    }
  } else if (grads.dbeta) {  // the additive rule ignores beta
    for (size_t i = 0; i < BT * c.HV; ++i) grads.dbeta[i] = 0;
  }
  if (grads.dg && !prep.g.empty())  // a fixed gate the caller did not give has no gradient to return
    for (size_t i = 0; i < c.g_numel(); ++i) grads.dg[i] = 0;
  if (grads.dg && info.gate == GateKind::none)
    for (size_t i = 0; i < c.g_numel(); ++i) grads.dg[i] = 0;

  // Sum the value heads of each GVA group into their q/k head.
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < BT; ++i)
    for (int h = 0; h < c.H; ++h) {
      T* dq = grads.dq + (i * c.H + h) * K;
      T* dk = grads.dk + (i * c.H + h) * K;
      for (int d = 0; d < K; ++d) dq[d] = dk[d] = 0;
      for (int j = 0; j < group; ++j) {
        const size_t src = (i * c.HV + h * group + j) * K;
        for (int d = 0; d < K; ++d) {
          dq[d] += core_grads.dq[src + d];
          dk[d] += dk_v[src + d];
        }
      }
    }
  if (c.l2norm_qk) {
    l2norm_rows_backward(prep.q.data(), prep.q_rnorm.data(), BT * c.H, K, grads.dq);
    l2norm_rows_backward(prep.k.data(), prep.k_rnorm.data(), BT * c.H, K, grads.dk);
  }
}

#define GDN_INSTANTIATE(T)                                                                    \
  template Prepared<T> prepare(const OpConfig&, const OpInputs<T>&);                          \
  template CoreGradBuffers<T> core_grad_buffers(const OpConfig&, const Prepared<T>&,          \
                                                const OpGrads<T>&);                           \
  template void finish_backward(const OpConfig&, const OpInputs<T>&, const Prepared<T>&,      \
                                const CoreGrads<T>&, const OpGrads<T>&);
GDN_INSTANTIATE(float)
GDN_INSTANTIATE(double)
#undef GDN_INSTANTIATE

}  // namespace detail

template void validate(const OpConfig&, const OpInputs<float>&);
template void validate(const OpConfig&, const OpInputs<double>&);

}  // namespace gdn
