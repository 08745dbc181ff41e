// The fp32 chunkwise (WY / UT) form on the CPU, forward and backward (shared/DESIGN.md §2).
//
// Per (sequence, value head) and chunk of L <= C tokens, with gamma the cumulative log
// gate inside the chunk (a vector over K for GLA/KDA, a scalar otherwise), E = e^gamma,
// El = e^(gamma_L - gamma), Q already multiplied by the scale, S the entering state:
//
//   N  = gated K K^T, strictly lower:  N_ij = sum_d k_id k_jd e^(gamma_id - gamma_jd)
//   P  = gated Q K^T, lower incl. diagonal (same form)
//   A  = (I + Diag(beta) N)^-1                       (blocked forward substitution)
//   W  = A Diag(beta) (K . E),  U = A Diag(beta) V   (delta rule; additive: V' = V)
//   V' = U - W S
//   O  = (Q . E) S + P V'
//   S <- Diag(e^gamma_L) S + (K . El)^T V'
//
// Numerics: gamma is accumulated in double and only differences are exponentiated (no
// e^(+gamma) is ever formed). Vector gates take the products per 16-token sub-chunk
// relative to the sub-chunk's first token (both factors <= 1), and inside the diagonal
// sub-chunks with one exp per element.
//
// The backward stores each chunk's entering state and V' in a forward pass, then walks
// the chunks backwards through the lines above in reverse. The inverse needs no A^T dA A^T:
// dM = -A^T (dW Xw^T + dU Xu^T) A^T = -(dXw W^T + dXu U^T). The gate gradient is summed
// over the terms that cross each token boundary, so it has no cancellation at g = -30.
//
// Work: OpenMP tasks are (sequence, group of up to 8 value heads); a task walks its heads
// in lockstep chunk by chunk, so it reads neighbouring rows of q/k/v, and keeps a chunk's
// operands in L1/L2 for the small kernels of chunk_kernels.h.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "gdn/common.h"
#include "ops/chunk_kernels.h"
#include "ops/core.h"

namespace gdn::detail {
namespace {

using chunk::gemm;
using chunk::Tri;

constexpr int kSubChunk = 16;  // vector-gate sub-chunk (exponent reference span)

// out (ld `ldo`, L x L) = the gated lower products of x and y: for j < i (or j <= i with
// `diag`), out_ij = sum_d x_id y_jd e^(gam_id - gam_jd); zero elsewhere. x, y, gam: L x K.
// Per 16-row block I with reference r = gam of its first row, x_i e^(gam_i - r) <= 1 and,
// for the rows j before I, y_j e^(r - gam_j) <= 1: one product. Inside the diagonal block
// the second factor is >= 1; it is used when the block's gates span under
// kFactorSpan nats (no overflow or underflow), else each element takes its own exps.
// xr, yr, yrt: scratch of C x K floats each.
void gated_lower(int L, int K, const float* x, const float* y, const double* gam, bool diag,
                 float* out, int ldo, float* xr, float* yr, float* yrt) {
  constexpr double kFactorSpan = 60;
  for (int i0 = 0; i0 < L; i0 += kSubChunk) {
    const int ni = std::min(kSubChunk, L - i0);
    const double* ref = gam + i0 * K;
    for (int i = 0; i < ni; ++i) chunk::mul_exp_diff(K, x + (i0 + i) * K, gam + (i0 + i) * K, ref, xr + i * K);
    if (i0 > 0) {
      for (int j = 0; j < i0; ++j) chunk::mul_exp_diff(K, y + j * K, ref, gam + j * K, yr + j * K);
      chunk::transpose(i0, K, yr, K, yrt, i0);
      gemm(ni, i0, K, 1.f, xr, K, false, yrt, i0, out + i0 * ldo, ldo, false);
    }
    double span = 0;
    for (int i = i0; i < i0 + ni; ++i)
      for (int d = 0; d < K; ++d) span = std::max(span, std::abs(gam[i * K + d] - ref[d]));
    if (span < kFactorSpan) {
      for (int j = 0; j < ni; ++j) chunk::mul_exp_diff(K, y + (i0 + j) * K, ref, gam + (i0 + j) * K, yr + j * K);
      chunk::transpose(ni, K, yr, K, yrt, ni);
      gemm(ni, ni, K, 1.f, xr, K, false, yrt, ni, out + i0 * ldo + i0, ldo, false);
    } else {
      for (int i = i0; i < i0 + ni; ++i)
        for (int j = i0; j <= i; ++j)
          out[i * ldo + j] = chunk::dot_exp_diff(K, x + i * K, y + j * K, gam + i * K, gam + j * K);
    }
    for (int i = i0; i < i0 + ni; ++i) std::fill(out + i * ldo + (diag ? i + 1 : i), out + i * ldo + L, 0.f);
  }
}

// Scratch for one chunk of one (sequence, value head); one per thread, reused.
struct ChunkWork {
  int C, K, V;
  int L = 0;  // tokens in the current chunk
  // Gathered inputs: q (times scale), k, v, beta, gamma (L, or L x K for vector gates).
  std::vector<float> q, k, v, beta;
  std::vector<double> gam, zeros, rep;  // cumulative log gate (see chunk_kernels.h); scratch
  // Gated operands: qe = q.E, ke = k.E, kl = k.El; decay = e^gamma_L (1 or K).
  std::vector<float> qe, ke, kl, e, el, decay, gmat;  // gmat: e^(gamma_i - gamma_j), scalar gate
  std::vector<float> kt;                                // k^T, K x C
  std::vector<float> n, a, lm, p;                       // C x C: N, A, Diag(beta) N, P
  std::vector<float> xw, xu, w, u;                      // C x K, C x V, C x K, C x V (u -> V')
  std::vector<float> sub0, sub1, sub2;                  // C x max(K, V, 16) scratch
  std::vector<float> ob;                                // C x V output rows
  // Backward.
  std::vector<float> dob, dvp, dp, dqe, dkl, dgl, st, dst, vpt, dw, dm, wt, ut, dxw, dxu;
  std::vector<float> dq, dk, dv, dg, dbeta, ds_new;

