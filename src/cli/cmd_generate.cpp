// gdn generate: prefill with the chunkwise form, then decode token by token from the
// constant-size state (conv + recurrent states, and the KV cache of attention layers).
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/command.h"
#include "cli/infer_util.h"
#include "cli/run_spec.h"
#include "gdn/common.h"
#include "gdn/infer.h"

namespace gdn::cli {
namespace {

struct GenerateArgs {
  std::string model, prompt, prompt_ids, form = "chunk";
  int max_tokens = 64, threads = 0;
  infer::SamplerOptions sampling;
  bool json = false, no_bos = false, ignore_eos = false;
};

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, ',')) {
    size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    while (used < item.size() && item[used] == ' ') ++used;
    GDN_CHECK(used == item.size() && !item.empty(), "--prompt-ids: \"", item, "\" is not an integer");
    ids.push_back(int32_t(v));
  }
  GDN_CHECK(!ids.empty(), "--prompt-ids: no ids");
  return ids;
}

void run_generate(const GenerateArgs& a) {
  set_threads(a.threads);
  GDN_CHECK(a.prompt.empty() != a.prompt_ids.empty(), "generate: give exactly one of --prompt and --prompt-ids");
  infer::Model model = infer::Model::load(a.model);
  const auto& cfg = model.config();
  const auto tokenizer = infer::make_tokenizer(a.model, cfg);
  std::vector<int32_t> prompt;
  if (!a.prompt.empty()) {
    GDN_CHECK(tokenizer, "generate: model ", a.model, " (", infer::layout_name(cfg.layout),
              ") has no tokenizer gdn can use; pass --prompt-ids");
    prompt = tokenizer->encode(a.prompt);
    // SentencePiece models (Llama's tokenizer, which FLA's checkpoints use) start with BOS.
    if (tokenizer->name() == "sentencepiece" && cfg.bos_token >= 0 && !a.no_bos)
      prompt.insert(prompt.begin(), cfg.bos_token);
    GDN_CHECK(!prompt.empty(), "generate: the prompt encodes to no tokens");
  } else {
    prompt = parse_ids(a.prompt_ids);
  }
  std::fprintf(stderr, "gdn generate: %s model, %zu parameters, %d layers, tokenizer %s, %zu prompt tokens\n",
               infer::layout_name(cfg.layout), model.num_params(), cfg.layers(),
               tokenizer ? tokenizer->name().c_str() : "none (ids)", prompt.size());

  auto emit = [&](int32_t id) {
    if (a.json) return;
    if (tokenizer)
      std::fputs(tokenizer->decode(id).c_str(), stdout);
    else
      std::printf(" %d", id);
    std::fflush(stdout);
  };

  infer::State state = model.new_state();
  std::vector<float> logits(size_t(cfg.vocab));
  const double t0 = now_s();
  model.forward(state, prompt.data(), int(prompt.size()), logits.data(), nullptr, parse_form(a.form));
  const double prefill_s = now_s() - t0;

  if (!a.json) {
    if (tokenizer)
      std::fputs(a.prompt.c_str(), stdout);
    else
      for (int32_t id : prompt) std::printf(" %d", id);
    std::fflush(stdout);
  }
  infer::Sampler sampler(a.sampling);
  std::vector<int32_t> out;
  const double t1 = now_s();
  for (int i = 0; i < a.max_tokens; ++i) {
    const int32_t id = sampler.sample(logits.data(), cfg.vocab);
    if (id == cfg.eos_token && !a.ignore_eos) break;
    out.push_back(id);
    emit(id);
    if (i + 1 < a.max_tokens) model.forward(state, &id, 1, logits.data());
  }
  const double decode_s = now_s() - t1;
  const double decode_tps = out.size() > 1 ? double(out.size() - 1) / decode_s : 0;
  if (!a.json) {
    std::printf("\n");
    std::fflush(stdout);
  }
  std::fprintf(stderr,
               "prefill %zu tokens in %.3f s (%.1f tokens/s); decode %zu tokens, %.1f tokens/s; "
               "state %.2f MiB, resident %.1f MiB\n",
               prompt.size(), prefill_s, prompt.size() / prefill_s, out.size(), decode_tps, state.bytes() / 1048576.0,
               rss_mib());
  if (a.json) {
    std::string text;
    if (tokenizer)
      for (int32_t id : out) text += tokenizer->decode(id);
    nlohmann::json j = {{"layout", infer::layout_name(cfg.layout)},
                        {"prompt_tokens", prompt.size()},
                        {"generated_ids", out},
                        {"prefill_tokens_per_s", prompt.size() / prefill_s},
                        {"decode_tokens_per_s", decode_tps},
                        {"state_bytes", state.bytes()}};
    if (tokenizer) j["text"] = text;
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
}

GDN_COMMAND("generate", "Generate text from a gdn, FLA or Qwen3-Next checkpoint", [](CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  app.add_option("--model", a->model, "Model directory (config.json + safetensors) or a gdn checkpoint file")
      ->required();
  app.add_option("--prompt", a->prompt, "Prompt text (needs a tokenizer: bytes for gdn models, tokenizer.model)");
  app.add_option("--prompt-ids", a->prompt_ids, "Prompt as comma-separated token ids");
  app.add_option("--max-tokens", a->max_tokens, "Tokens to generate")->check(CLI::Range(1, 1 << 24));
  app.add_option("--temperature", a->sampling.temperature, "Sampling temperature (0: greedy)");
  app.add_option("--top-k", a->sampling.top_k, "Keep the k most likely tokens (0: all)");
  app.add_option("--top-p", a->sampling.top_p, "Keep the smallest set of tokens with probability >= p (1: all)");
  app.add_option("--seed", a->sampling.seed, "Sampling seed");
  app.add_option("--form", a->form, "Op form of the prefill: chunk or recurrent");
  app.add_option("--threads", a->threads, "Threads (OpenMP and OpenBLAS); default: all cores");
  app.add_flag("--no-bos", a->no_bos, "Do not start a SentencePiece-encoded prompt with the BOS token");
  app.add_flag("--ignore-eos", a->ignore_eos, "Go on after the EOS token");
  app.add_flag("--json", a->json, "Print one JSON line at the end instead of streaming text");
  app.callback([a] { run_generate(*a); });
});

}  // namespace
}  // namespace gdn::cli
