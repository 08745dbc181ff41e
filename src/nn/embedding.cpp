#include "gdn/nn/embedding.h"

#include <algorithm>

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

template struct Embedding<float>;
template struct Embedding<double>;

}  // namespace gdn::nn
