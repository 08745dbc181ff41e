// Inference: checkpoints of three layouts loaded into one model, prefill with the
// chunkwise form, and constant-memory decode that holds per layer only the short-conv
// state, the recurrent state [HV, K, V] and, for attention layers, the KV cache (a
// window of it for sliding-window attention).
//
// Layouts (Model::load detects them):
//   gdn         a checkpoint of `gdn train` (one .safetensors file with its model config in
//               the metadata), or a directory with gdn's config.json + model.safetensors
//   fla         FLA's GatedDeltaNetForCausalLM (config.json model_type "gated_deltanet"),
//               its hybrid attention layers included (the `attn` config)
//   qwen3_next  transformers' Qwen3NextForCausalLM (model_type "qwen3_next") with a dense
//               MLP; MoE layers are refused
// Weights may be fp32, bf16 or fp16 on disk, in one model.safetensors or sharded with
// model.safetensors.index.json. The layers are the training layers of gdn::nn.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gdn/nn/param.h"
#include "gdn/ops.h"

namespace gdn::infer {

enum class Layout { gdn, fla, qwen3_next };
const char* layout_name(Layout l);

// One architecture description for every layout: what the forward needs, nothing else.
struct Config {
  Layout layout = Layout::gdn;
  int vocab = 0, d_model = 0;
  double norm_eps = 1e-6;
  bool tie_embeddings = false;
  int mlp_hidden = 0;                  // SwiGLU hidden size; 0: no MLP
  int bos_token = -1, eos_token = -1;  // -1: none
  // Per layer: attention (with window, 0 = full) or gated delta rule.
  std::vector<bool> attention;
  std::vector<int> window;
  // Gated DeltaNet layers (FLA names: num_heads, num_v_heads, head_dim, head_dim * expand_v).
  int heads = 0, v_heads = 0, head_k = 0, head_v = 0, conv_size = 4;
  bool allow_neg_eigval = false;
  // Attention layers. Qwen3-Next adds RMSNorm on q and k per head, a sigmoid output gate
  // and RoPE over the first rotary_dim dims of each head.
  int attn_heads = 0, attn_kv_heads = 0, attn_head_dim = 0, rotary_dim = 0;
  double rope_theta = 10000.0;
  bool attn_qk_norm = false, attn_out_gate = false;

  int layers() const { return int(attention.size()); }
  void validate() const;  // throws gdn::Error naming the field
};

// The decode state of one sequence. Its size does not grow with the context, except for
// the KV cache of full-attention layers.
struct State {
  struct Layer {
    std::vector<float> conv_q, conv_k, conv_v;  // the last conv_size - 1 inputs [W-1, C]
    std::vector<float> recurrent;               // [HV, K, V]
    std::vector<float> keys, values;            // [n, KVH, Dh] after RoPE, n <= cached span
    int64_t cache_start = 0;                    // position of keys[0]
  };
  int64_t position = 0;  // tokens consumed so far
  std::vector<Layer> layers;
  size_t bytes() const;
};

class Model {
 public:
  // `path`: a model directory (config.json + weights) or a gdn checkpoint file.
  static Model load(const std::string& path);
  // Random weights with the initialisation of gdn::nn (for benchmarks and tests).
  static Model random(const Config& cfg, uint64_t seed);

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const Config& config() const;
  size_t num_params() const;
  State new_state() const;

  // Feeds `n` tokens after those already in `state` and updates it. `prefill_form` is the
  // op's form for n > 1 (chunk by default); a single token always takes the recurrent
  // step. Writes the logits of the last token into `last_logits` [vocab] when given, and
  // those of every token into `all_logits` [n, vocab] when given. Without all_logits a
  // long prompt runs in pieces of 4096 tokens, so that prefill memory stays bounded.
  // A model serves one forward at a time (its layers hold scratch buffers).
  void forward(State& state, const int32_t* ids, int n, float* last_logits, float* all_logits = nullptr,
               Form prefill_form = Form::chunk);

  struct Impl;

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Sampling from logits: temperature <= 0 is greedy; top_k <= 0 and top_p >= 1 disable
// those filters.
struct SamplerOptions {
  double temperature = 0.8;
  int top_k = 40;
  double top_p = 0.95;
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplerOptions opt);
  int32_t sample(const float* logits, int vocab);

 private:
  SamplerOptions opt_;
  nn::Rng rng_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

// Text <-> token ids. Byte-level for gdn's models; SentencePiece for a model directory
// with tokenizer.model (when gdn is built with libsentencepiece); otherwise none (ids only).
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  // Text of one token as it continues the stream (bytes may be partial UTF-8).
  virtual std::string decode(int32_t id) const = 0;
};
// Whether this build reads SentencePiece models (libsentencepiece was found).
bool have_sentencepiece();
// Null when the model has no tokenizer gdn can use (then only token ids work).
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& model_path, const Config& cfg);

}  // namespace gdn::infer
