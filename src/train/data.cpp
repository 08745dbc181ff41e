#include <algorithm>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "gdn/common.h"
#include "gdn/nn/loss.h"
#include "gdn/safetensors.h"
#include "gdn/train/data.h"
#include "io/json_fields.h"

namespace gdn::train {

int64_t Dataset::labelled() const {
  int64_t n_lab = 0;
  for (int32_t l : labels) n_lab += l != nn::kIgnoreIndex;
  return n_lab;
}

int Dataset::label_end(int64_t i) const {
  const int32_t* lab = label_row(i);
  int end = len;
  while (end > 0 && lab[end - 1] == nn::kIgnoreIndex) --end;
  return end;
}

Dataset concat_padded(const std::vector<Dataset>& parts, int len) {
  Dataset d;
  d.len = len;
  for (const Dataset& p : parts) {
    GDN_CHECK(p.len <= len, "concat_padded: a part's rows hold ", p.len, " tokens, more than ", len);
    d.n += p.n;
    d.vocab = std::max(d.vocab, p.vocab);
  }
  d.inputs.assign(size_t(d.n) * len, 0);
  d.labels.assign(d.inputs.size(), nn::kIgnoreIndex);
  int64_t row = 0;
  for (const Dataset& p : parts)
    for (int64_t i = 0; i < p.n; ++i, ++row) {
      std::copy_n(p.input_row(i), p.len, d.inputs.data() + row * len);
      std::copy_n(p.label_row(i), p.len, d.labels.data() + row * len);
    }
  return d;
}

void Dataset::validate(const std::string& what) const {
  GDN_CHECK(n > 0 && len > 0, what, ": empty (", n, " sequences of ", len, " tokens)");
  GDN_CHECK(inputs.size() == size_t(n) * len && labels.size() == inputs.size(), what, ": inputs/labels hold ",
            inputs.size(), "/", labels.size(), " values, expected ", n, " x ", len);
  for (size_t i = 0; i < inputs.size(); ++i) {
    GDN_CHECK(inputs[i] >= 0 && inputs[i] < vocab, what, ": input id ", inputs[i], " at sequence ", i / len,
              " position ", i % len, " is outside [0, ", vocab, ")");
    GDN_CHECK(labels[i] == nn::kIgnoreIndex || (labels[i] >= 0 && labels[i] < vocab), what, ": label ", labels[i],
              " at sequence ", i / len, " position ", i % len, " is outside [0, ", vocab, ") and not -100");
  }
  GDN_CHECK(labelled() > 0, what, ": no position carries a label");
}

Dataset load_token_file(const std::string& path) {
  const SafeTensorsFile f = SafeTensorsFile::load(path);
  for (const char* name : {"inputs", "labels"})
    GDN_CHECK(f.has(name), path, ": tensor \"", name, "\" is missing (expected int32 inputs and labels [N, L])");
  const auto& shape = f.info("inputs").shape;
  GDN_CHECK(shape.size() == 2, path, ": inputs must be [N, L], got ", shape_str(shape));
  GDN_CHECK(f.info("labels").shape == shape, path, ": labels ", shape_str(f.info("labels").shape),
            " must have the shape of inputs ", shape_str(shape));
  Dataset d;
  d.n = shape[0];
  d.len = int(shape[1]);
  d.inputs = f.get_i32("inputs");
  d.labels = f.get_i32("labels");
  int32_t mx = 0;
  for (int32_t x : d.inputs) mx = std::max(mx, x);
  for (int32_t x : d.labels) mx = std::max(mx, x);
  d.vocab = mx + 1;
  auto it = f.metadata().find("vocab_size");
  if (it != f.metadata().end()) {
    try {
      d.vocab = std::stoi(it->second);
    } catch (const std::exception&) {
      fail(path, ": metadata vocab_size \"", it->second, "\" is not an integer");
    }
  }
  d.validate(path);
  return d;
}

void save_token_file(const Dataset& d, const std::string& path) {
  SafeTensorsWriter w;
  w.add_i32("inputs", {d.n, d.len}, d.inputs.data());
  w.add_i32("labels", {d.n, d.len}, d.labels.data());
  w.set_metadata("vocab_size", std::to_string(d.vocab));
  w.write(path);
}

std::vector<std::string> task_names() {
  return {"mqar",
          "text",
          "mad_in_context_recall",
          "mad_noisy_in_context_recall",
          "mad_fuzzy_in_context_recall",
          "mad_selective_copying",
          "mad_compression",
          "mad_memorization",
          "s_niah_1",
          "s_niah_2",
          "s_niah_3"};
}

Dataset make_byte_lm(const std::string& path, int len, int64_t max_sequences, double eval_fraction, bool eval_split) {
  GDN_CHECK(len > 0, "text task: seq_len must be > 0, got ", len);
  GDN_CHECK(eval_fraction > 0 && eval_fraction < 1, "text task: eval_fraction must be in (0, 1), got ", eval_fraction);
  std::ifstream f(path, std::ios::binary);
  GDN_CHECK(f.good(), "text task: cannot open ", path);
  const std::string bytes((std::istreambuf_iterator<char>(f)), {});
  const size_t split = size_t(double(bytes.size()) * (1 - eval_fraction));
  const size_t begin = eval_split ? split : 0, end = eval_split ? bytes.size() : split;
  const int64_t available = end > begin ? int64_t((end - begin - 1) / size_t(len)) : 0;
  GDN_CHECK(available > 0, "text task: ", path, " (", bytes.size(), " bytes) is too short for one ",
            eval_split ? "evaluation" : "training", " sequence of ", len, " bytes");
  Dataset d;
  d.n = std::min(available, max_sequences);
  d.len = len;
  d.vocab = 256;
  d.inputs.resize(size_t(d.n) * len);
  d.labels.resize(d.inputs.size());
  for (int64_t i = 0; i < d.n; ++i)
    for (int t = 0; t < len; ++t) {
      const size_t at = begin + size_t(i) * len + size_t(t);
      d.inputs[size_t(i) * len + t] = uint8_t(bytes[at]);
      d.labels[size_t(i) * len + t] = uint8_t(bytes[at + 1]);
    }
  return d;
}

Dataset make_task(const nlohmann::json& spec, int64_t num_examples, uint64_t seed, bool eval_split) {
  GDN_CHECK(spec.is_object() && spec.contains("task"), "data config: expected {\"task\": NAME, ...}, got ",
            spec.dump());
  const std::string task = spec["task"].get<std::string>();
  // Independent streams for the two splits, as Zoology draws train and test with two seeds.
  const uint64_t s = seed * 2 + (eval_split ? 1 : 0) + 0x5eed;
  const JsonFields fields(spec, "task " + task, {"task", "train_examples", "eval_examples", "seed"});
  if (task == "mqar") {
    fields.allow_only({"vocab_size", "seq_len", "num_kv_pairs", "power_a", "random_non_queries", "train_mix"});
    MqarConfig c;
    fields.read("vocab_size", c.vocab_size);
    fields.read("seq_len", c.seq_len);
    fields.read("num_kv_pairs", c.num_kv_pairs);
    fields.read("power_a", c.power_a);
    fields.read("random_non_queries", c.random_non_queries);
    if (eval_split || !spec.contains("train_mix")) return make_mqar(c, num_examples, s);
    // Zoology trains on a mixture of settings (e.g. 100k of (64, 4) and 20k each of (128, 8),
    // (256, 16), (256, 32), (256, 64)) and tests on one; the evaluation split is seq_len /
    // num_kv_pairs above.
    const auto& mix = spec["train_mix"];
    GDN_CHECK(mix.is_array() && !mix.empty(), "task mqar: train_mix must be a non-empty list of ",
              "{\"seq_len\", \"num_kv_pairs\", \"examples\"}, got ", mix.dump());
    GDN_CHECK(!spec.contains("train_examples"), "task mqar: train_mix gives each part's examples; ",
              "drop train_examples");
    std::vector<Dataset> parts;
    int len = c.seq_len;
    for (size_t i = 0; i < mix.size(); ++i) {
      const JsonFields part(mix[i], cat("task mqar: train_mix[", i, "]"));
      part.allow_only({"seq_len", "num_kv_pairs", "examples"});
      GDN_CHECK(mix[i].contains("examples"), "task mqar: train_mix[", i, "] needs \"examples\"");
      MqarConfig pc = c;
      int64_t examples = 0;
      part.read("seq_len", pc.seq_len);
      part.read("num_kv_pairs", pc.num_kv_pairs);
      part.read("examples", examples);
      GDN_CHECK(examples > 0, "task mqar: train_mix[", i, "] examples must be > 0, got ", examples);
      parts.push_back(make_mqar(pc, examples, s + 0x100 * (i + 1)));
      len = std::max(len, pc.seq_len);
    }
    return concat_padded(parts, len);
  }
  if (task == "text") {
    fields.allow_only({"path", "seq_len", "eval_fraction"});
    std::string path;
    int len = 512;
    double eval_fraction = 0.05;
    fields.read("path", path);
    fields.read("seq_len", len);
    fields.read("eval_fraction", eval_fraction);
    return make_byte_lm(path, len, num_examples, eval_fraction, eval_split);
  }
  if (task == "mad_in_context_recall" || task == "mad_noisy_in_context_recall" ||
      task == "mad_fuzzy_in_context_recall") {
    fields.allow_only(
        {"vocab_size", "seq_len", "multi_query", "noise_vocab_size", "frac_noise", "k_motif_size", "v_motif_size"});
    MadRecallConfig c;  // in-context-recall.yml
    if (task == "mad_noisy_in_context_recall") {
      c.vocab_size = 32;  // noisy-in-context-recall.yml
      c.noise_vocab_size = 16;
      c.frac_noise = 0.2;
    }
    if (task == "mad_fuzzy_in_context_recall") c.k_motif_size = c.v_motif_size = 3;  // fuzzy-in-context-recall.yml
    fields.read("vocab_size", c.vocab_size);
    fields.read("seq_len", c.seq_len);
    fields.read("multi_query", c.multi_query);
    fields.read("noise_vocab_size", c.noise_vocab_size);
    fields.read("frac_noise", c.frac_noise);
    fields.read("k_motif_size", c.k_motif_size);
    fields.read("v_motif_size", c.v_motif_size);
    return task == "mad_fuzzy_in_context_recall" ? make_mad_fuzzy_in_context_recall(c, num_examples, s, eval_split)
                                                 : make_mad_in_context_recall(c, num_examples, s, eval_split);
  }
  if (task == "mad_selective_copying") {
    fields.allow_only({"vocab_size", "seq_len", "num_tokens_to_copy"});
    MadSelectiveCopyConfig c;
    fields.read("vocab_size", c.vocab_size);
    fields.read("seq_len", c.seq_len);
    fields.read("num_tokens_to_copy", c.num_tokens_to_copy);
    return make_mad_selective_copying(c, num_examples, s);
  }
  if (task == "mad_compression") {
    fields.allow_only({"vocab_size", "seq_len", "noise_vocab_size", "frac_noise"});
    MadCompressionConfig c;
    fields.read("vocab_size", c.vocab_size);
    fields.read("seq_len", c.seq_len);
    fields.read("noise_vocab_size", c.noise_vocab_size);
    fields.read("frac_noise", c.frac_noise);
    return make_mad_compression(c, num_examples, s);
  }
  if (task == "mad_memorization") {
    fields.allow_only({"vocab_size", "seq_len", "noise_vocab_size", "frac_noise", "kv_map_seed"});
    MadMemorizationConfig c;
    fields.read("vocab_size", c.vocab_size);
    fields.read("seq_len", c.seq_len);
    fields.read("noise_vocab_size", c.noise_vocab_size);
    fields.read("frac_noise", c.frac_noise);
    fields.read("kv_map_seed", c.kv_map_seed);  // the map is shared by both splits
    return make_mad_memorization(c, num_examples, s);
  }
  if (task == "s_niah_1" || task == "s_niah_2" || task == "s_niah_3") {
    fields.allow_only({"seq_len", "depth", "path"});
    NiahConfig c;
    c.variant = task.back() - '0';
    fields.read("seq_len", c.seq_len);
    fields.read("depth", c.depth);
    fields.read("path", c.path);
    return make_niah(c, num_examples, s);
  }
  std::string known;
  for (const auto& n : task_names()) known += (known.empty() ? "" : ", ") + n;
  fail("data config: unknown task \"", task, "\" (known: ", known, ")");
}

}  // namespace gdn::train
