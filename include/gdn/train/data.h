// Token datasets for training and evaluation: inputs and labels [N, L] (int32; label -100
// is ignored; the label at position t is the target of the prediction made at t).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "gdn/nn/param.h"

namespace gdn::train {

struct Dataset {
  int64_t n = 0;  // sequences
  int len = 0;    // tokens per sequence
  int vocab = 0;  // every input id and label is below this
  std::vector<int32_t> inputs, labels;

  const int32_t* input_row(int64_t i) const { return inputs.data() + i * len; }
  const int32_t* label_row(int64_t i) const { return labels.data() + i * len; }
  int64_t labelled() const;  // positions with a label
  // One past row i's last labelled position (0 without labels): a causal model's loss on
  // the row does not depend on the positions from there on.
  int label_end(int64_t i) const;
  // Throws gdn::Error naming `what` if a size, input id or label is out of range.
  void validate(const std::string& what) const;
};

// MQAR exactly as Zoology's multiquery_ar: keys from [1, vocab/2), values from
// [vocab/2, vocab), distinct within an example; context k1 v1 ... k_n v_n; each key is
// queried once at a gap drawn without replacement with p(i) ~ i^(a-1) (power_a = a);
// the value is the label at the query position; the other positions hold random tokens.
struct MqarConfig {
  int vocab_size = 8192;
  int seq_len = 64;
  int num_kv_pairs = 4;
  double power_a = 0.01;
  bool random_non_queries = true;
};
Dataset make_mqar(const MqarConfig& cfg, int64_t num_examples, uint64_t seed);

// The rows of `parts` one after another, each right-padded to `len` with input 0 and label
// -100 (Zoology's training mixtures of several (seq_len, num_kv_pairs) settings).
Dataset concat_padded(const std::vector<Dataset>& parts, int len);

// The six MAD tasks exactly as Poli et al.'s mad-lab generates them (mad/data/instances.py;
// benchmark baselines from configs/tasks/*.yml; MADConfig in mad/configs.py). Tokens: keys,
// values and plain tokens first, then the noise range, then the special tokens at the top.
// The recall tasks label every position with the next token in the training split (MAD's
// is_training: targets = inputs[1:]) and only the recalled values in the evaluation split.
struct MadRecallConfig {
  int vocab_size = 16;         // in-context-recall.yml: vocab_size 16
  int seq_len = 128;           // seq_len 128
  bool multi_query = true;     // multi_query True: every repeated key is probed, no copy prefix
  int noise_vocab_size = 0;    // noisy-in-context-recall.yml: 16 (taken from vocab_size 32)
  double frac_noise = 0;       // noisy: 0.2, the chance that a key-value slot holds noise
  int k_motif_size = 1;        // fuzzy-in-context-recall.yml: 3 (keys of 1..3 tokens)
  int v_motif_size = 1;        // fuzzy: 3 (values of 1..3 tokens)
};
// In-context recall and noisy in-context recall (generate_in_context_recall_instance):
// seq_len/2 - 1 slots of key value (or, with probability frac_noise, two noise tokens), keys
// from [0, ns/2), values from [ns/2, ns), ns = vocab - noise (- 1 for the copy prefix
// without multi_query), a key keeps its value within a sequence; then a probe of a key
// already shown. Rows hold seq_len - 1 tokens with multi_query (MAD shifts seq_len tokens),
// seq_len without.
Dataset make_mad_in_context_recall(const MadRecallConfig& cfg, int64_t num_examples, uint64_t seed, bool eval_split);
// Fuzzy in-context recall (generate_fuzzy_in_context_recall_instance): keys and values are
// motifs of 1..k (1..v) distinct tokens; evaluation keys have exactly k tokens; one probe
// pair is placed at a random point and queried at the end; left-padded to seq_len with
// the pad token vocab - 2 (vocab - 1 with multi_query).
Dataset make_mad_fuzzy_in_context_recall(const MadRecallConfig& cfg, int64_t num_examples, uint64_t seed,
                                         bool eval_split);

// Selective copying (generate_copying_instance, selective=True; selective-copying.yml):
// num_tokens_to_copy tokens of [0, vocab - 2) with seq_len - 2 n - 1 blanks (vocab - 2)
// inserted before uniformly drawn token positions, the copy token (vocab - 1), then n
// blanks labelled with the copied tokens in order.
struct MadSelectiveCopyConfig {
  int vocab_size = 16;
  int seq_len = 256;
  int num_tokens_to_copy = 16;
};
Dataset make_mad_selective_copying(const MadSelectiveCopyConfig& cfg, int64_t num_examples, uint64_t seed);

// Compression (generate_compression_instance; compression.yml): seq_len - 1 tokens of
// [0, vocab - 1 - noise) then the compression token vocab - 1; the label at t is the input
// at t (MAD reconstructs the whole sequence from the last position's output with its
// AutoEncoder backbone, mad/model/auto_encoder.py: gdn's model head "autoencoder"; a causal
// LM would copy). With frac_noise, inputs are replaced by noise tokens (MAD keeps them as
// targets too).
struct MadCompressionConfig {
  int vocab_size = 16;
  int seq_len = 32;
  int noise_vocab_size = 0;
  double frac_noise = 0;
};
Dataset make_mad_compression(const MadCompressionConfig& cfg, int64_t num_examples, uint64_t seed);

// Memorization (generate_memorization_instance; memorization.yml): a fixed key -> value map
// drawn once from kv_map_seed (MAD: the config seed 12345) pairs keys [0, ns/2) with
// distinct values [ns/2, ns), ns = vocab - 1 - noise; each sequence is seq_len/2 pairs
// "key insert" (insert = vocab - 1), the value labelled at the insert token.
struct MadMemorizationConfig {
  int vocab_size = 256;
  int seq_len = 32;
  int noise_vocab_size = 0;
  double frac_noise = 0;
  uint64_t kv_map_seed = 12345;
};
Dataset make_mad_memorization(const MadMemorizationConfig& cfg, int64_t num_examples, uint64_t seed);

// S-NIAH in RULER's form, byte-level (vocab 256): a needle "One of the special magic
// numbers for KEY is: VALUE." hidden in a haystack at byte offset round(depth * haystack
// bytes), then the question, then the value, whose bytes alone are labelled. Haystack 1:
// a repeated filler sentence; 2: a random window of a text file (data/english.txt from
// scripts/make_corpus.sh); 3: as 2 with a UUID value instead of a 7-digit number. KEY is a
// random 8-letter word. seq_len is the row length; depth < 0 draws it per example.
struct NiahConfig {
  int variant = 1;
  int seq_len = 1024;
  double depth = -1;
  std::string path = "data/english.txt";
};
Dataset make_niah(const NiahConfig& cfg, int64_t num_examples, uint64_t seed);
// The parts of a needle sequence, shared with the tests.
std::string niah_needle(const std::string& key, const std::string& value);
std::string niah_question(const std::string& key);

// Byte-level language modelling on a text file: non-overlapping windows of len + 1 bytes,
// every position labelled with the next byte (vocab 256). The last eval_fraction of the
// file is the evaluation split.
Dataset make_byte_lm(const std::string& path, int len, int64_t max_sequences, double eval_fraction, bool eval_split);

// Sequences of a safetensors file with int32 (or int64) tensors `inputs` and `labels` [N, L].
Dataset load_token_file(const std::string& path);
void save_token_file(const Dataset& d, const std::string& path);

// A synthetic task from JSON: {"task": "mqar", "seq_len": 64, "num_kv_pairs": 4, ...}.
// Unknown tasks and fields are errors. The evaluation split uses an independent stream.
Dataset make_task(const nlohmann::json& spec, int64_t num_examples, uint64_t seed, bool eval_split);
std::vector<std::string> task_names();

}  // namespace gdn::train