  ChunkWork(int C_, int K_, int V_) : C(C_), K(K_), V(V_) {
    const size_t CK = size_t(C) * K, CV = size_t(C) * V, CC = size_t(C) * C, KV = size_t(K) * V;
    // invert() also takes a kSubChunk x (C - kSubChunk) block of sub2, more than C x max(K, V)
    // for heads narrower than 16.
    const size_t CM = size_t(C) * std::max({K, V, kSubChunk});
    for (auto* b : {&q, &k, &qe, &ke, &kl, &xw, &w, &kt, &dqe, &dkl, &dw, &wt, &dxw, &dq, &dk})
      b->resize(CK);
    for (auto* b : {&v, &xu, &u, &ob, &dob, &dvp, &vpt, &ut, &dxu, &dv}) b->resize(CV);
    for (auto* b : {&n, &a, &lm, &p, &gmat, &dp, &dm}) b->resize(CC);
    for (auto* b : {&sub0, &sub1, &sub2}) b->resize(CM);
    for (auto* b : {&st, &dst, &ds_new}) b->resize(KV);
    zeros.assign(std::max(K, C), 0.0);
    rep.resize(C);
    for (auto* b : {&beta, &e, &el, &dbeta}) b->resize(C);
    gam.resize(CK);
    dg.resize(CK);
    decay.resize(K);
    dgl.resize(K);
  }
};

// Per-thread scratch kept across calls (OpenMP's threads persist): the chunk buffers and
// the backward's tape, which grow to the largest problem seen instead of being allocated
// and page-faulted on every call.
struct ThreadScratch {
  std::unique_ptr<ChunkWork> work;
  std::vector<float> running, states, vnews;

  ChunkWork& chunk_work(int C, int K, int V) {
    if (!work || work->C != C || work->K != K || work->V != V) work = std::make_unique<ChunkWork>(C, K, V);
    return *work;
  }
  static float* grown(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
  }
};

ThreadScratch& thread_scratch() {
  thread_local ThreadScratch scratch;
  return scratch;
}

template <GateKind G, bool kDelta>
struct ChunkForm {
  const CoreProblem<float>& p;
  ChunkWork& w;
  int b, h, hv;  // batch row, q/k head, value head

  // q.E and k.E: formed by load for vector gates, by scaled_qk for the scalar gate's
  // backward (its forward scales rows inside the products instead).
  const float* qe() const { return G == GateKind::none ? w.q.data() : w.qe.data(); }
  const float* ke() const { return G == GateKind::none ? w.k.data() : w.ke.data(); }
  void scaled_qk() {
    if constexpr (G == GateKind::scalar)
      for (int i = 0; i < w.L; ++i)
        for (int d = 0; d < w.K; ++d) {
          w.qe[i * w.K + d] = w.q[i * w.K + d] * w.e[i];
          w.ke[i * w.K + d] = w.k[i * w.K + d] * w.e[i];
        }
  }
  const float* kl() const { return G == GateKind::none ? w.k.data() : w.kl.data(); }
  size_t row(int t) const { return (size_t(b) * p.T + t) * p.HV + hv; }  // value-head row of token t

