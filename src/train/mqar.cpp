// MQAR in Zoology's form (zoology/data/associative_recall.py, multiquery_ar).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "gdn/common.h"
#include "gdn/nn/loss.h"
#include "gdn/train/data.h"

namespace gdn::train {

namespace {
// Draws `count` distinct indices of [0, n) with probabilities w (weighted sampling without
// replacement, successive draws renormalised, as numpy.random.choice(replace=False)).
std::vector<int> choose_weighted(nn::Rng& rng, std::vector<double> w, int count) {
  std::vector<int> out;
  double total = std::accumulate(w.begin(), w.end(), 0.0);
  for (int c = 0; c < count; ++c) {
    double u = rng.uniform() * total;
    int pick = int(w.size()) - 1;
    for (size_t i = 0; i < w.size(); ++i) {
      if (w[i] == 0) continue;
      if (u < w[i]) {
        pick = int(i);
        break;
      }
      u -= w[i];
    }
    while (w[pick] == 0) --pick;  // rounding at the end of the range
    out.push_back(pick);
    total -= w[pick];
    w[pick] = 0;
  }
  return out;
}

// `count` distinct values of [lo, hi) (partial Fisher-Yates).
std::vector<int32_t> choose_distinct(nn::Rng& rng, int32_t lo, int32_t hi, int count, std::vector<int32_t>& pool) {
  pool.resize(size_t(hi - lo));
  std::iota(pool.begin(), pool.end(), lo);
  for (int i = 0; i < count; ++i) std::swap(pool[i], pool[i + rng.below(pool.size() - i)]);
  return {pool.begin(), pool.begin() + count};
}
}  // namespace

Dataset make_mqar(const MqarConfig& c, int64_t num_examples, uint64_t seed) {
  GDN_CHECK(c.seq_len % 2 == 0, "mqar: seq_len must be even, got ", c.seq_len);
  GDN_CHECK(c.vocab_size > c.seq_len, "mqar: vocab_size (", c.vocab_size, ") must exceed seq_len (", c.seq_len, ")");
  GDN_CHECK(c.num_kv_pairs > 0 && c.num_kv_pairs * 4 <= c.seq_len, "mqar: need 0 < 4 * num_kv_pairs <= seq_len, got ",
            c.num_kv_pairs, " pairs for seq_len ", c.seq_len);
  GDN_CHECK(c.num_kv_pairs < c.vocab_size / 2 - 1, "mqar: more pairs than keys in the vocabulary");
  GDN_CHECK(c.power_a > 0, "mqar: power_a must be > 0, got ", c.power_a);
  nn::Rng rng(seed);
  const int L = c.seq_len, kv = c.num_kv_pairs, context = 2 * kv, half = c.vocab_size / 2;
  const int space = (L - context) / 2;
  std::vector<double> p(space);
  for (int i = 0; i < space; ++i) p[i] = c.power_a * std::pow(double(i + 1), c.power_a - 1);

  Dataset d;
  d.n = num_examples;
  d.len = L;
  d.vocab = c.vocab_size;
  d.inputs.assign(size_t(num_examples) * L, 0);
  d.labels.assign(size_t(num_examples) * L, nn::kIgnoreIndex);
  std::vector<int32_t> pool;
  // Zoology builds L + 1 tokens and shifts: inputs = seq[:-1], labels = targets[1:]. Here
  // directly: query of key i at input position context + 2 gap_i, its value the label there.
  for (int64_t e = 0; e < num_examples; ++e) {
    int32_t* in = d.inputs.data() + e * L;
    int32_t* lab = d.labels.data() + e * L;
    const auto keys = choose_distinct(rng, 1, half, kv, pool);
    const auto values = choose_distinct(rng, half, c.vocab_size, kv, pool);
    for (int i = 0; i < kv; ++i) {
      in[2 * i] = keys[i];
      in[2 * i + 1] = values[i];
    }
    const auto gaps = choose_weighted(rng, p, kv);
    for (int i = 0; i < kv; ++i) {
      const int pos = context + 2 * gaps[i];
      in[pos] = keys[i];
      lab[pos] = values[i];
    }
    if (c.random_non_queries)
      for (int t = 0; t < L; ++t)
        if (in[t] == 0) in[t] = int32_t(rng.below(c.vocab_size));
  }
  return d;
}

}  // namespace gdn::train
