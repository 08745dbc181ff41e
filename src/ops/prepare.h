// The steps every form shares, done once around the core (see core.h): validation,
// L2 norm of q and k, RetNet's fixed gates, Longhorn's beta, and in the backward the
// reduction of per-value-head q/k gradients over GVA groups and the chain rule back
// through those steps.
#pragma once

#include <vector>

#include "ops/core.h"

namespace gdn::detail {

template <class T>
struct Prepared {
  std::vector<T> q, k;            // normalised copies (empty without l2norm)
  std::vector<T> q_rnorm, k_rnorm;  // 1 / sqrt(sum x^2 + eps) per (token, head)
  std::vector<T> beta;            // Longhorn's effective beta (else empty)
  std::vector<T> g;               // RetNet's fixed gates when no g is given (else empty)
  CoreProblem<T> core;
};

template <class T>
Prepared<T> prepare(const OpConfig& cfg, const OpInputs<T>& in);

// Turns the core's gradients (dq, dk per value head; gradient of the effective beta)
// into the op's gradients. `core` is what the core backward wrote.
template <class T>
void finish_backward(const OpConfig& cfg, const OpInputs<T>& in, const Prepared<T>& prep,
                     const CoreGrads<T>& core, const OpGrads<T>& grads);

// Scratch the core backward writes into, shaped for `cfg`; grads that the op's caller
// gave are written in place where no post-processing is needed (dv, dg, dh0).
template <class T>
struct CoreGradBuffers {
  std::vector<T> dq, dk, dbeta, dg;
  CoreGrads<T> grads;
};
template <class T>
CoreGradBuffers<T> core_grad_buffers(const OpConfig& cfg, const Prepared<T>& prep, const OpGrads<T>& grads);

}  // namespace gdn::detail