  // Asks for the rows of tokens [t0, t1) of q, k, v (and do to read, o to write) ahead
  // of use: rows are H*K floats apart, too far for the hardware prefetcher.
  void prefetch(int t0, int t1, const float* d_o = nullptr, float* o = nullptr) const {
    t0 = std::max(t0, 0), t1 = std::min(t1, p.T);
    auto lines = [](const float* x, int n) {
      for (int i = 0; i < n; i += 16) __builtin_prefetch(x + i);
    };
    for (int t = t0; t < t1; ++t) {
      const size_t qk_row = (size_t(b) * p.T + t) * p.H + h, r = row(t);
      lines(p.q + qk_row * w.K, w.K);
      lines(p.k + qk_row * w.K, w.K);
      lines(p.v + r * w.V, w.V);
      if (d_o) lines(d_o + r * w.V, w.V);
      if (o)
        for (int i = 0; i < w.V; i += 16) __builtin_prefetch(o + r * w.V + i, 1);
    }
  }

  // Gathers the chunk of tokens [t0, t0 + L) and forms its gated operands.
  void load(int t0, int L) {
    const int K = w.K, V = w.V;
    w.L = L;
    for (int i = 0; i < L; ++i) {
      const size_t qk_row = (size_t(b) * p.T + t0 + i) * p.H + h, r = row(t0 + i);
      const float* qs = p.q + qk_row * K;
      for (int d = 0; d < K; ++d) w.q[i * K + d] = p.scale * qs[d];
      std::memcpy(&w.k[i * K], p.k + qk_row * K, K * sizeof(float));
      std::memcpy(&w.v[i * V], p.v + r * V, V * sizeof(float));
      if constexpr (kDelta) w.beta[i] = p.beta[r];
      if constexpr (G == GateKind::scalar) w.gam[i] = (i ? w.gam[i - 1] : 0.0) + p.g[r];
      if constexpr (G == GateKind::vector)
        for (int d = 0; d < K; ++d) w.gam[i * K + d] = (i ? w.gam[(i - 1) * K + d] : 0.0) + p.g[r * K + d];
    }
    chunk::transpose(L, K, w.k.data(), K, w.kt.data(), L);
    if constexpr (G == GateKind::scalar) {
      const double* gam = w.gam.data();
      double* rep = w.rep.data();  // one gamma repeated
      chunk::exp_diff(L, gam, w.zeros.data(), w.e.data());
      std::fill(rep, rep + L, gam[L - 1]);
      chunk::exp_diff(L, rep, gam, w.el.data());
      w.decay[0] = w.e[L - 1];
      for (int i = 0; i < L; ++i) {
        std::fill(rep, rep + i + 1, gam[i]);
        chunk::exp_diff(i + 1, rep, gam, &w.gmat[i * w.C]);
        for (int d = 0; d < K; ++d) w.kl[i * K + d] = w.k[i * K + d] * w.el[i];
      }
    }
    if constexpr (G == GateKind::vector) {
      const double* last = &w.gam[(L - 1) * K];
      chunk::exp_diff(K, last, w.zeros.data(), w.decay.data());
      for (int i = 0; i < L; ++i) {
        const double* gi = &w.gam[i * K];
        chunk::mul_exp_diff(K, &w.q[i * K], gi, w.zeros.data(), &w.qe[i * K]);
        chunk::mul_exp_diff(K, &w.k[i * K], gi, w.zeros.data(), &w.ke[i * K]);
        chunk::mul_exp_diff(K, &w.k[i * K], last, gi, &w.kl[i * K]);
      }
    }
  }

  // Gated lower products of x with k into out (C x C): P (diag) or N (strict).
  void gated_products(const float* x, bool diag, float* out) {
    const int L = w.L, K = w.K, C = w.C;
    if constexpr (G == GateKind::vector) {
      gated_lower(L, K, x, w.k.data(), w.gam.data(), diag, out, C, w.sub0.data(), w.sub1.data(),
                  w.sub2.data());
    } else {
      gemm(L, L, K, 1.f, x, K, false, w.kt.data(), L, out, C, false, Tri::full, true);
      for (int i = 0; i < L; ++i) {
        float* r = out + i * C;
        const int jend = diag ? i + 1 : i;
        if constexpr (G == GateKind::scalar)
          for (int j = 0; j < jend; ++j) r[j] *= w.gmat[i * C + j];
        std::fill(r + jend, r + L, 0.f);
      }
    }
  }

