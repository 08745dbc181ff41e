// S-NIAH (single needle in a haystack) in the form of RULER's niah_single_1/2/3, byte-level.
#include <cmath>
#include <fstream>
#include <iterator>

#include "gdn/common.h"
#include "gdn/nn/loss.h"
#include "gdn/train/data.h"

namespace gdn::train {

std::string niah_needle(const std::string& key, const std::string& value) {
  return " One of the special magic numbers for " + key + " is: " + value + ". ";
}

std::string niah_question(const std::string& key) {
  return "\nWhat is the special magic number for " + key +
         " mentioned in the provided text? The special magic number for " + key + " mentioned in the provided text is ";
}

namespace {
// RULER's noise haystack (S-NIAH-1).
constexpr const char* kFiller = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";

std::string random_chars(nn::Rng& rng, const char* alphabet, int n) {
  const std::string a(alphabet);
  std::string s(size_t(n), ' ');
  for (auto& ch : s) ch = a[rng.below(a.size())];
  return s;
}

std::string random_value(nn::Rng& rng, int variant) {
  if (variant != 3) return std::to_string(1000000 + rng.below(9000000));  // 7 digits
  const char* hex = "0123456789abcdef";
  return random_chars(rng, hex, 8) + "-" + random_chars(rng, hex, 4) + "-" + random_chars(rng, hex, 4) + "-" +
         random_chars(rng, hex, 4) + "-" + random_chars(rng, hex, 12);
}
}  // namespace

Dataset make_niah(const NiahConfig& c, int64_t num_examples, uint64_t seed) {
  const std::string task = "task s_niah_" + std::to_string(c.variant);
  GDN_CHECK(c.variant >= 1 && c.variant <= 3, "s_niah: variant must be 1, 2 or 3, got ", c.variant);
  GDN_CHECK(c.depth <= 1 && !std::isnan(c.depth), task, ": depth must be in [0, 1] (or < 0 for a random depth), got ",
            c.depth);
  std::string text;
  if (c.variant == 1) {
    while (text.size() < size_t(c.seq_len) + 1) text += kFiller;
  } else {
    std::ifstream f(c.path, std::ios::binary);
    GDN_CHECK(f.good(), task, ": cannot open the haystack text ", c.path, " (scripts/make_corpus.sh builds it)");
    text.assign(std::istreambuf_iterator<char>(f), {});
  }
  nn::Rng rng(seed);
  Dataset d;
  d.n = num_examples;
  d.len = c.seq_len;
  d.vocab = 256;
  d.inputs.assign(size_t(num_examples) * c.seq_len, 0);
  d.labels.assign(d.inputs.size(), nn::kIgnoreIndex);
  for (int64_t e = 0; e < num_examples; ++e) {
    const std::string key = random_chars(rng, "abcdefghijklmnopqrstuvwxyz", 8);
    const std::string value = random_value(rng, c.variant);
    const std::string needle = niah_needle(key, value), question = niah_question(key);
    // seq_len + 1 bytes (inputs and next-byte labels): haystack with the needle, question, value.
    const int64_t hay = int64_t(c.seq_len) + 1 - int64_t(needle.size() + question.size() + value.size());
    GDN_CHECK(hay >= 1, task, ": seq_len ", c.seq_len, " leaves no room for a haystack around the ",
              needle.size() + question.size() + value.size(), " bytes of needle, question and answer");
    GDN_CHECK(text.size() >= size_t(hay), task, ": ", c.path, " holds ", text.size(), " bytes, fewer than the ", hay,
              " bytes of haystack that seq_len ", c.seq_len, " needs");
    const size_t from = c.variant == 1 ? 0 : rng.below(text.size() - size_t(hay) + 1);
    const double depth = c.depth < 0 ? rng.uniform() : c.depth;
    const size_t at = size_t(std::llround(depth * double(hay)));
    const std::string seq = text.substr(from, at) + needle + text.substr(from + at, size_t(hay) - at) + question + value;
    int32_t* in = d.inputs.data() + e * c.seq_len;
    int32_t* lab = d.labels.data() + e * c.seq_len;
    for (int t = 0; t < c.seq_len; ++t) in[t] = uint8_t(seq[size_t(t)]);
    for (size_t t = seq.size() - value.size(); t < seq.size(); ++t) lab[t - 1] = uint8_t(seq[t]);
  }
  return d;
}

}  // namespace gdn::train
