// FLOPs of the chunkwise algorithm as src/ops/chunk_cpu.cpp runs it: the matrix products
// (2 per multiply-add) and the forward substitution; gating, exps and copies are not
// counted. Products with a triangular operand or result count only the triangle:
// with L the tokens of a chunk, tri = L(L+1)/2 (diagonal included), str = L(L-1)/2.
//
// Forward, per chunk and value head:
//   P = gated Q K^T (lower)          2K tri        O = (Q.E) S + P V'   2LKV + 2V tri
//   S <- decay S + (K.El)^T V'       2LKV
//   delta rule only:
//   N = gated K K^T (strict lower)   2K str        A = (I + Diag(beta) N)^-1   (L^3 - L)/3
//                                                  (counted as by substitution; it runs blocked)
//   W, U = A Xw, A Xu                2(K+V) tri    V' = U - W S                2LKV
// Backward, per chunk and value head: a forward pass for the states (the forward without
// P and O), the recomputation of N, A, W, U (delta) and P, then
//   dV' = P^T dO + (K.El) dS'        2V tri + 2LKV     dP = dO V'^T        2V tri
//   d(Q.E) = dO S^T, d(K.El) = V' dS'^T   4LKV         dS = (Q.E)^T dO     2LKV
//   dQ, dK through P                 4K tri
//   delta rule only:
//   dS -= W^T dV', dW = -dV' S^T     4LKV              dXw, dXu = A^T dW, A^T dV'   2(K+V) tri
//   dM = -A^T (dW Xw^T + dV' Xu^T) A^T = -(dXw W^T + dXu U^T)  (strict lower)   2(K+V) str
//   dK through N (both sides)        4K str
// Vector gates take the same products per sub-chunk, so the same count.
#include "gdn/flops.h"

#include <algorithm>

namespace gdn {
namespace {

struct ChunkCounts {
  double fwd = 0, bwd = 0;
};

ChunkCounts chunk_counts(double L, double K, double V, bool delta) {
  const double tri = L * (L + 1) / 2, str = L * (L - 1) / 2, lkv = L * K * V;
  const double p = 2 * K * tri, out = 2 * lkv + 2 * V * tri, state = 2 * lkv;
  const double n = 2 * K * str, inv = (L * L * L - L) / 3, wu = 2 * (K + V) * tri, vnew = 2 * lkv;
  ChunkCounts c;
  c.fwd = p + out + state + (delta ? n + inv + wu + vnew : 0);
  const double states_pass = state + (delta ? n + inv + wu + vnew : 0);
  const double recompute = p + (delta ? n + inv + wu : 0);
  double grads = 2 * V * tri + 2 * lkv + 2 * V * tri + 4 * lkv + 2 * lkv + 4 * K * tri;
  if (delta) grads += 4 * lkv + 2 * (K + V) * tri + 2 * (K + V) * str + 4 * K * str;
  c.bwd = states_pass + recompute + grads;
  return c;
}

template <class Fn>
double sum_over_chunks(const OpConfig& cfg, Fn&& per_chunk) {
  const int C = cfg.chunk_size;
  auto seq = [&](int len) {
    double s = 0;
    for (int t0 = 0; t0 < len; t0 += C) s += per_chunk(std::min(C, len - t0));
    return s;
  };
  double total = 0;
  if (cfg.cu_seqlens.empty()) total = cfg.B * seq(cfg.T);
  else
    for (size_t i = 0; i + 1 < cfg.cu_seqlens.size(); ++i) total += seq(cfg.cu_seqlens[i + 1] - cfg.cu_seqlens[i]);
  return total * cfg.HV;
}

}  // namespace

double chunk_forward_flops(const OpConfig& cfg) {
  const bool delta = cfg.info().delta;
  return sum_over_chunks(cfg, [&](int L) { return chunk_counts(L, cfg.K, cfg.V, delta).fwd; });
}

double chunk_backward_flops(const OpConfig& cfg) {
  const bool delta = cfg.info().delta;
  return sum_over_chunks(cfg, [&](int L) { return chunk_counts(L, cfg.K, cfg.V, delta).bwd; });
}

}  // namespace gdn