  // A = (I + Diag(beta) N)^-1 by blocks of 16 rows: the diagonal block by substitution,
  // the rows left of it as A_{I,<I} = -A_II (M_{I,<I} A_{<I,<I}) (two small products).
  void invert() {
    const int L = w.L, C = w.C;
    float* a = w.a.data();
    float* m = w.lm.data();
    for (int i = 0; i < L; ++i)
      for (int j = 0; j < i; ++j) m[i * C + j] = w.beta[i] * w.n[i * C + j];
    for (int i0 = 0; i0 < L; i0 += kSubChunk) {
      const int i1 = std::min(L, i0 + kSubChunk);
      for (int i = i0; i < i1; ++i) {
        float* ai = a + i * C;
        std::fill(ai + i0, ai + L, 0.f);
        ai[i] = 1.f;
        for (int j = i0; j < i; ++j) {
          const float c = -m[i * C + j];
          const float* aj = a + j * C;
          for (int x = i0; x <= j; ++x) ai[x] += c * aj[x];
        }
      }
      if (i0 > 0) {
        float* tmp = w.sub2.data();
        gemm(i1 - i0, i0, i0, 1.f, m + i0 * C, C, false, a, C, tmp, i0, false);
        gemm(i1 - i0, i0, i1 - i0, -1.f, a + i0 * C + i0, C, false, tmp, i0, a + i0 * C, C, false, Tri::lower);
      }
    }
  }

  // Delta rule: N, A = (I + Diag(beta) N)^-1, W = A Xw and U = A Xu.
  void intra() {
    const int L = w.L, K = w.K, V = w.V, C = w.C;
    gated_products(w.k.data(), false, w.n.data());
    invert();
    // Xw = Diag(beta) (K.E): the scalar gate folds e_i into the row factor.
    const float* kx = G == GateKind::vector ? w.ke.data() : w.k.data();
    for (int i = 0; i < L; ++i) {
      const float f = G == GateKind::scalar ? w.beta[i] * w.e[i] : w.beta[i];
      for (int d = 0; d < K; ++d) w.xw[i * K + d] = f * kx[i * K + d];
      for (int d = 0; d < V; ++d) w.xu[i * V + d] = w.beta[i] * w.v[i * V + d];
    }
    gemm(L, K, L, 1.f, w.a.data(), C, false, w.xw.data(), K, w.w.data(), K, false, Tri::lower);
    gemm(L, V, L, 1.f, w.a.data(), C, false, w.xu.data(), V, w.u.data(), V, false, Tri::lower);
  }

  // V' = U - W S into `vnew` (which may be w.u).
  void new_values(const float* S, float* vnew) {
    const int L = w.L, K = w.K, V = w.V;
    if (vnew != w.u.data()) std::memcpy(vnew, w.u.data(), size_t(L) * V * sizeof(float));
    gemm(L, V, K, -1.f, w.w.data(), K, false, S, V, vnew, V, true);
  }

  // O = (Q.E) S + P V', written to the output rows of tokens [t0, t0 + L).
  void output(int t0, const float* S, const float* vnew, float* o) {
    const int L = w.L, K = w.K, V = w.V, C = w.C;
    gated_products(w.q.data(), true, w.p.data());
    if constexpr (G == GateKind::scalar)
      gemm(L, V, K, 1.f, w.q.data(), K, false, S, V, w.ob.data(), V, false, Tri::full, false, w.e.data());
    else
      gemm(L, V, K, 1.f, qe(), K, false, S, V, w.ob.data(), V, false);
    gemm(L, V, L, 1.f, w.p.data(), C, false, vnew, V, w.ob.data(), V, true, Tri::lower);
    for (int i = 0; i < L; ++i) std::memcpy(o + row(t0 + i) * V, &w.ob[i * V], V * sizeof(float));
  }

  // S <- Diag(e^gamma_L) S + (K.El)^T V'
  void advance(float* S, const float* vnew) {
    const int L = w.L, K = w.K, V = w.V;
    if constexpr (G == GateKind::scalar) {
      const float f = w.decay[0];
      for (int i = 0; i < K * V; ++i) S[i] *= f;
    }
    if constexpr (G == GateKind::vector)
      for (int d = 0; d < K; ++d)
        for (int c = 0; c < V; ++c) S[d * V + c] *= w.decay[d];
    gemm(K, V, L, 1.f, kl(), K, true, vnew, V, S, V, true);
  }

  // One chunk of the forward: tokens [t0, t0 + L), S the state entering and leaving it.
  void forward_chunk(int t0, int L, int eos, float* S, float* o) {
    load(t0, L);
    prefetch(t0 + w.C, std::min(eos, t0 + 2 * w.C), nullptr, o);
    const float* vnew = w.v.data();
    if constexpr (kDelta) {
      intra();
      new_values(S, w.u.data());
      vnew = w.u.data();
    }
    output(t0, S, vnew, o);
    advance(S, vnew);
  }

