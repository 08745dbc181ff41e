#include "gdn/nn/embedding.h"

#include <algorithm>
#include <cmath>

#include "gdn/common.h"

namespace gdn::nn {

template <class T>
void Embedding<T>::init(int vocab_size, int d, Rng& rng, double std) {
  vocab = vocab_size;
  dim = d;
  weight.init({vocab, dim}, true);
  weight.normal(rng, std);
}

template <class T>
void Embedding<T>::forward(const int32_t* ids, int n, T* y) {
  for (int i = 0; i < n; ++i)
    GDN_CHECK(ids[i] >= 0 && ids[i] < vocab, "embedding: token id ", ids[i], " at position ", i,
              " is outside the vocabulary [0, ", vocab, ")");
  ids_.assign(ids, ids + n);
  for (int i = 0; i < n; ++i)
    std::copy_n(weight.value.data() + size_t(ids[i]) * dim, dim, y + size_t(i) * dim);
}

template <class T>
void Embedding<T>::backward(const T* dy) {
  for (size_t i = 0; i < ids_.size(); ++i) {
    T* g = weight.grad.data() + size_t(ids_[i]) * dim;
    for (int j = 0; j < dim; ++j) g[j] += dy[i * dim + j];
  }
}

std::vector<double> sinusoidal_positions(int positions, int dim) {
  GDN_CHECK(positions >= 0 && dim >= 4, "sinusoidal positions: need positions >= 0 and dim >= 4, got ", positions,
            " and ", dim);
  const int half = dim / 2;
  std::vector<double> table(size_t(positions) * dim, 0.0);
  for (int p = 0; p < positions; ++p)
    for (int i = 0; i < half; ++i) {
      const double angle = p * std::exp(-std::log(10000.0) * i / (half - 1));
      table[size_t(p) * dim + i] = std::sin(angle);
      table[size_t(p) * dim + half + i] = std::cos(angle);
    }
  return table;
}

template struct Embedding<float>;
template struct Embedding<double>;

}  // namespace gdn::nn
