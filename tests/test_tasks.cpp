// The MAD task generators and the S-NIAH needle tasks: structural properties of every
// sequence that a wrong generator would break, determinism for a seed, strict configs.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "gdn/common.h"
#include "gdn/nn/loss.h"
#include "gdn/train/data.h"
#include "temp_dir.h"

using namespace gdn;
using namespace gdn::train;
using nlohmann::json;

namespace {

constexpr int32_t kIgnore = nn::kIgnoreIndex;

// A fresh seed each run (printed on failure) besides the fixed ones.
uint64_t fresh_seed() { return std::random_device{}(); }

std::vector<int32_t> row(const std::vector<int32_t>& v, const Dataset& d, int64_t e) {
  return {v.begin() + e * d.len, v.begin() + (e + 1) * d.len};
}

// Training split: every label is the next input (MAD's targets = inputs[1:]).
void expect_next_token_labels(const Dataset& d) {
  for (int64_t e = 0; e < d.n; ++e)
    for (int t = 0; t + 1 < d.len; ++t) ASSERT_EQ(d.labels[e * d.len + t], d.inputs[e * d.len + t + 1]);
  for (int64_t e = 0; e < d.n; ++e) ASSERT_NE(d.labels[e * d.len + d.len - 1], kIgnore);
}

// In-context recall (evaluation split, multi_query): key-value pairs at even positions; a key
// keeps its value; exactly the repeated keys are scored, with the value shown before; the
// final probe is scored. Counts the noise slots seen in noise_slots.
void check_recall_eval(const Dataset& d, int vocab, int noise_vocab, int64_t& noise_slots) {
  const int ns = vocab - noise_vocab, nk = ns / 2;
  noise_slots = 0;
  for (int64_t e = 0; e < d.n; ++e) {
    const auto in = row(d.inputs, d, e), lab = row(d.labels, d, e);
    std::map<int32_t, int32_t> value_of;
    for (int t = 0; t + 1 < d.len; t += 2) {
      const int32_t k = in[t], v = in[t + 1];
      if (k >= ns) {  // a noise slot: both tokens from the noise range, nothing scored
        ASSERT_LT(k, ns + noise_vocab);
        ASSERT_GE(v, ns);
        ASSERT_LT(v, ns + noise_vocab);
        ASSERT_EQ(lab[t], kIgnore);
        ++noise_slots;
        continue;
      }
      ASSERT_LT(k, nk) << "key out of the key range at " << t;
      ASSERT_GE(v, nk);
      ASSERT_LT(v, ns);
      const bool seen = value_of.count(k) > 0;
      if (seen) ASSERT_EQ(value_of[k], v) << "key " << k << " changed its value";
      ASSERT_EQ(lab[t], seen ? v : kIgnore) << "position " << t;
      value_of[k] = v;
      ASSERT_EQ(lab[t + 1], kIgnore);
    }
    // The final probe: the last input is a key shown before, labelled with its value.
    const int32_t probe = in[d.len - 1];
    ASSERT_TRUE(value_of.count(probe)) << "probe of an unseen key";
    ASSERT_EQ(lab[d.len - 1], value_of[probe]);
  }
}

TEST(MadInContextRecall, DefaultsAndEvalLabels) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(cat("seed ", seed));
  const Dataset d = make_task({{"task", "mad_in_context_recall"}}, 300, seed, true);
  EXPECT_EQ(d.vocab, 16);
  EXPECT_EQ(d.len, 127);  // MAD: seq_len 128 shifted by one
  d.validate("recall");
  int64_t noise = -1;
  check_recall_eval(d, 16, 0, noise);
  EXPECT_EQ(noise, 0);
  EXPECT_GT(d.labelled(), d.n * 20);  // with 8 keys most of 63 slots repeat a key
  expect_next_token_labels(make_task({{"task", "mad_in_context_recall"}}, 50, seed, false));
}

