// LM head + cross-entropy over the labelled positions only: label -100 is ignored, and the
// head (the vocab-sized GEMM) runs only on the rows that carry a label. For MQAR that is
// a few rows per sequence instead of all of them.
#pragma once

#include <cstdint>

#include "gdn/nn/param.h"

namespace gdn::nn {

inline constexpr int32_t kIgnoreIndex = -100;

struct LossStats {
  double loss = 0;     // mean cross-entropy over labelled positions (0 when none)
  int64_t count = 0;   // labelled positions
  int64_t correct = 0; // argmax == label
};

template <class T>
struct LMHeadLoss {
  // h [n, dim] (after the final norm), labels [n], head [vocab, dim], bias [vocab] or null.
  // Throws gdn::Error for a label outside [0, vocab) other than -100.
  LossStats forward(const T* h, const int32_t* labels, int n, int dim, const Param<T>& head,
                    const Param<T>* bias = nullptr);
  // Writes dh [n, dim] (zero on unlabelled rows) for d(mean loss); adds into head.grad (and
  // bias->grad: the bias of the last forward must be given again).
  void backward(T* dh, Param<T>& head, Param<T>* bias = nullptr);

 private:
  std::vector<int> rows_;
  std::vector<int32_t> targets_;
  std::vector<T> hsel_, probs_;
  int n_ = 0, dim_ = 0, vocab_ = 0;
};

}  // namespace gdn::nn
