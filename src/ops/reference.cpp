// The fp64 reference: the recurrence of DESIGN.md §2 as one plain per-token loop, and its
// backward as the same loop run in reverse. Every other form is checked against this.
#include <vector>

#include <cmath>

#include "ops/core.h"

namespace gdn::detail {

namespace {

using Mat = std::vector<double>;  // K x V, row-major

// Pointers to one token's slices for value head hv.
struct Token {
  const double *q, *k, *v;
  double beta;
  const double* g;  // scalar: one value; vector: K values; null: no gate
};

Token token(const CoreProblem<double>& p, int b, int t, int hv) {
  const size_t tok = size_t(b) * p.T + t;
  const int h = hv / p.group();
  Token x;
  x.q = p.q + (tok * p.H + h) * p.K;
  x.k = p.k + (tok * p.H + h) * p.K;
  x.v = p.v + (tok * p.HV + hv) * p.V;
  x.beta = p.beta ? p.beta[tok * p.HV + hv] : 1.0;
  x.g = p.gate == GateKind::vector ? p.g + (tok * p.HV + hv) * p.K
        : p.gate == GateKind::scalar ? p.g + tok * p.HV + hv
                                     : nullptr;
  return x;
}

// alpha_i = exp(g) for the scalar gate, exp(g_i) for the vector gate, 1 without a gate.
double decay(const CoreProblem<double>& p, const Token& x, int i) {
  if (p.gate == GateKind::none) return 1.0;
  return std::exp(p.gate == GateKind::vector ? x.g[i] : x.g[0]);
}

Mat initial_state(const CoreProblem<double>& p, int n, int hv) {
  Mat S(size_t(p.K) * p.V, 0.0);
  if (p.h0)
    for (size_t i = 0; i < S.size(); ++i) S[i] = p.h0[(size_t(n) * p.HV + hv) * p.K * p.V + i];
  return S;
}

// One step: S <- Diag(alpha) S; u = beta (v - S^T k) (or u = v); S <- S + k u^T.
// Returns u and r = S_decayed^T k (needed by the backward).
void step(const CoreProblem<double>& p, const Token& x, Mat& S, std::vector<double>& u, std::vector<double>& r) {
  const int K = p.K, V = p.V;
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < V; ++j) S[i * V + j] *= decay(p, x, i);
  for (int j = 0; j < V; ++j) {
    r[j] = 0;
    for (int i = 0; i < K; ++i) r[j] += S[i * V + j] * x.k[i];
    u[j] = p.delta ? x.beta * (x.v[j] - r[j]) : x.v[j];
  }
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < V; ++j) S[i * V + j] += x.k[i] * u[j];
}

}  // namespace

void reference_core_forward(const CoreProblem<double>& p, const CoreOutputs<double>& out) {
  const int K = p.K, V = p.V;
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int n = 0; n < p.N; ++n)
    for (int hv = 0; hv < p.HV; ++hv) {
      const SeqSpan s = seq_span(p, n);
      Mat S = initial_state(p, n, hv);
      std::vector<double> u(V), r(V);
      for (int t = s.bos; t < s.eos; ++t) {
        const Token x = token(p, s.b, t, hv);
        step(p, x, S, u, r);
        double* o = out.o + ((size_t(s.b) * p.T + t) * p.HV + hv) * V;
        for (int j = 0; j < V; ++j) {  // o = scale S^T q
          o[j] = 0;
          for (int i = 0; i < K; ++i) o[j] += S[i * V + j] * x.q[i];
          o[j] *= p.scale;
        }
      }
      if (out.ht)
        for (size_t i = 0; i < S.size(); ++i) out.ht[(size_t(n) * p.HV + hv) * K * V + i] = S[i];
    }
}

