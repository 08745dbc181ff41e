// The decoder of MAD's auto-encoder (Poli et al., mad-lab mad/model/auto_encoder.py), with
// which MAD trains and scores its compression task: the encoder's hidden state at the last
// position is the code, and every position t of the sequence is decoded from
// code + sinusoidal_positions[t] through RMSNorm -> Linear -> GELU -> RMSNorm -> Linear ->
// GELU (MAD's "non-expanding MLP decoder", linears with bias). The model's final norm and
// head (with a bias, MAD's unembed) then give the logits of every position.
#pragma once

#include "gdn/nn/linear.h"
#include "gdn/nn/norm.h"

namespace gdn::nn {

template <class T>
struct AutoencoderDecoder {
  int dim = 0;
  RMSNorm<T> norm1, norm2;
  Linear<T> fc1, fc2;  // [dim, dim] with bias

  void init(int d, double eps, Rng& rng, double std);
  void collect(const std::string& prefix, ParamList<T>& list);
  // code [B, dim] -> y [B * T, dim]: row b * T + t decodes position t of sequence b.
  void forward(const T* code, int B, int T_, T* y);
  // dy [B * T, dim] -> dcode [B, dim] (written); adds into the parameters' grad.
  void backward(const T* dy, T* dcode);

 private:
  int B_ = 0, T_ = 0;
  std::vector<T> positions_;                 // [T, dim], the table of the last T
  std::vector<T> z_, u_, a1_, h1_, v_, a2_;  // forward: input, fc1 in/out, gelu, fc2 in/out
  std::vector<T> d1_, d2_;                   // backward scratch
};

}  // namespace gdn::nn