TEST(MadInContextRecall, SingleQueryWithCopyPrefix) {
  MadRecallConfig c;
  c.multi_query = false;
  const Dataset d = make_mad_in_context_recall(c, 100, fresh_seed(), true);
  ASSERT_EQ(d.len, 128);
  for (int64_t e = 0; e < d.n; ++e) {
    const auto in = row(d.inputs, d, e), lab = row(d.labels, d, e);
    EXPECT_EQ(in[d.len - 2], 15);  // the copy prefix before the probe
    for (int t = 0; t + 1 < d.len; ++t) EXPECT_EQ(lab[t], kIgnore);
    // Keys [0, 7), values [7, 15); the probe's value is the one shown with it.
    const int32_t probe = in[d.len - 1];
    ASSERT_LT(probe, 7);
    bool found = false;
    for (int t = 0; t + 2 < d.len; t += 2) found = found || (in[t] == probe && in[t + 1] == lab[d.len - 1]);
    EXPECT_TRUE(found);
  }
}

TEST(MadNoisyInContextRecall, NoiseFromItsOwnRange) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(cat("seed ", seed));
  const Dataset d = make_task({{"task", "mad_noisy_in_context_recall"}}, 300, seed, true);
  EXPECT_EQ(d.vocab, 32);
  d.validate("noisy recall");
  int64_t noise = 0;
  check_recall_eval(d, 32, 16, noise);
  // Each of the 62 slots (all but one kept clean) is noise with probability 0.2.
  const double frac = double(noise) / double(d.n * 62);
  EXPECT_NEAR(frac, 0.2, 0.02);
  expect_next_token_labels(make_task({{"task", "mad_noisy_in_context_recall"}}, 50, seed, false));
}

TEST(MadFuzzyInContextRecall, ScoredValuesFollowTheirKeyEarlier) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(cat("seed ", seed));
  const Dataset d = make_task({{"task", "mad_fuzzy_in_context_recall"}}, 200, seed, true);
  EXPECT_EQ(d.len, 128);
  d.validate("fuzzy recall");
  // vocab 16 with multi_query: pad 15, keys [0, 7), values [7, 15); evaluation keys have 3 tokens.
  const int nk = 7, ns = 15, pad = 15;
  for (int64_t e = 0; e < d.n; ++e) {
    const auto in = row(d.inputs, d, e), lab = row(d.labels, d, e);
    int t = 0;
    while (t < d.len && in[t] == pad) ++t;
    for (int u = t; u < d.len; ++u) ASSERT_NE(in[u], pad) << "padding inside the sequence";
    int runs = 0;
    for (int a = 0; a < d.len;) {
      if (lab[a] == kIgnore) {
        ++a;
        continue;
      }
      int b = a;
      while (b < d.len && lab[b] != kIgnore) ++b;
      // Labels [a, b) are a value; the key is inputs [a - 2, a]; the same key followed by
      // exactly this value appears earlier.
      ASSERT_GE(a, 2);
      const std::vector<int32_t> key(in.begin() + a - 2, in.begin() + a + 1), value(lab.begin() + a, lab.begin() + b);
      for (int32_t k : key) ASSERT_LT(k, nk);
      for (int32_t v : value) ASSERT_TRUE(v >= nk && v < ns);
      bool found = false;
      for (int s = 0; s + 3 + int(value.size()) <= a - 2 && !found; ++s) {
        found = std::equal(key.begin(), key.end(), in.begin() + s) &&
                std::equal(value.begin(), value.end(), in.begin() + s + 3) &&
                (in[s + 3 + value.size()] < nk || in[s + 3 + value.size()] >= ns);
      }
      ASSERT_TRUE(found) << "example " << e << ": scored value at " << a << " has no earlier key-value pair";
      ++runs;
      a = b;
    }
    ASSERT_GE(runs, 1);
    ASSERT_NE(lab[d.len - 1], kIgnore);  // the final probe is scored
  }
  expect_next_token_labels(make_task({{"task", "mad_fuzzy_in_context_recall"}}, 50, seed, false));
}

