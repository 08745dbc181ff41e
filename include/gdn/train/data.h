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