void reference_core_backward(const CoreProblem<double>& p, const CoreGradOutputs<double>& dout,
                             const CoreGrads<double>& grads) {
  const int K = p.K, V = p.V;
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int n = 0; n < p.N; ++n)
    for (int hv = 0; hv < p.HV; ++hv) {
      const SeqSpan s = seq_span(p, n);
      // Forward again, keeping the state that enters each step.
      std::vector<Mat> before(s.len());
      Mat S = initial_state(p, n, hv);
      std::vector<double> u(V), r(V), du(V), dr(V);
      for (int t = s.bos; t < s.eos; ++t) {
        before[t - s.bos] = S;
        step(p, token(p, s.b, t, hv), S, u, r);
      }
      Mat dS(size_t(K) * V, 0.0);
      if (dout.dht)
        for (size_t i = 0; i < dS.size(); ++i) dS[i] = dout.dht[(size_t(n) * p.HV + hv) * K * V + i];

      for (int t = s.eos - 1; t >= s.bos; --t) {
        const size_t tok = size_t(s.b) * p.T + t;
        const Token x = token(p, s.b, t, hv);
        const Mat& S_prev = before[t - s.bos];
        Mat S_t = S_prev;  // becomes S_t; S_decayed = Diag(alpha) S_prev is rebuilt below
        step(p, x, S_t, u, r);
        const double* d_o = dout.d_o + (tok * p.HV + hv) * V;
        double* dq = grads.dq + (tok * p.HV + hv) * K;
        double* dk = grads.dk + (tok * p.HV + hv) * K;
        double* dv = grads.dv + (tok * p.HV + hv) * V;

        // o = scale S_t^T q
        for (int i = 0; i < K; ++i) {
          dq[i] = 0;
          for (int j = 0; j < V; ++j) {
            dq[i] += p.scale * S_t[i * V + j] * d_o[j];
            dS[i * V + j] += p.scale * x.q[i] * d_o[j];
          }
        }
        // S_t = S_decayed + k u^T
        for (int i = 0; i < K; ++i) {
          dk[i] = 0;
          for (int j = 0; j < V; ++j) dk[i] += dS[i * V + j] * u[j];
        }
        for (int j = 0; j < V; ++j) {
          du[j] = 0;
          for (int i = 0; i < K; ++i) du[j] += dS[i * V + j] * x.k[i];
        }
        // dS now stands for the gradient of S_decayed.
        if (p.delta) {  // u = beta (v - r), r = S_decayed^T k
          double dbeta = 0;
          for (int j = 0; j < V; ++j) {
            dbeta += du[j] * (x.v[j] - r[j]);
            dv[j] = x.beta * du[j];
            dr[j] = -x.beta * du[j];
          }
          grads.dbeta[tok * p.HV + hv] = dbeta;
          for (int i = 0; i < K; ++i) {
            const double S_decayed_row_scale = decay(p, x, i);
            for (int j = 0; j < V; ++j) {
              dS[i * V + j] += x.k[i] * dr[j];
              dk[i] += S_decayed_row_scale * S_prev[i * V + j] * dr[j];
            }
          }
        } else {
          for (int j = 0; j < V; ++j) dv[j] = du[j];
        }
        // S_decayed = Diag(alpha) S_prev, alpha = exp(g)
        double dg_scalar = 0;
        for (int i = 0; i < K; ++i) {
          const double a = decay(p, x, i);
          double dalpha = 0;
          for (int j = 0; j < V; ++j) {
            dalpha += dS[i * V + j] * S_prev[i * V + j];
            dS[i * V + j] *= a;
          }
          if (p.gate == GateKind::vector) grads.dg[(tok * p.HV + hv) * K + i] = dalpha * a;
          dg_scalar += dalpha * a;
        }
        if (p.gate == GateKind::scalar) grads.dg[tok * p.HV + hv] = dg_scalar;
      }
      if (grads.dh0)
        for (size_t i = 0; i < dS.size(); ++i) grads.dh0[(size_t(n) * p.HV + hv) * K * V + i] = dS[i];
    }
}

}  // namespace gdn::detail