TEST(MadSelectiveCopying, ScoredOutputsAreTheTokensInOrder) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(cat("seed ", seed));
  const Dataset d = make_task({{"task", "mad_selective_copying"}}, 200, seed, false);
  ASSERT_EQ(d.len, 256);
  ASSERT_EQ(d.vocab, 16);
  d.validate("selective copying");
  const int n = 16, blank = 14, copy = 15;
  std::set<std::vector<int32_t>> patterns;
  for (int64_t e = 0; e < d.n; ++e) {
    const auto in = row(d.inputs, d, e), lab = row(d.labels, d, e);
    std::vector<int32_t> tokens, blanks;
    for (int t = 0; t < d.len - n - 1; ++t) {
      ASSERT_NE(in[t], copy);
      (in[t] == blank ? blanks : tokens).push_back(in[t] == blank ? t : in[t]);
      ASSERT_EQ(lab[t], kIgnore);
    }
    ASSERT_EQ(in[d.len - n - 1], copy);
    ASSERT_EQ(lab[d.len - n - 1], kIgnore);
    ASSERT_EQ(int(blanks.size()), d.len - 2 * n - 1);
    ASSERT_NE(in[d.len - n - 2], blank);  // MAD inserts blanks before tokens only
    const std::vector<int32_t> scored(lab.end() - n, lab.end());
    ASSERT_EQ(scored, tokens);
    for (int t = d.len - n; t < d.len; ++t) ASSERT_EQ(in[t], blank);
    patterns.insert(blanks);
  }
  EXPECT_GT(patterns.size(), size_t(d.n / 2));  // blanks are placed at random
}

TEST(MadCompression, LabelsReconstructTheInputs) {
  const Dataset d = make_task({{"task", "mad_compression"}}, 100, fresh_seed(), false);
  ASSERT_EQ(d.len, 32);
  d.validate("compression");
  EXPECT_EQ(d.labels, d.inputs);
  std::set<int32_t> used;
  for (int64_t e = 0; e < d.n; ++e) {
    const auto in = row(d.inputs, d, e);
    EXPECT_EQ(in.back(), 15);
    for (int t = 0; t + 1 < d.len; ++t) used.insert(in[t]);
  }
  EXPECT_EQ(used.size(), size_t(15));  // every plain token, never the compression token
  EXPECT_EQ(*used.rbegin(), 14);

  MadCompressionConfig c;
  c.vocab_size = 24;
  c.noise_vocab_size = 8;
  c.frac_noise = 0.3;
  const Dataset noisy = make_mad_compression(c, 200, fresh_seed());
  int64_t noise = 0;
  for (int64_t e = 0; e < noisy.n; ++e)
    for (int t = 0; t + 1 < noisy.len; ++t) {
      const int32_t x = noisy.inputs[e * noisy.len + t];
      ASSERT_LT(x, 23);
      noise += x >= 15;
    }
  EXPECT_NEAR(double(noise) / double(noisy.n * 31), 0.3, 0.03);
}

TEST(MadMemorization, OneFixedMapAcrossExamplesAndSplits) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(cat("seed ", seed));
  std::map<int32_t, int32_t> value_of;
  for (bool eval : {false, true}) {
    const Dataset d = make_task({{"task", "mad_memorization"}}, 200, seed, eval);
    ASSERT_EQ(d.len, 32);
    ASSERT_EQ(d.vocab, 256);
    d.validate("memorization");
    for (int64_t e = 0; e < d.n; ++e)
      for (int t = 0; t < d.len; t += 2) {
        const int32_t k = d.inputs[e * d.len + t], v = d.labels[e * d.len + t + 1];
        ASSERT_EQ(d.inputs[e * d.len + t + 1], 255);  // the insert token
        ASSERT_EQ(d.labels[e * d.len + t], kIgnore);
        ASSERT_LT(k, 127);
        ASSERT_TRUE(v >= 127 && v < 255);
        auto [it, fresh] = value_of.emplace(k, v);
        ASSERT_EQ(it->second, v) << "key " << k << " maps to two values";
      }
  }
  EXPECT_EQ(value_of.size(), size_t(127));  // 400 x 16 draws cover all 127 keys
  std::set<int32_t> values;
  for (auto [k, v] : value_of) values.insert(v);
  EXPECT_EQ(values.size(), value_of.size());  // distinct keys, distinct values
  // Another kv_map_seed, another map.
  const Dataset other = make_task({{"task", "mad_memorization"}, {"kv_map_seed", 7}}, 20, seed, false);
  int differ = 0;
  for (int64_t i = 0; i < other.n * other.len; i += 2) differ += value_of[other.inputs[i]] != other.labels[i + 1];
  EXPECT_GT(differ, 0);
}

