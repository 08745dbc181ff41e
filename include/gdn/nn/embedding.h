// Token embedding: y[t] = E[id_t], E [vocab, dim]; and the fixed sinusoidal position table.
#pragma once

#include <cstdint>

#include "gdn/nn/param.h"

namespace gdn::nn {

template <class T>
struct Embedding {
  int vocab = 0, dim = 0;
  Param<T> weight;  // [vocab, dim]

  void init(int vocab_size, int d, Rng& rng, double std);
  void collect(const std::string& prefix, ParamList<T>& list) { list.push_back({prefix + ".weight", &weight}); }
  // Throws gdn::Error naming the position when an id is outside [0, vocab).
  void forward(const int32_t* ids, int n, T* y);
  void backward(const T* dy);  // adds into weight.grad at the rows of the last forward

 private:
  std::vector<int32_t> ids_;
};

// Sinusoidal position embeddings [positions, dim] as MAD's posemb_sincos_1d (after fairseq):
// row p = [sin(p w_0) .. sin(p w_{h-1}), cos(p w_0) .. cos(p w_{h-1})], h = dim / 2,
// w_i = 10000^(-i / (h - 1)), a zero appended when dim is odd. Needs dim >= 4.
std::vector<double> sinusoidal_positions(int positions, int dim);

}  // namespace gdn::nn