  // Backward of one chunk (loaded, with N, A, W, U recomputed): S is the entering state, vnew
  // its V', ds the gradient of the leaving state on entry and of the entering one on return.
  void backward_chunk(int t0, const float* S, const float* vnew, float* ds, const CoreGradOutputs<float>& dout,
                      const CoreGrads<float>& grads) {
    const int L = w.L, K = w.K, V = w.V, C = w.C;
    scaled_qk();
    const float *qe_ = qe(), *ke_ = ke(), *kl_ = kl();
    gated_products(w.q.data(), true, w.p.data());
    for (int i = 0; i < L; ++i) std::memcpy(&w.dob[i * V], dout.d_o + row(t0 + i) * V, V * sizeof(float));
    const float* dob = w.dob.data();

    // Through O = (Q.E) S + P V' and the state update.
    gemm(L, V, L, 1.f, w.p.data(), C, true, dob, V, w.dvp.data(), V, false, Tri::upper);
    gemm(L, V, K, 1.f, kl_, K, false, ds, V, w.dvp.data(), V, true);
    chunk::transpose(L, V, vnew, V, w.vpt.data(), L);
    gemm(L, L, V, 1.f, dob, V, false, w.vpt.data(), L, w.dp.data(), C, false, Tri::full, true);
    for (int i = 0; i < L; ++i) std::fill(&w.dp[i * C + i + 1], &w.dp[i * C + L], 0.f);
    chunk::transpose(K, V, S, V, w.st.data(), K);
    gemm(L, K, V, 1.f, dob, V, false, w.st.data(), K, w.dqe.data(), K, false);
    chunk::transpose(K, V, ds, V, w.dst.data(), K);
    gemm(L, K, V, 1.f, vnew, V, false, w.dst.data(), K, w.dkl.data(), K, false);
    if constexpr (G != GateKind::none) {
      for (int d = 0; d < K; ++d) w.dgl[d] = chunk::dot(V, S + d * V, ds + d * V);
    }
    float* dsn = w.ds_new.data();
    gemm(K, V, L, 1.f, qe_, K, true, dob, V, dsn, V, false);
    if constexpr (kDelta) gemm(K, V, L, -1.f, w.w.data(), K, true, w.dvp.data(), V, dsn, V, true);
    if constexpr (G == GateKind::none)
      for (int i = 0; i < K * V; ++i) dsn[i] += ds[i];
    else
      for (int d = 0; d < K; ++d) {
        const float f = w.decay[G == GateKind::scalar ? 0 : d];
        for (int c = 0; c < V; ++c) dsn[d * V + c] += f * ds[d * V + c];
      }

    // Through V' = A Diag(beta) (V - (K.E) S) = U - W S and A = (I + Diag(beta) N)^-1.
    float* dm = w.dm.data();  // dM, then dN
    const float* dv = w.dvp.data();
    if constexpr (kDelta) {
      gemm(L, K, V, -1.f, w.dvp.data(), V, false, w.st.data(), K, w.dw.data(), K, false);
      gemm(L, K, L, 1.f, w.a.data(), C, true, w.dw.data(), K, w.dxw.data(), K, false, Tri::upper);
      gemm(L, V, L, 1.f, w.a.data(), C, true, w.dvp.data(), V, w.dxu.data(), V, false, Tri::upper);
      // dM = -A^T dA A^T with dA = dW Xw^T + dU Xu^T, which is -(dXw W^T + dXu U^T).
      chunk::transpose(L, K, w.w.data(), K, w.wt.data(), L);
      chunk::transpose(L, V, w.u.data(), V, w.ut.data(), L);
      gemm(L, L, K, -1.f, w.dxw.data(), K, false, w.wt.data(), L, dm, C, false, Tri::full, true);
      gemm(L, L, V, -1.f, w.dxu.data(), V, false, w.ut.data(), L, dm, C, true, Tri::full, true);
      for (int i = 0; i < L; ++i) {
        float* dmi = dm + i * C;
        float db = 0.f;
        for (int j = 0; j < i; ++j) {
          db += dmi[j] * w.n[i * C + j];
          dmi[j] *= w.beta[i];  // dN
        }
        std::fill(dmi + i, dmi + L, 0.f);
        db += chunk::dot(K, &w.dxw[i * K], ke_ + i * K) + chunk::dot(V, &w.dxu[i * V], &w.v[i * V]);
        w.dbeta[i] = db;
        for (int d = 0; d < K; ++d) w.dxw[i * K + d] *= w.beta[i];  // dKe
        for (int c = 0; c < V; ++c) w.dv[i * V + c] = w.beta[i] * w.dxu[i * V + c];
      }
      dv = w.dv.data();
    }

    // Through the gated products P and N, then qe = q.E, ke = k.E, kl = k.El and
    // decay = e^gamma_L. The gate gradient is summed without cancellation: g_t scales
    // exactly the terms that cross the boundary before token t,
    //   dg_t = sum_{i>=t} (dqe.qe + dke.ke)_i + sum_{i<t} (dkl.kl)_i + ddecay.decay
    //        + sum_{i>=t>j} (dP_ij P_ij + dN_ij N_ij)     (per dimension for vector gates),
    // so at g = -30 every summand is tiny and dg is accurate relative to itself.
    float* dq = w.dq.data();
    float* dk = w.dk.data();
    float* dg = w.dg.data();  // L (scalar) or L x K (vector)
    const float* dke = w.dxw.data();
    if constexpr (G == GateKind::vector) {
      std::fill(dq, dq + L * K, 0.f);
      std::fill(dk, dk + L * K, 0.f);
      std::fill(dg, dg + L * K, 0.f);
      float* run = w.sub0.data();
      for (int i = 0; i < L; ++i) {
        std::fill(run, run + K, 0.f);
        for (int j = 0; j <= i; ++j) {
          const float sp = w.dp[i * C + j], sn = kDelta && j < i ? dm[i * C + j] : 0.f;
          chunk::gated_pair_backward(K, sp, sn, &w.q[i * K], &w.k[i * K], &w.k[j * K], &w.gam[i * K],
                                     &w.gam[j * K], dq + i * K, dk + i * K, dk + j * K, j < i ? run : nullptr);
          if (j < i) chunk::add(K, run, dg + (j + 1) * K);
        }
      }
    } else {
      if constexpr (G == GateKind::scalar) {
        std::fill(dg, dg + L, 0.f);
        for (int i = 0; i < L; ++i) {
          float run = 0.f;
          for (int j = 0; j < i; ++j) {
            run += w.dp[i * C + j] * w.p[i * C + j] + (kDelta ? dm[i * C + j] * w.n[i * C + j] : 0.f);
            dg[j + 1] += run;
          }
          for (int j = 0; j <= i; ++j) {
            w.dp[i * C + j] *= w.gmat[i * C + j];
            if (kDelta) dm[i * C + j] *= w.gmat[i * C + j];
          }
        }
      }
      gemm(L, K, L, 1.f, w.dp.data(), C, false, w.k.data(), K, dq, K, false, Tri::lower);
      gemm(L, K, L, 1.f, w.dp.data(), C, true, w.q.data(), K, dk, K, false, Tri::upper);
      if constexpr (kDelta) {
        gemm(L, K, L, 1.f, dm, C, false, w.k.data(), K, dk, K, true, Tri::lower);
        gemm(L, K, L, 1.f, dm, C, true, w.k.data(), K, dk, K, true, Tri::upper);
      }
    }
    if constexpr (G == GateKind::none) {
      for (int i = 0; i < L * K; ++i) {
        dq[i] += w.dqe[i];
        dk[i] += w.dkl[i] + (kDelta ? dke[i] : 0.f);
      }
    } else {
      // Suffix sums of the E terms, prefix sums of the El terms, the decay term everywhere.
      if constexpr (G == GateKind::scalar) {
        float ddecay = 0.f;
        for (int d = 0; d < K; ++d) ddecay += w.dgl[d];
        ddecay *= w.decay[0];
        float suffix = 0.f, prefix = 0.f;
        for (int i = L - 1; i >= 0; --i) {
          suffix += chunk::dot(K, &w.dqe[i * K], qe_ + i * K) + (kDelta ? chunk::dot(K, dke + i * K, ke_ + i * K) : 0.f);
          dg[i] += suffix;
        }
        for (int i = 0; i < L; ++i) {
          dg[i] += prefix + ddecay;
          prefix += chunk::dot(K, &w.dkl[i * K], kl_ + i * K);
        }
        for (int i = 0; i < L; ++i) {
          chunk::axpy(K, w.e[i], &w.dqe[i * K], dq + i * K);
          chunk::axpy(K, w.el[i], &w.dkl[i * K], dk + i * K);
          if (kDelta) chunk::axpy(K, w.e[i], dke + i * K, dk + i * K);
        }
      } else {
        float* __restrict acc = w.sub1.data();
        float* __restrict dgv = dg;
        const float* __restrict dqe = w.dqe.data();
        const float* __restrict dkl = w.dkl.data();
        std::fill(acc, acc + K, 0.f);
        for (int i = L - 1; i >= 0; --i)
          for (int d = 0; d < K; ++d) {
            const int x = i * K + d;
            acc[d] += dqe[x] * qe_[x] + (kDelta ? dke[x] * ke_[x] : 0.f);
            dgv[x] += acc[d];
          }
        for (int d = 0; d < K; ++d) acc[d] = w.dgl[d] * w.decay[d];
        for (int i = 0; i < L; ++i)
          for (int d = 0; d < K; ++d) {
            dgv[i * K + d] += acc[d];
            acc[d] += dkl[i * K + d] * kl_[i * K + d];
          }
        const double* zero = w.zeros.data();
        const double* last = &w.gam[(L - 1) * K];
        for (int i = 0; i < L; ++i) {
          const double* gi = &w.gam[i * K];
          chunk::axpy_exp_diff(K, 1.f, &w.dqe[i * K], gi, zero, dq + i * K);
          chunk::axpy_exp_diff(K, 1.f, &w.dkl[i * K], last, gi, dk + i * K);
          if (kDelta) chunk::axpy_exp_diff(K, 1.f, dke + i * K, gi, zero, dk + i * K);
        }
      }
    }

    // Write this chunk's gradients (per value head).
    const int gw = G == GateKind::vector ? K : 1;
    for (int i = L - 1; i >= 0; --i) {
      const size_t r = row(t0 + i);
      for (int d = 0; d < K; ++d) {
        grads.dq[r * K + d] = p.scale * dq[i * K + d];
        grads.dk[r * K + d] = dk[i * K + d];
      }
      std::memcpy(grads.dv + r * V, dv + i * V, V * sizeof(float));
      if constexpr (kDelta) grads.dbeta[r] = w.dbeta[i];
      if constexpr (G != GateKind::none) std::memcpy(grads.dg + r * gw, dg + i * gw, gw * sizeof(float));
    }
    std::memcpy(ds, dsn, size_t(K) * V * sizeof(float));
  }