// The needle's position, the haystack's length and the scored answer of every row.
void check_niah(const Dataset& d, int variant, double depth, std::set<int64_t>* starts = nullptr) {
  ASSERT_EQ(d.vocab, 256);
  d.validate("niah");
  const std::string marker = " One of the special magic numbers for ";
  for (int64_t e = 0; e < d.n; ++e) {
    const auto in = row(d.inputs, d, e), lab = row(d.labels, d, e);
    const std::string s(in.begin(), in.end());
    const size_t at = s.find(marker);
    ASSERT_NE(at, std::string::npos);
    ASSERT_EQ(s.find(marker, at + 1), std::string::npos);
    const std::string key = s.substr(at + marker.size(), 8);
    const size_t value_at = at + marker.size() + 8 + 5;  // " is: "
    ASSERT_EQ(s.substr(at + marker.size() + 8, 5), " is: ");
    const std::string value = s.substr(value_at, s.find(". ", value_at) - value_at);
    if (variant == 3) {
      ASSERT_EQ(value.size(), size_t(36));
      for (int dash : {8, 13, 18, 23}) ASSERT_EQ(value[dash], '-');
    } else {
      ASSERT_EQ(value.size(), size_t(7));
      for (char ch : value) ASSERT_TRUE(ch >= '0' && ch <= '9');
    }
    const std::string needle = niah_needle(key, value), question = niah_question(key);
    ASSERT_EQ(s.substr(at, needle.size()), needle);
    // The haystack fills the rest: seq_len + 1 bytes hold haystack, needle, question, answer.
    const int64_t hay = int64_t(d.len) + 1 - int64_t(needle.size() + question.size() + value.size());
    ASSERT_EQ(s.substr(size_t(hay) + needle.size(), question.size()), question);
    if (depth >= 0) ASSERT_NEAR(double(at), depth * double(hay), 1.0);
    if (starts) starts->insert(int64_t(at));
    // Only the answer is scored, byte by byte, each label the next byte.
    for (int t = 0; t < d.len; ++t) {
      const int i = t - (d.len - int(value.size()));
      ASSERT_EQ(lab[t], i >= 0 ? int32_t(uint8_t(value[size_t(i)])) : kIgnore) << "position " << t;
      if (i >= 0 && t + 1 < d.len) ASSERT_EQ(in[t + 1], uint8_t(value[size_t(i)]));
    }
  }
}

TEST(Niah, FillerHaystackAtEveryDepth) {
  for (double depth : {0.0, 0.25, 0.5, 0.9, 1.0}) {
    SCOPED_TRACE(cat("depth ", depth));
    const Dataset d = make_task({{"task", "s_niah_1"}, {"seq_len", 512}, {"depth", depth}}, 20, fresh_seed(), true);
    ASSERT_EQ(d.len, 512);
    check_niah(d, 1, depth);
    // The haystack before the needle is the filler sentence repeated.
    const std::string s(d.inputs.begin(), d.inputs.begin() + d.len);
    const std::string filler = "The grass is green. The sky is blue.";
    if (depth > 0.25) EXPECT_EQ(s.substr(0, filler.size()), filler);
  }
  std::set<int64_t> starts;
  check_niah(make_task({{"task", "s_niah_1"}, {"seq_len", 2048}}, 50, fresh_seed(), false), 1, -1, &starts);
  EXPECT_GT(starts.size(), size_t(25));  // a random depth per example
}

