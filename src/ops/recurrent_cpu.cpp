// The fp32 recurrent form on the CPU. The columns of the state are independent (each
// output column j only reads column j of S), so the state is split into K x kBlock column
// blocks that stay in L1 for a whole sequence; a block is swept twice per token,
// vectorised along its columns. Forward tasks are (sequence, value head, column block);
// backward tasks are (sequence, value head), whose blocks add their parts of dq, dk, dg and
// dbeta in turn. The backward keeps a block checkpoint every kSegment tokens and
// recomputes each segment before walking it in reverse: O(T/kSegment * K * V) memory.
#include <algorithm>
#include <cmath>
#include <vector>

#include "gdn/common.h"
#include "ops/core.h"

namespace gdn::detail {

namespace {

constexpr int kSegment = 64;
constexpr int kBlock = 32;  // columns per block: K x 32 floats = 16 KB at K = 128

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

// A column block [j0, j0 + w) of one head's state, stored K x w.
struct Block {
  int j0, w;
};

// Width known at compile time for full blocks (W > 0), at run time for the tail (W = 0).
template <int W>
struct Width {
  static int of(const Block& blk) { return W > 0 ? W : blk.w; }
};

// S <- Diag(a) S and r = S^T k in one sweep.
template <int W>
void decay_and_read(float* S, const float* a, const float* k, float* r, int K, const Block& blk) {
  const int w = Width<W>::of(blk);
  std::fill(r, r + w, 0.f);
  for (int i = 0; i < K; ++i) {
    float* row = S + size_t(i) * w;
    const float ai = a[i], ki = k[i];
#pragma omp simd
    for (int j = 0; j < w; ++j) {
      row[j] *= ai;
      r[j] += ki * row[j];
    }
  }
}

// u = beta (v - r) for the delta rule, u = v for the additive rule (v, u: the block's columns).
void new_values(bool delta, const float* v, float beta, const float* r, float* u, int w) {
  for (int j = 0; j < w; ++j) u[j] = delta ? beta * (v[j] - r[j]) : v[j];
}

// S <- S + k u^T, and when q is given o = scale S^T q, in one sweep.
template <int W>
void write_and_output(float* S, const float* k, const float* u, const float* q, float scale, float* o, int K,
                      const Block& blk) {
  const int w = Width<W>::of(blk);
  float acc[kBlock] = {};
  for (int i = 0; i < K; ++i) {
    float* row = S + size_t(i) * w;
    const float ki = k[i], qi = q ? q[i] : 0.f;
#pragma omp simd
    for (int j = 0; j < w; ++j) {
      row[j] += ki * u[j];
      acc[j] += qi * row[j];
    }
  }
  if (o)
    for (int j = 0; j < w; ++j) o[j] = scale * acc[j];
}

// Copies a column block between a K x V state (h0, ht, dh0, dht) and a K x w block.
void gather_block(const float* state, const Block& blk, int K, int V, float* S) {
  for (int i = 0; i < K; ++i) std::copy_n(state + size_t(i) * V + blk.j0, blk.w, S + size_t(i) * blk.w);
}
void scatter_block(const float* S, const Block& blk, int K, int V, float* state) {
  for (int i = 0; i < K; ++i) std::copy_n(S + size_t(i) * blk.w, blk.w, state + size_t(i) * V + blk.j0);
}

void load_block(const float* state, const Block& blk, int K, int V, float* S) {
  if (state)
    gather_block(state, blk, K, V, S);
  else
    std::fill(S, S + size_t(K) * blk.w, 0.f);
}

template <int W>
void forward_block(const CoreProblem<float>& p, const CoreOutputs<float>& out, int n, int hv, const Block& blk,
                   float* S, float* a, float* r, float* u) {
  const int K = p.K, V = p.V;
  const size_t state_at = (size_t(n) * p.HV + hv) * K * V;
  const SeqSpan s = seq_span(p, n);
  const Head x{p, s.b, hv, hv / p.group()};
  load_block(p.h0 ? p.h0 + state_at : nullptr, blk, K, V, S);
  for (int t = s.bos; t < s.eos; ++t) {
    x.decay(t, a);
    decay_and_read<W>(S, a, x.k(t), r, K, blk);
    new_values(p.delta, x.v(t) + blk.j0, x.beta(t), r, u, blk.w);
    write_and_output<W>(S, x.k(t), u, x.q(t), p.scale, out.o + (x.tok(t) * p.HV + hv) * V + blk.j0, K, blk);
  }
  if (out.ht) scatter_block(S, blk, K, V, out.ht + state_at);
}

// Adds (first = false) or writes (first = true) one block's share of a sum over columns.
inline void put(float* dst, float value, bool first) { *dst = first ? value : *dst + value; }

template <int W>
void backward_block(const CoreProblem<float>& p, const CoreGradOutputs<float>& dout, const CoreGrads<float>& grads,
                    int n, int hv, const Block& blk, bool first, std::vector<float>& checkpoints,
                    std::vector<float>& segment, std::vector<float>& seg_r, std::vector<float>& seg_u) {
  const int K = p.K, V = p.V;
  const int w = Width<W>::of(blk);
  const size_t KW = size_t(K) * w;
  const size_t state_at = (size_t(n) * p.HV + hv) * K * V;
  const SeqSpan s = seq_span(p, n);
  const Head x{p, s.b, hv, hv / p.group()};
  const int num_segments = (s.len() + kSegment - 1) / kSegment;
  float S[128 * kBlock], dS[128 * kBlock];  // K <= 128 fits; larger K takes the heap below
  std::vector<float> heap;
  float *Sp = S, *dSp = dS;
  if (K > 128) {
    heap.resize(2 * KW);
    Sp = heap.data(), dSp = heap.data() + KW;
  }
  float a[1024], du[kBlock], dr[kBlock];
  // Forward: the block's state entering each segment.
  checkpoints.resize(std::max(num_segments, 1) * KW);
  load_block(p.h0 ? p.h0 + state_at : nullptr, blk, K, V, Sp);
  for (int t = s.bos; t < s.eos; ++t) {
    if ((t - s.bos) % kSegment == 0) std::copy_n(Sp, KW, checkpoints.data() + (t - s.bos) / kSegment * KW);
    x.decay(t, a);
    float r[kBlock], u[kBlock];
    decay_and_read<W>(Sp, a, x.k(t), r, K, blk);
    new_values(p.delta, x.v(t) + blk.j0, x.beta(t), r, u, w);
    write_and_output<W>(Sp, x.k(t), u, nullptr, 0.f, nullptr, K, blk);
  }
  load_block(dout.dht ? dout.dht + state_at : nullptr, blk, K, V, dSp);

  for (int seg = num_segments - 1; seg >= 0; --seg) {
    const int t0 = s.bos + seg * kSegment, t1 = std::min(s.eos, t0 + kSegment);
    // Recompute the segment, keeping each step's entering state, r and u.
    std::copy_n(checkpoints.data() + seg * KW, KW, Sp);
    for (int t = t0; t < t1; ++t) {
      const int i_t = t - t0;
      std::copy_n(Sp, KW, segment.data() + i_t * KW);
      x.decay(t, a);
      float* rt = seg_r.data() + i_t * kBlock;
      float* ut = seg_u.data() + i_t * kBlock;
      decay_and_read<W>(Sp, a, x.k(t), rt, K, blk);
      new_values(p.delta, x.v(t) + blk.j0, x.beta(t), rt, ut, w);
      write_and_output<W>(Sp, x.k(t), ut, nullptr, 0.f, nullptr, K, blk);
    }
    for (int t = t1 - 1; t >= t0; --t) {
      const int i_t = t - t0;
      const size_t tok = x.tok(t);
      const float* S_prev = segment.data() + i_t * KW;
      const float *q = x.q(t), *k = x.k(t), *v = x.v(t) + blk.j0;
      const float* d_o = dout.d_o + (tok * p.HV + hv) * V + blk.j0;
      const float* rt = seg_r.data() + i_t * kBlock;
      const float* ut = seg_u.data() + i_t * kBlock;
      const float beta = x.beta(t);
      float* dq = grads.dq + (tok * p.HV + hv) * K;
      float* dk = grads.dk + (tok * p.HV + hv) * K;
      x.decay(t, a);
      float u_dot_do = 0;
      for (int j = 0; j < w; ++j) u_dot_do += ut[j] * d_o[j];
      std::fill(du, du + w, 0.f);
      // o = scale S_t^T q with S_t = Diag(a) S_prev + k u^T; then through S_t = S_decayed + k u^T.
      for (int i = 0; i < K; ++i) {
        const float* sp = S_prev + size_t(i) * w;
        float* ds = dSp + size_t(i) * w;
        const float sq = p.scale * q[i], ki = k[i];
        float sp_dot_do = 0, ds_dot_u = 0;
#pragma omp simd reduction(+ : sp_dot_do, ds_dot_u)
        for (int j = 0; j < w; ++j) {
          sp_dot_do += sp[j] * d_o[j];
          ds[j] += sq * d_o[j];
          ds_dot_u += ds[j] * ut[j];
          du[j] += ki * ds[j];
        }
        put(dq + i, p.scale * (a[i] * sp_dot_do + ki * u_dot_do), first);
        put(dk + i, ds_dot_u, first);
      }
      float* dv = grads.dv + (tok * p.HV + hv) * V + blk.j0;
      if (p.delta) {  // u = beta (v - r), r = S_decayed^T k
        float dbeta = 0;
        for (int j = 0; j < w; ++j) {
          dbeta += du[j] * (v[j] - rt[j]);
          dv[j] = beta * du[j];
          dr[j] = -beta * du[j];
        }
        put(grads.dbeta + tok * p.HV + hv, dbeta, first);
      } else {
        std::copy_n(du, w, dv);
      }
      // Through r = S_decayed^T k and S_decayed = Diag(a) S_prev.
      float dg_scalar = 0;
      for (int i = 0; i < K; ++i) {
        const float* sp = S_prev + size_t(i) * w;
        float* ds = dSp + size_t(i) * w;
        const float ki = k[i], ai = a[i];
        float dalpha = 0;
        if (p.delta) {
          float sp_dot_dr = 0;
#pragma omp simd reduction(+ : sp_dot_dr)
          for (int j = 0; j < w; ++j) {
            ds[j] += ki * dr[j];
            sp_dot_dr += sp[j] * dr[j];
          }
          dk[i] += ai * sp_dot_dr;
        }
#pragma omp simd reduction(+ : dalpha)
        for (int j = 0; j < w; ++j) {
          dalpha += ds[j] * sp[j];
          ds[j] *= ai;
        }
        if (p.gate == GateKind::vector) put(grads.dg + (tok * p.HV + hv) * K + i, dalpha * ai, first);
        dg_scalar += dalpha * ai;
      }
      if (p.gate == GateKind::scalar) put(grads.dg + tok * p.HV + hv, dg_scalar, first);
    }
  }
  if (grads.dh0) scatter_block(dSp, blk, K, V, grads.dh0 + state_at);
}

std::vector<Block> column_blocks(int V) {
  std::vector<Block> blocks;
  for (int j0 = 0; j0 < V; j0 += kBlock) blocks.push_back({j0, std::min(kBlock, V - j0)});
  return blocks;
}

}  // namespace

void recurrent_core_forward(const CoreProblem<float>& p, const CoreOutputs<float>& out) {
  GDN_CHECK(p.K <= 1024, "recurrent form: K <= 1024 supported, got K=", p.K);
  const std::vector<Block> blocks = column_blocks(p.V);
  const int nb = int(blocks.size());
#pragma omp parallel
  {
    Vec S(size_t(p.K) * kBlock), a(p.K), r(kBlock), u(kBlock);
#pragma omp for collapse(3) schedule(dynamic)
    for (int n = 0; n < p.N; ++n)
      for (int hv = 0; hv < p.HV; ++hv)
        for (int ib = 0; ib < nb; ++ib) {
          const Block& blk = blocks[ib];
          if (blk.w == kBlock)
            forward_block<kBlock>(p, out, n, hv, blk, S.data(), a.data(), r.data(), u.data());
          else
            forward_block<0>(p, out, n, hv, blk, S.data(), a.data(), r.data(), u.data());
        }
  }
}

void recurrent_core_backward(const CoreProblem<float>& p, const CoreGradOutputs<float>& dout,
                             const CoreGrads<float>& grads) {
  GDN_CHECK(p.K <= 1024, "recurrent form: K <= 1024 supported, got K=", p.K);
  const std::vector<Block> blocks = column_blocks(p.V);
  const size_t KB = size_t(p.K) * kBlock;
#pragma omp parallel
  {
    Vec checkpoints, segment(kSegment * KB), seg_r(kSegment * kBlock), seg_u(kSegment * kBlock);
#pragma omp for collapse(2) schedule(dynamic)
    for (int n = 0; n < p.N; ++n)
      for (int hv = 0; hv < p.HV; ++hv) {
        const SeqSpan s = seq_span(p, n);
        if (s.len() == 0) {  // nothing to sum into: zero-length sequences pass dht through
          if (grads.dh0) {
            const size_t KV = size_t(p.K) * p.V, at = (size_t(n) * p.HV + hv) * KV;
            for (size_t i = 0; i < KV; ++i) grads.dh0[at + i] = dout.dht ? dout.dht[at + i] : 0.f;
          }
          continue;
        }
        for (size_t ib = 0; ib < blocks.size(); ++ib) {
          const bool first = ib == 0;
          if (blocks[ib].w == kBlock)
            backward_block<kBlock>(p, dout, grads, n, hv, blocks[ib], first, checkpoints, segment, seg_r, seg_u);
          else
            backward_block<0>(p, dout, grads, n, hv, blocks[ib], first, checkpoints, segment, seg_r, seg_u);
        }
      }
  }
}

}  // namespace gdn::detail
