// The six MAD tasks of Poli et al. as mad-lab generates them (mad/data/instances.py). Each
// function builds MAD's unshifted sequence and targets, then cuts rows the way MAD does.
#include <algorithm>
#include <map>
#include <numeric>
#include <set>

#include "gdn/common.h"
#include "gdn/nn/loss.h"
#include "gdn/train/data.h"

namespace gdn::train {

namespace {
constexpr int32_t kIgnore = nn::kIgnoreIndex;

Dataset empty_dataset(int64_t n, int len, int vocab) {
  Dataset d;
  d.n = n;
  d.len = len;
  d.vocab = vocab;
  d.inputs.assign(size_t(n) * len, 0);
  d.labels.assign(size_t(n) * len, kIgnore);
  return d;
}

// `size` distinct tokens of [lo, lo + count) in random order: a uniform draw from MAD's
// generate_vocab_permutations(vocab, size) list.
std::vector<int32_t> motif(nn::Rng& rng, int32_t lo, int count, int size) {
  std::vector<int32_t> pool(static_cast<size_t>(count));
  std::iota(pool.begin(), pool.end(), lo);
  for (int i = 0; i < size; ++i) std::swap(pool[i], pool[i + rng.below(uint64_t(count - i))]);
  pool.resize(size_t(size));
  return pool;
}

void check_noise(const char* task, int noise_vocab_size, double frac_noise) {
  GDN_CHECK(noise_vocab_size >= 0, task, ": noise_vocab_size must be >= 0, got ", noise_vocab_size);
  GDN_CHECK(frac_noise >= 0 && frac_noise < 1, task, ": frac_noise must be in [0, 1), got ", frac_noise);
  GDN_CHECK(frac_noise == 0 || noise_vocab_size > 0, task, ": frac_noise > 0 needs noise_vocab_size > 0");
}

// Row e of `d` from MAD's unshifted sequence and targets: inputs seq[:-1] and labels
// targets[1:] (evaluation) or seq[1:] (training), as MAD's is_training does.
void store_shifted(Dataset& d, int64_t e, const std::vector<int32_t>& seq, const std::vector<int32_t>& targets,
                   bool eval_split) {
  GDN_CHECK(seq.size() == size_t(d.len) + 1 && targets.size() == seq.size(), "mad: internal length mismatch (",
            seq.size(), " tokens for rows of ", d.len, ")");
  const auto& next = eval_split ? targets : seq;
  std::copy(seq.begin(), seq.end() - 1, d.inputs.begin() + e * d.len);
  std::copy(next.begin() + 1, next.end(), d.labels.begin() + e * d.len);
}
}  // namespace

Dataset make_mad_in_context_recall(const MadRecallConfig& c, int64_t num_examples, uint64_t seed, bool eval_split) {
  const char* task = "mad in-context recall";
  check_noise(task, c.noise_vocab_size, c.frac_noise);
  GDN_CHECK(c.seq_len >= 4 && c.seq_len % 2 == 0, task, ": seq_len must be even and >= 4, got ", c.seq_len);
  GDN_CHECK(c.k_motif_size == 1 && c.v_motif_size == 1, task, ": motifs longer than 1 token are the fuzzy task");
  // ns plain tokens: keys [0, ns/2), values [ns/2, ns); then noise; the copy prefix on top.
  const int ns = c.vocab_size - (c.multi_query ? 0 : 1) - c.noise_vocab_size;
  GDN_CHECK(ns >= 2, task, ": vocab_size ", c.vocab_size, " leaves ", ns, " key/value tokens (need >= 2)");
  const int num_keys = ns / 2, copy_prefix = c.vocab_size - 1;
  const int slots = c.seq_len / 2 - 1;  // key-value slots before the final probe
  nn::Rng rng(seed);
  Dataset d = empty_dataset(num_examples, c.multi_query ? c.seq_len - 1 : c.seq_len, c.vocab_size);
  std::vector<int32_t> seq, targets, value_of;
  std::vector<int32_t> shown;  // keys presented so far, in order of first appearance
  for (int64_t e = 0; e < num_examples; ++e) {
    seq.clear();
    targets.clear();
    shown.clear();
    value_of.assign(size_t(num_keys), -1);
    // One slot is never noise so that a key can be probed. MAD draws it from seq_len/2
    // slots, one more than it fills, and then fails when every slot became noise.
    const int not_noise = int(rng.below(uint64_t(slots)));
    for (int i = 0; i < slots; ++i) {
      if (c.frac_noise > 0 && i != not_noise && rng.uniform() < c.frac_noise) {
        for (int j = 0; j < 2; ++j) {
          seq.push_back(ns + int32_t(rng.below(uint64_t(c.noise_vocab_size))));
          targets.push_back(kIgnore);
        }
        continue;
      }
      const int32_t k = int32_t(rng.below(uint64_t(num_keys)));
      const bool seen = value_of[k] >= 0;
      if (!seen) {
        value_of[k] = num_keys + int32_t(rng.below(uint64_t(ns - num_keys)));
        shown.push_back(k);
      }
      seq.insert(seq.end(), {k, value_of[k]});
      targets.insert(targets.end(), {kIgnore, seen && c.multi_query ? value_of[k] : kIgnore});
    }
    const int32_t probe = shown[rng.below(shown.size())];
    if (!c.multi_query) {
      seq.push_back(copy_prefix);
      targets.push_back(kIgnore);
    }
    seq.insert(seq.end(), {probe, value_of[probe]});
    targets.insert(targets.end(), {kIgnore, value_of[probe]});
    store_shifted(d, e, seq, targets, eval_split);
  }
  return d;
}

Dataset make_mad_fuzzy_in_context_recall(const MadRecallConfig& c, int64_t num_examples, uint64_t seed,
                                         bool eval_split) {
  const char* task = "mad fuzzy in-context recall";
  check_noise(task, c.noise_vocab_size, c.frac_noise);
  GDN_CHECK(c.k_motif_size >= 1 && c.v_motif_size >= 1, task, ": k_motif_size and v_motif_size must be >= 1");
  const int max_pair = c.k_motif_size + c.v_motif_size;
  GDN_CHECK(c.seq_len >= 2 * max_pair + 2, task, ": seq_len ", c.seq_len, " is too short for motifs of ",
            c.k_motif_size, " + ", c.v_motif_size, " tokens");
  // ns plain tokens (keys [0, ns/2), values [ns/2, ns)), noise, then pad and copy prefix.
  const int ns = c.vocab_size - (c.multi_query ? 1 : 2) - c.noise_vocab_size;
  const int num_keys = ns / 2, num_values = ns - ns / 2;
  GDN_CHECK(num_keys >= c.k_motif_size && num_values >= c.v_motif_size, task, ": vocab_size ", c.vocab_size,
            " leaves ", num_keys, " key and ", num_values, " value tokens, fewer than the motif sizes");
  const int32_t pad = c.multi_query ? c.vocab_size - 1 : c.vocab_size - 2, copy_prefix = c.vocab_size - 1;
  nn::Rng rng(seed);
  Dataset d = empty_dataset(num_examples, c.seq_len, c.vocab_size);
  // Training keys have 1..k tokens, evaluation keys exactly k (MAD prompts at the largest size).
  auto key_size = [&] { return eval_split ? c.k_motif_size : 1 + int(rng.below(uint64_t(c.k_motif_size))); };
  auto value_size = [&] { return 1 + int(rng.below(uint64_t(c.v_motif_size))); };
  std::vector<int32_t> seq, targets;
  for (int64_t e = 0; e < num_examples; ++e) {
    seq.clear();
    targets.clear();
    const auto k_probe = motif(rng, 0, num_keys, key_size());
    const auto v_probe = motif(rng, num_keys, num_values, value_size());
    const int probe_pair = int(k_probe.size() + v_probe.size());
    const size_t probe_at = rng.below(uint64_t(c.seq_len - 2 * probe_pair));
    const size_t end = size_t(c.seq_len - probe_pair - max_pair);
    bool probe_added = false;
    std::map<std::vector<int32_t>, std::vector<int32_t>> value_of;  // tuples of different sizes differ
    std::set<std::vector<int32_t>> shown;
    auto append = [&](const std::vector<int32_t>& tokens, bool scored) {
      seq.insert(seq.end(), tokens.begin(), tokens.end());
      for (int32_t t : tokens) targets.push_back(scored ? t : kIgnore);
    };
    while (seq.size() < end) {
      const int ks = key_size(), vs = value_size();
      // MAD places the probe pair once the sequence reaches probe_at, and can run out of
      // room first (then the final query asks for an unseen key): here it is placed no
      // later than the last slot.
      if (!probe_added && (seq.size() >= probe_at || seq.size() + size_t(max_pair) >= end)) {
        append(k_probe, false);
        append(v_probe, false);
        value_of[k_probe] = v_probe;
        shown.insert(k_probe);
        probe_added = true;
        continue;
      }
      if (c.frac_noise > 0 && rng.uniform() < c.frac_noise) {
        std::vector<int32_t> noise(size_t(ks + vs));
        for (auto& t : noise) t = ns + int32_t(rng.below(uint64_t(c.noise_vocab_size)));
        append(noise, false);
        continue;
      }
      const auto k = motif(rng, 0, num_keys, ks);
      std::vector<int32_t> v;
      if (k == k_probe) {
        v = v_probe;
        probe_added = true;
      } else {
        auto it = value_of.find(k);
        v = it != value_of.end() ? it->second : (value_of[k] = motif(rng, num_keys, num_values, vs));
      }
      append(k, false);
      append(v, shown.count(k) > 0 && c.multi_query);
      shown.insert(k);
    }
    if (!c.multi_query) append({copy_prefix}, false);
    append(k_probe, false);
    append(v_probe, true);
    // Left padding to seq_len + 1 tokens before the shift, as MAD does.
    const size_t n_pad = size_t(c.seq_len + 1) - seq.size();
    seq.insert(seq.begin(), n_pad, pad);
    targets.insert(targets.begin(), n_pad, kIgnore);
    store_shifted(d, e, seq, targets, eval_split);
  }
  return d;
}

Dataset make_mad_selective_copying(const MadSelectiveCopyConfig& c, int64_t num_examples, uint64_t seed) {
  const char* task = "mad selective copying";
  const int n = c.num_tokens_to_copy;
  GDN_CHECK(c.vocab_size >= 3, task, ": vocab_size must be >= 3 (tokens, blank, copy), got ", c.vocab_size);
  GDN_CHECK(n >= 1 && c.seq_len > 2 * n + 1, task, ": need 1 <= num_tokens_to_copy and seq_len > 2 * ",
            "num_tokens_to_copy + 1, got ", n, " and ", c.seq_len);
  const int32_t blank = c.vocab_size - 2, copy = c.vocab_size - 1;
  const int num_blanks = c.seq_len - 2 * n - 1;
  nn::Rng rng(seed);
  Dataset d = empty_dataset(num_examples, c.seq_len, c.vocab_size);
  std::vector<int> blanks_before(static_cast<size_t>(n));
  for (int64_t e = 0; e < num_examples; ++e) {
    int32_t* in = d.inputs.data() + e * c.seq_len;
    int32_t* lab = d.labels.data() + e * c.seq_len;
    std::vector<int32_t> to_copy(static_cast<size_t>(n));
    for (auto& t : to_copy) t = int32_t(rng.below(uint64_t(blank)));
    // numpy.insert at num_blanks indices drawn from [0, n): blanks go before token i.
    std::fill(blanks_before.begin(), blanks_before.end(), 0);
    for (int b = 0; b < num_blanks; ++b) ++blanks_before[rng.below(uint64_t(n))];
    int t = 0;
    for (int i = 0; i < n; ++i) {
      for (int b = 0; b < blanks_before[i]; ++b) in[t++] = blank;
      in[t++] = to_copy[i];
    }
    in[t++] = copy;
    for (int i = 0; i < n; ++i, ++t) {
      in[t] = blank;
      lab[t] = to_copy[i];
    }
  }
  return d;
}

Dataset make_mad_compression(const MadCompressionConfig& c, int64_t num_examples, uint64_t seed) {
  const char* task = "mad compression";
  check_noise(task, c.noise_vocab_size, c.frac_noise);
  GDN_CHECK(c.seq_len >= 2, task, ": seq_len must be >= 2, got ", c.seq_len);
  const int ns = c.vocab_size - 1 - c.noise_vocab_size;
  GDN_CHECK(ns >= 1, task, ": vocab_size ", c.vocab_size, " leaves no plain token");
  nn::Rng rng(seed);
  Dataset d = empty_dataset(num_examples, c.seq_len, c.vocab_size);
  for (int64_t e = 0; e < num_examples; ++e) {
    int32_t* in = d.inputs.data() + e * c.seq_len;
    for (int t = 0; t + 1 < c.seq_len; ++t) in[t] = int32_t(rng.below(uint64_t(ns)));
    in[c.seq_len - 1] = c.vocab_size - 1;  // the compression token
    if (c.frac_noise > 0)
      for (int t = 0; t + 1 < c.seq_len; ++t)
        if (rng.uniform() < c.frac_noise) in[t] = ns + int32_t(rng.below(uint64_t(c.noise_vocab_size)));
    std::copy(in, in + c.seq_len, d.labels.begin() + e * c.seq_len);
  }
  return d;
}

Dataset make_mad_memorization(const MadMemorizationConfig& c, int64_t num_examples, uint64_t seed) {
  const char* task = "mad memorization";
  check_noise(task, c.noise_vocab_size, c.frac_noise);
  GDN_CHECK(c.seq_len >= 2 && c.seq_len % 2 == 0, task, ": seq_len must be even and >= 2, got ", c.seq_len);
  const int ns = c.vocab_size - 1 - c.noise_vocab_size, num_keys = ns / 2;
  GDN_CHECK(num_keys >= 1, task, ": vocab_size ", c.vocab_size, " leaves no key token");
  const int32_t insert = c.vocab_size - 1;
  // The fixed map (MAD's generate_kv_map): shuffled keys zipped with shuffled values, i.e.
  // each key gets a distinct random value of [num_keys, ns).
  nn::Rng map_rng(c.kv_map_seed);
  const auto value_of = motif(map_rng, num_keys, ns - num_keys, num_keys);
  nn::Rng rng(seed);
  const int pairs = c.seq_len / 2;
  Dataset d = empty_dataset(num_examples, c.seq_len, c.vocab_size);
  for (int64_t e = 0; e < num_examples; ++e) {
    int32_t* in = d.inputs.data() + e * c.seq_len;
    int32_t* lab = d.labels.data() + e * c.seq_len;
    const int not_noise = int(rng.below(uint64_t(pairs)));
    for (int i = 0; i < pairs; ++i) {
      if (c.frac_noise > 0 && i != not_noise && rng.uniform() < c.frac_noise) {
        in[2 * i] = ns + int32_t(rng.below(uint64_t(c.noise_vocab_size)));
        in[2 * i + 1] = ns + int32_t(rng.below(uint64_t(c.noise_vocab_size)));
        continue;
      }
      const int32_t k = int32_t(rng.below(uint64_t(num_keys)));
      in[2 * i] = k;
      in[2 * i + 1] = insert;
      lab[2 * i + 1] = value_of[k];
    }
  }
  return d;
}

}  // namespace gdn::train
