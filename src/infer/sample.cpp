#include <algorithm>
#include <cmath>

#include "gdn/common.h"
#include "gdn/infer.h"

namespace gdn::infer {

Sampler::Sampler(SamplerOptions opt) : opt_(opt), rng_(opt.seed) {}

int32_t Sampler::sample(const float* logits, int vocab) {
  for (int i = 0; i < vocab; ++i) GDN_CHECK(!std::isnan(logits[i]), "sampler: logit ", i, " is NaN");
  if (opt_.temperature <= 0) return int32_t(std::max_element(logits, logits + vocab) - logits);
  scratch_.resize(size_t(vocab));
  for (int i = 0; i < vocab; ++i) scratch_[size_t(i)] = {logits[i], i};
  // Candidates by decreasing logit: top-k cuts the list, top-p the smallest prefix whose
  // probability reaches p.
  size_t n = scratch_.size();
  if (opt_.top_k > 0 && size_t(opt_.top_k) < n) n = size_t(opt_.top_k);
  std::partial_sort(scratch_.begin(), scratch_.begin() + ptrdiff_t(n), scratch_.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  const double mx = scratch_[0].first;
  std::vector<double> p(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += (p[i] = std::exp((scratch_[i].first - mx) / opt_.temperature));
  if (opt_.top_p < 1.0) {
    double acc = 0;
    size_t keep = 0;
    while (keep < n && acc < opt_.top_p * sum) acc += p[keep++];
    n = std::max<size_t>(keep, 1);
    sum = acc > 0 ? acc : p[0];
  }
  double u = rng_.uniform() * sum;
  for (size_t i = 0; i < n; ++i) {
    if (u < p[i]) return scratch_[i].second;
    u -= p[i];
  }
  return scratch_[n - 1].second;
}

}  // namespace gdn::infer
