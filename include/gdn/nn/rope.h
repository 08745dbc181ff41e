// Rotary position embedding, rotate-half form (FLA and transformers): in each head the
// pairs (i, i + rd/2) of the first `rotary_dim` = rd dims rotate by pos * theta^(-2i/rd);
// the remaining dims pass through. The inverse rotation (the transpose) is what a backward
// applies to the gradients. Used by training's attention and by inference's attention.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace gdn::nn {

// x [B, T, heads, dh] in place; token t of each sequence sits at position pos0 + t.
template <class T>
void apply_rope(T* x, int B, int Tn, int heads, int dh, int rotary_dim, double theta, int64_t pos0, bool inverse) {
  const int half = rotary_dim / 2;
  if (half == 0) return;
  std::vector<double> freq(half);
  for (int i = 0; i < half; ++i) freq[i] = std::pow(theta, -2.0 * i / rotary_dim);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tn; ++t)
      for (int i = 0; i < half; ++i) {
        const double ang = double(pos0 + t) * freq[i];
        const T c = T(std::cos(ang)), s = T(inverse ? -std::sin(ang) : std::sin(ang));
        for (int h = 0; h < heads; ++h) {
          T* r = x + ((size_t(b) * Tn + t) * heads + h) * dh;
          const T x1 = r[i], x2 = r[i + half];
          r[i] = x1 * c - x2 * s;
          r[i + half] = x2 * c + x1 * s;
        }
      }
}

}  // namespace gdn::nn
