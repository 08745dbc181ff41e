// The fp32 recurrent form on the CPU: one pass over the K x V state per token, vectorised
// along V, one (sequence, value head) pair per OpenMP task. The backward keeps a state
// checkpoint every kSegment tokens and recomputes each segment's states before walking it
// in reverse, so memory stays O(T/kSegment * K * V) per head.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/core.h"

namespace gdn::detail {

namespace {

constexpr int kSegment = 64;

using Vec = std::vector<float>;

struct Head {
  const CoreProblem<float>& p;
  int b, hv, h;

  size_t tok(int t) const { return size_t(b) * p.T + t; }
  const float* q(int t) const { return p.q + (tok(t) * p.H + h) * p.K; }
  const float* k(int t) const { return p.k + (tok(t) * p.H + h) * p.K; }
  const float* v(int t) const { return p.v + (tok(t) * p.HV + hv) * p.V; }
  float beta(int t) const { return p.beta ? p.beta[tok(t) * p.HV + hv] : 1.f; }
  // alpha = exp(g) for every row of the state (scalar gates repeat one value).
  void decay(int t, float* a) const {
    if (p.gate == GateKind::none) {
      std::fill(a, a + p.K, 1.f);
    } else if (p.gate == GateKind::scalar) {
      std::fill(a, a + p.K, std::exp(p.g[tok(t) * p.HV + hv]));
    } else {
      const float* g = p.g + (tok(t) * p.HV + hv) * p.K;
      for (int i = 0; i < p.K; ++i) a[i] = std::exp(g[i]);
    }
  }
};

// S <- Diag(a) S and r = S^T k in one sweep.
void decay_and_read(float* S, const float* a, const float* k, float* r, int K, int V) {
  std::fill(r, r + V, 0.f);
  for (int i = 0; i < K; ++i) {
    float* row = S + size_t(i) * V;
    const float ai = a[i], ki = k[i];
#pragma omp simd
    for (int j = 0; j < V; ++j) {
      row[j] *= ai;
      r[j] += ki * row[j];
    }
  }
}

// u = beta (v - r) for the delta rule, u = v for the additive rule.
void new_values(const CoreProblem<float>& p, const float* v, float beta, const float* r, float* u) {
  for (int j = 0; j < p.V; ++j) u[j] = p.delta ? beta * (v[j] - r[j]) : v[j];
}

// S <- S + k u^T.
void add_outer(float* S, const float* k, const float* u, int K, int V) {
  for (int i = 0; i < K; ++i) {
    float* row = S + size_t(i) * V;
    const float ki = k[i];
#pragma omp simd
    for (int j = 0; j < V; ++j) row[j] += ki * u[j];
  }
}

// S <- S + k u^T and o = scale S^T q in one sweep.
void write_and_output(float* S, const float* k, const float* u, const float* q, float scale, float* o, int K,
                      int V) {
  std::fill(o, o + V, 0.f);
  for (int i = 0; i < K; ++i) {
    float* row = S + size_t(i) * V;
    const float ki = k[i], qi = q[i];
#pragma omp simd
    for (int j = 0; j < V; ++j) {
      row[j] += ki * u[j];
      o[j] += qi * row[j];
    }
  }
  for (int j = 0; j < V; ++j) o[j] *= scale;
}

void load_state(const CoreProblem<float>& p, int n, int hv, float* S) {
  const size_t KV = size_t(p.K) * p.V;
  if (p.h0)
    std::copy_n(p.h0 + (size_t(n) * p.HV + hv) * KV, KV, S);
  else
    std::fill(S, S + KV, 0.f);
}

}  // namespace

void recurrent_core_forward(const CoreProblem<float>& p, const CoreOutputs<float>& out) {
  const int K = p.K, V = p.V;
  const size_t KV = size_t(K) * V;
#pragma omp parallel
  {
    Vec S(KV), a(K), r(V), u(V);
#pragma omp for collapse(2) schedule(dynamic)
    for (int n = 0; n < p.N; ++n)
      for (int hv = 0; hv < p.HV; ++hv) {
        const SeqSpan s = seq_span(p, n);
        const Head x{p, s.b, hv, hv / p.group()};
        load_state(p, n, hv, S.data());
        for (int t = s.bos; t < s.eos; ++t) {
          x.decay(t, a.data());
          decay_and_read(S.data(), a.data(), x.k(t), r.data(), K, V);
          new_values(p, x.v(t), x.beta(t), r.data(), u.data());
          write_and_output(S.data(), x.k(t), u.data(), x.q(t), p.scale, out.o + (x.tok(t) * p.HV + hv) * V, K, V);
        }
        if (out.ht) std::copy_n(S.data(), KV, out.ht + (size_t(n) * p.HV + hv) * KV);
      }
  }
}

void recurrent_core_backward(const CoreProblem<float>& p, const CoreGradOutputs<float>& dout,
                             const CoreGrads<float>& grads) {
  const int K = p.K, V = p.V;
  const size_t KV = size_t(K) * V;
#pragma omp parallel
  {
    Vec S(KV), dS(KV), a(K), r(V), u(V), du(V), dr(V);
    Vec checkpoints, segment(kSegment * KV), seg_r(kSegment * size_t(V)), seg_u(kSegment * size_t(V));
#pragma omp for collapse(2) schedule(dynamic)
    for (int n = 0; n < p.N; ++n)
      for (int hv = 0; hv < p.HV; ++hv) {
        const SeqSpan s = seq_span(p, n);
        const Head x{p, s.b, hv, hv / p.group()};
        const int num_segments = (s.len() + kSegment - 1) / kSegment;
        // Forward: the state entering each segment.
        checkpoints.resize(num_segments * KV);
        load_state(p, n, hv, S.data());
        for (int t = s.bos; t < s.eos; ++t) {
          if ((t - s.bos) % kSegment == 0) std::copy_n(S.data(), KV, checkpoints.data() + (t - s.bos) / kSegment * KV);
          x.decay(t, a.data());
          decay_and_read(S.data(), a.data(), x.k(t), r.data(), K, V);
          new_values(p, x.v(t), x.beta(t), r.data(), u.data());
          add_outer(S.data(), x.k(t), u.data(), K, V);
        }
        if (dout.dht)
          std::copy_n(dout.dht + (size_t(n) * p.HV + hv) * KV, KV, dS.data());
        else
          std::fill(dS.begin(), dS.end(), 0.f);

        for (int seg = num_segments - 1; seg >= 0; --seg) {
          const int t0 = s.bos + seg * kSegment, t1 = std::min(s.eos, t0 + kSegment);
          // Recompute the segment: keep each step's entering state, r and u.
          std::copy_n(checkpoints.data() + seg * KV, KV, S.data());
          for (int t = t0; t < t1; ++t) {
            const int i_t = t - t0;
            std::copy_n(S.data(), KV, segment.data() + i_t * KV);
            x.decay(t, a.data());
            decay_and_read(S.data(), a.data(), x.k(t), seg_r.data() + i_t * V, K, V);
            new_values(p, x.v(t), x.beta(t), seg_r.data() + i_t * V, seg_u.data() + i_t * V);
            add_outer(S.data(), x.k(t), seg_u.data() + i_t * V, K, V);
          }
          for (int t = t1 - 1; t >= t0; --t) {
            const int i_t = t - t0;
            const size_t tok = x.tok(t);
            const float* S_prev = segment.data() + i_t * KV;
            const float *q = x.q(t), *k = x.k(t), *v = x.v(t), *d_o = dout.d_o + (tok * p.HV + hv) * V;
            const float* rt = seg_r.data() + i_t * V;
            const float* ut = seg_u.data() + i_t * V;
            const float beta = x.beta(t);
            float* dq = grads.dq + (tok * p.HV + hv) * K;
            float* dk = grads.dk + (tok * p.HV + hv) * K;
            float* dv = grads.dv + (tok * p.HV + hv) * V;
            x.decay(t, a.data());
            float u_dot_do = 0;
            for (int j = 0; j < V; ++j) u_dot_do += ut[j] * d_o[j];
            std::fill(du.begin(), du.end(), 0.f);
            // o = scale S_t^T q with S_t = Diag(a) S_prev + k u^T; then through S_t = S_decayed + k u^T.
            for (int i = 0; i < K; ++i) {
              const float* sp = S_prev + size_t(i) * V;
              float* ds = dS.data() + size_t(i) * V;
              const float sq = p.scale * q[i], ki = k[i], ai = a[i];
              float sp_dot_do = 0, ds_dot_u = 0;
#pragma omp simd reduction(+ : sp_dot_do, ds_dot_u)
              for (int j = 0; j < V; ++j) {
                sp_dot_do += sp[j] * d_o[j];
                ds[j] += sq * d_o[j];
                ds_dot_u += ds[j] * ut[j];
                du[j] += ki * ds[j];
              }
              dq[i] = p.scale * (ai * sp_dot_do + ki * u_dot_do);
              dk[i] = ds_dot_u;
            }
            if (p.delta) {  // u = beta (v - r), r = S_decayed^T k
              float dbeta = 0;
              for (int j = 0; j < V; ++j) {
                dbeta += du[j] * (v[j] - rt[j]);
                dv[j] = beta * du[j];
                dr[j] = -beta * du[j];
              }
              grads.dbeta[tok * p.HV + hv] = dbeta;
            } else {
              std::copy(du.begin(), du.end(), dv);
            }
            // Through r = S_decayed^T k and S_decayed = Diag(a) S_prev.
            float dg_scalar = 0;
            for (int i = 0; i < K; ++i) {
              const float* sp = S_prev + size_t(i) * V;
              float* ds = dS.data() + size_t(i) * V;
              const float ki = k[i], ai = a[i];
              float sp_dot_dr = 0, dalpha = 0;
              if (p.delta) {
#pragma omp simd reduction(+ : sp_dot_dr)
                for (int j = 0; j < V; ++j) {
                  ds[j] += ki * dr[j];
                  sp_dot_dr += sp[j] * dr[j];
                }
                dk[i] += ai * sp_dot_dr;
              }
#pragma omp simd reduction(+ : dalpha)
              for (int j = 0; j < V; ++j) {
                dalpha += ds[j] * sp[j];
                ds[j] *= ai;
              }
              if (p.gate == GateKind::vector) grads.dg[(tok * p.HV + hv) * K + i] = dalpha * ai;
              dg_scalar += dalpha * ai;
            }
            if (p.gate == GateKind::scalar) grads.dg[tok * p.HV + hv] = dg_scalar;
          }
        }
        if (grads.dh0) std::copy_n(dS.data(), KV, grads.dh0 + (size_t(n) * p.HV + hv) * KV);
      }
  }
}

}  // namespace gdn::detail
