// The core every form implements: the recurrence on already-prepared inputs.
//
// The public API (ops.h) does the work that is the same for every form once, in
// prepare.h: L2 norm of q and k, RetNet's fixed gates, Longhorn's beta, and after the
// backward the reduction of per-value-head q/k gradients over GVA groups and the chain
// rule through those steps. A form (reference, recurrent, chunk, CUDA) only sees:
//
//   per step:  S <- Diag(exp g_t) S;  v' = beta_t (v_t - S^T k_t);  S <- S + k_t v'^T
//              (additive rule: S <- S + k_t v_t^T);  o_t = scale * S^T q_t
#pragma once

#include <cstdint>

#include "gdn/ops.h"

namespace gdn::detail {

template <class Real>
struct CoreProblem {
  int B = 1, T = 0, H = 0, HV = 0, K = 0, V = 0;
  int N = 0;                         // number of sequences
  const int32_t* cu_seqlens = nullptr;  // N + 1 offsets, or null (fixed length)
  GateKind gate = GateKind::none;    // none, scalar or vector (never fixed)
  bool delta = true;                 // delta rule; false: additive (beta is null)
  Real scale = 1;
  int chunk_size = 64;
  const Real* q = nullptr;     // [B,T,H,K], normalised when the op asks for it
  const Real* k = nullptr;     // [B,T,H,K]
  const Real* v = nullptr;     // [B,T,HV,V]
  const Real* g = nullptr;     // [B,T,HV] (scalar) or [B,T,HV,K] (vector); null iff gate none
  const Real* beta = nullptr;  // [B,T,HV] effective beta; null iff !delta
  const Real* h0 = nullptr;    // [N,HV,K,V] or null

  int group() const { return HV / H; }  // value heads per q/k head
};

template <class Real>
struct CoreOutputs {
  Real* o = nullptr;   // [B,T,HV,V], always written
  Real* ht = nullptr;  // [N,HV,K,V] or null
};

template <class Real>
struct CoreGradOutputs {
  const Real* d_o = nullptr;  // [B,T,HV,V]
  const Real* dht = nullptr;  // [N,HV,K,V] or null
};

// Every non-null pointer is fully written (no accumulation into caller memory).
template <class Real>
struct CoreGrads {
  Real* dq = nullptr;     // [B,T,HV,K]: per value head; the caller sums over GVA groups
  Real* dk = nullptr;     // [B,T,HV,K]
  Real* dv = nullptr;     // [B,T,HV,V]
  Real* dg = nullptr;     // like g; null iff g is null
  Real* dbeta = nullptr;  // [B,T,HV]; null iff !delta
  Real* dh0 = nullptr;    // [N,HV,K,V]; null iff h0 is null
};

// Sequence n occupies tokens [bos, eos) of batch row b; token t of row b is the flat
// token index b * T + t in every [B,T,...] tensor.
struct SeqSpan {
  int b, bos, eos;
  int len() const { return eos - bos; }
};

template <class Real>
inline SeqSpan seq_span(const CoreProblem<Real>& p, int n) {
  if (p.cu_seqlens) return {0, p.cu_seqlens[n], p.cu_seqlens[n + 1]};
  return {n, 0, p.T};
}

// The forms. Reference is the fp64 definition; recurrent and chunk are fp32 CPU paths.
void reference_core_forward(const CoreProblem<double>& p, const CoreOutputs<double>& out);
void reference_core_backward(const CoreProblem<double>& p, const CoreGradOutputs<double>& dout,
                             const CoreGrads<double>& grads);

void recurrent_core_forward(const CoreProblem<float>& p, const CoreOutputs<float>& out);
void recurrent_core_backward(const CoreProblem<float>& p, const CoreGradOutputs<float>& dout,
                             const CoreGrads<float>& grads);

void chunk_core_forward(const CoreProblem<float>& p, const CoreOutputs<float>& out);
void chunk_core_backward(const CoreProblem<float>& p, const CoreGradOutputs<float>& dout,
                         const CoreGrads<float>& grads);

}  // namespace gdn::detail