  // The backward's forward pass over one chunk: records the entering state S and (delta
  // rule) V' in `vnew`, then advances S.
  void record_chunk(int t0, int L, int eos, float* S, float* state_out, float* vnew_out) {
    std::memcpy(state_out, S, size_t(w.K) * w.V * sizeof(float));
    load(t0, L);
    prefetch(t0 + w.C, std::min(eos, t0 + 2 * w.C));
    const float* vnew = w.v.data();
    if constexpr (kDelta) {
      intra();
      new_values(S, vnew_out);
      vnew = vnew_out;
    }
    advance(S, vnew);
  }

  // The backward over one chunk, given what record_chunk stored; ds as in backward_chunk.
  void gradient_chunk(int t0, int L, int bos, const float* state, const float* vnew, float* ds,
                      const CoreGradOutputs<float>& dout, const CoreGrads<float>& grads) {
    load(t0, L);
    prefetch(t0 - w.C, t0 > bos ? t0 : bos, dout.d_o);
    if constexpr (kDelta) intra();
    backward_chunk(t0, state, kDelta ? vnew : w.v.data(), ds, dout, grads);
  }
};

void check_problem(const CoreProblem<float>& p) {
  GDN_CHECK(p.chunk_size == 16 || p.chunk_size == 32 || p.chunk_size == 64,
            "chunk form: chunk_size must be 16, 32 or 64, got ", p.chunk_size);
  GDN_CHECK(p.gate != GateKind::fixed, "chunk form: fixed gates must be prepared into g");
  GDN_CHECK(p.H > 0 && p.HV % p.H == 0, "chunk form: HV (", p.HV, ") must be a multiple of H (", p.H, ")");
}

// Value heads a task walks in lockstep, chunk by chunk: the rows of neighbouring heads of
// one token are adjacent in memory, so a group reads whole pages instead of one row per
// page. Groups stay small enough to leave a task per thread.
int head_group(const CoreProblem<float>& p, int most = 8) {
  const int threads = omp_get_max_threads();
  int g = std::min(most, p.HV);
  while (g > 1 && p.N * ((p.HV + g - 1) / g) < threads) g /= 2;
  return g;
}

template <class Fn>
void dispatch(const CoreProblem<float>& p, Fn&& fn) {
  auto with_rule = [&](auto gate) {
    if (p.delta) fn(gate, std::true_type{});
    else fn(gate, std::false_type{});
  };
  switch (p.gate) {
    case GateKind::none: return with_rule(std::integral_constant<GateKind, GateKind::none>{});
    case GateKind::scalar: return with_rule(std::integral_constant<GateKind, GateKind::scalar>{});
    case GateKind::vector: return with_rule(std::integral_constant<GateKind, GateKind::vector>{});
    case GateKind::fixed: break;
  }
}

}  // namespace

void chunk_core_forward(const CoreProblem<float>& p, const CoreOutputs<float>& out) {
  check_problem(p);
  const size_t KV = size_t(p.K) * p.V;
  const int G = head_group(p), groups = (p.HV + G - 1) / G, tasks = p.N * groups;
  dispatch(p, [&](auto gate, auto delta) {
#pragma omp parallel
    {
      ThreadScratch& scratch = thread_scratch();
      ChunkWork& work = scratch.chunk_work(p.chunk_size, p.K, p.V);
      float* states = ThreadScratch::grown(scratch.running, G * KV);
#pragma omp for schedule(dynamic, 1)
      for (int task = 0; task < tasks; ++task) {
        const int n = task / groups, hv0 = task % groups * G, hv1 = std::min(p.HV, hv0 + G);
        const SeqSpan span = seq_span(p, n);
        for (int hv = hv0; hv < hv1; ++hv) {
          float* S = &states[(hv - hv0) * KV];
          const float* h0 = p.h0 ? p.h0 + (size_t(n) * p.HV + hv) * KV : nullptr;
          if (h0) std::memcpy(S, h0, KV * sizeof(float));
          else std::fill(S, S + KV, 0.f);
        }
        for (int t0 = span.bos; t0 < span.eos; t0 += p.chunk_size)
          for (int hv = hv0; hv < hv1; ++hv) {
            ChunkForm<decltype(gate)::value, decltype(delta)::value> form{p, work, span.b, hv / p.group(), hv};
            form.forward_chunk(t0, std::min(p.chunk_size, span.eos - t0), span.eos, &states[(hv - hv0) * KV], out.o);
          }
        if (out.ht)
          for (int hv = hv0; hv < hv1; ++hv)
            std::memcpy(out.ht + (size_t(n) * p.HV + hv) * KV, &states[(hv - hv0) * KV], KV * sizeof(float));
      }
    }
  });
}

void chunk_core_backward(const CoreProblem<float>& p, const CoreGradOutputs<float>& dout,
                         const CoreGrads<float>& grads) {
  check_problem(p);
  const size_t KV = size_t(p.K) * p.V;
  const int C = p.chunk_size;
  // The tape holds a group's entering states and V'; lockstep groups shrink for long
  // sequences so that a task's tape stays within kTapeBytes (it is kept between calls).
  constexpr double kTapeBytes = 64.0 * (1 << 20);
  int longest = 0;
  for (int n = 0; n < p.N; ++n) longest = std::max(longest, seq_span(p, n).len());
  const double head_tape = 4.0 * ((longest + C - 1) / C * double(KV) + (p.delta ? double(longest) * p.V : 0));
  int G = head_group(p);
  while (G > 1 && G * head_tape > kTapeBytes) G /= 2;
  const int groups = (p.HV + G - 1) / G, tasks = p.N * groups;
  dispatch(p, [&](auto gate, auto delta) {
    using Form = ChunkForm<decltype(gate)::value, decltype(delta)::value>;
#pragma omp parallel
    {
      ThreadScratch& scratch = thread_scratch();
      ChunkWork& work = scratch.chunk_work(C, p.K, p.V);
      // Per head of the group: the running state / its gradient, and the tape of entering
      // states (chunks x K x V) and V' (tokens x V).
      float* running = ThreadScratch::grown(scratch.running, G * KV);
#pragma omp for schedule(dynamic, 1)
      for (int task = 0; task < tasks; ++task) {
        const int n = task / groups, hv0 = task % groups * G, hv1 = std::min(p.HV, hv0 + G);
        const SeqSpan span = seq_span(p, n);
        const int len = span.len(), nchunks = (len + C - 1) / C;
        const size_t head_states = nchunks * KV, head_vnews = delta ? size_t(len) * p.V : 0;
        float* states = ThreadScratch::grown(scratch.states, G * head_states);
        float* vnews = ThreadScratch::grown(scratch.vnews, G * head_vnews);
        auto index = [&](int hv) { return (size_t(n) * p.HV + hv) * KV; };
        auto vnew_at = [&](int j, int c) { return delta ? vnews + j * head_vnews + size_t(c) * C * p.V : nullptr; };
        for (int hv = hv0; hv < hv1; ++hv) {
          float* S = &running[(hv - hv0) * KV];
          if (p.h0) std::memcpy(S, p.h0 + index(hv), KV * sizeof(float));
          else std::fill(S, S + KV, 0.f);
        }
        for (int c = 0; c < nchunks; ++c)
          for (int hv = hv0; hv < hv1; ++hv) {
            const int j = hv - hv0, t0 = span.bos + c * C;
            Form form{p, work, span.b, hv / p.group(), hv};
            form.record_chunk(t0, std::min(C, span.eos - t0), span.eos, &running[j * KV],
                              &states[j * head_states + c * KV], vnew_at(j, c));
          }
        for (int hv = hv0; hv < hv1; ++hv) {
          float* dS = &running[(hv - hv0) * KV];
          if (dout.dht) std::memcpy(dS, dout.dht + index(hv), KV * sizeof(float));
          else std::fill(dS, dS + KV, 0.f);
        }
        for (int c = nchunks - 1; c >= 0; --c)
          for (int hv = hv0; hv < hv1; ++hv) {
            const int j = hv - hv0, t0 = span.bos + c * C;
            Form form{p, work, span.b, hv / p.group(), hv};
            form.gradient_chunk(t0, std::min(C, span.eos - t0), span.bos, &states[j * head_states + c * KV],
                                vnew_at(j, c), &running[j * KV], dout, grads);
          }
        if (grads.dh0)
          for (int hv = hv0; hv < hv1; ++hv)
            std::memcpy(grads.dh0 + index(hv), &running[(hv - hv0) * KV], KV * sizeof(float));
      }
    }
  });
}

}  // namespace gdn::detail