TEST(Niah, TextHaystackAndUuidValue) {
  test::TempDir dir("gdn_test_tasks");
  const std::string path = dir.file("text.txt");
  std::string text;
  std::mt19937 gen(fresh_seed());
  const char* words[] = {"alpha ", "beta ", "gamma ", "delta. ", "rule ", "state "};
  while (text.size() < 20000) text += words[gen() % 6];
  std::ofstream(path) << text;
  for (int variant : {2, 3})
    for (double depth : {0.1, 0.6}) {
      SCOPED_TRACE(cat("variant ", variant, " depth ", depth));
      const Dataset d = make_task(
          {{"task", cat("s_niah_", variant)}, {"seq_len", 1024}, {"depth", depth}, {"path", path}}, 20, fresh_seed(),
          false);
      check_niah(d, variant, depth);
      // The haystack is a window of the text.
      const std::string s(d.inputs.begin(), d.inputs.begin() + d.len);
      EXPECT_NE(text.find(s.substr(0, 40)), std::string::npos);
    }
  EXPECT_THROW(make_task({{"task", "s_niah_2"}, {"path", dir.file("missing.txt")}}, 1, 0, false), gdn::Error);
  EXPECT_THROW(make_task({{"task", "s_niah_2"}, {"seq_len", 30000}, {"path", path}}, 1, 0, false), gdn::Error);
}

// Every task: deterministic for a seed, different for another seed or split, valid.
TEST(Tasks, DeterministicPerSeed) {
  test::TempDir dir("gdn_test_tasks");
  const std::string path = dir.file("text.txt");
  {
    std::ofstream f(path);
    for (int i = 0; i < 400; ++i) f << "Sentence number " << i << " of a small corpus. ";
  }
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(cat("seed ", seed));
  for (const auto& name : task_names()) {
    if (name == "mqar" || name == "text") continue;
    SCOPED_TRACE(name);
    json spec = {{"task", name}};
    if (name.rfind("s_niah_", 0) == 0) spec["path"] = path;
    const Dataset a = make_task(spec, 8, seed, false), b = make_task(spec, 8, seed, false);
    a.validate(name);
    EXPECT_EQ(a.inputs, b.inputs);
    EXPECT_EQ(a.labels, b.labels);
    EXPECT_NE(make_task(spec, 8, seed + 1, false).inputs, a.inputs);
    EXPECT_NE(make_task(spec, 8, seed, true).inputs, a.inputs);
  }
}

TEST(Tasks, BadFieldsThrow) {
  const std::vector<json> bad = {
      {{"task", "mad_in_context_recall"}, {"num_kv_pairs", 4}},
      {{"task", "mad_in_context_recall"}, {"seq_len", 127}},
      {{"task", "mad_in_context_recall"}, {"seq_len", "128"}},
      {{"task", "mad_in_context_recall"}, {"vocab_size", 1}},
      {{"task", "mad_in_context_recall"}, {"k_motif_size", 2}},
      {{"task", "mad_noisy_in_context_recall"}, {"frac_noise", 1.0}},
      {{"task", "mad_noisy_in_context_recall"}, {"noise_vocab_size", 0}},
      {{"task", "mad_noisy_in_context_recall"}, {"noise_vocab_size", -1}},
      {{"task", "mad_fuzzy_in_context_recall"}, {"seq_len", 12}},
      {{"task", "mad_fuzzy_in_context_recall"}, {"k_motif_size", 8}},
      {{"task", "mad_fuzzy_in_context_recall"}, {"v_motif_size", 0}},
      {{"task", "mad_selective_copying"}, {"num_tokens_to_copy", 128}},
      {{"task", "mad_selective_copying"}, {"vocab_size", 2}},
      {{"task", "mad_selective_copying"}, {"frac_noise", 0.1}},
      {{"task", "mad_compression"}, {"seq_len", 1}},
      {{"task", "mad_compression"}, {"frac_noise", 0.5}},
      {{"task", "mad_memorization"}, {"seq_len", 31}},
      {{"task", "mad_memorization"}, {"vocab_size", 2}},
      {{"task", "mad_memorization"}, {"num_tokens_to_copy", 2}},
      {{"task", "s_niah_1"}, {"depth", 1.5}},
      {{"task", "s_niah_1"}, {"seq_len", 100}},
      {{"task", "s_niah_1"}, {"variant", 2}},
      {{"task", "s_niah_4"}},
  };
  for (const auto& spec : bad) EXPECT_THROW(make_task(spec, 2, 0, false), gdn::Error) << spec.dump();
}

}  // namespace
