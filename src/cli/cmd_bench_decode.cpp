// gdn bench decode: prefill speed and decode time per token at 1K and 32K tokens of
// context for a ~100M-parameter Gated DeltaNet (random weights), on this CPU. The decode
// state has a fixed size, so the time per token should not depend on the context.
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/command.h"
#include "cli/infer_util.h"
#include "cli/run_spec.h"
#include "gdn/common.h"
#include "gdn/infer.h"

namespace gdn::cli {
namespace {

struct BenchDecodeArgs {
  int d_model = 768, layers = 12, heads = 6, head_dim = 96, steps = 32, threads = 0;
  int64_t long_context = 32768;
  bool json = false;
};

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

// Median ms per decode step at two contexts, their steps interleaved so that the load of
// the machine falls on both alike; 4 warm-up steps each.
std::pair<double, double> decode_ms(infer::Model& model, infer::State& a, infer::State& b, int steps, nn::Rng& rng) {
  std::vector<float> logits(size_t(model.config().vocab));
  std::vector<double> ms_a, ms_b;
  for (int i = 0; i < steps + 4; ++i)
    for (int which = 0; which < 2; ++which) {
      const int32_t id = int32_t(rng.below(uint64_t(model.config().vocab)));
      const double t = now_s();
      model.forward(which ? b : a, &id, 1, logits.data());
      if (i >= 4) (which ? ms_b : ms_a).push_back((now_s() - t) * 1e3);
    }
  auto median = [](std::vector<double>& v) {
    std::nth_element(v.begin(), v.begin() + ptrdiff_t(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  return {median(ms_a), median(ms_b)};
}

void run_bench_decode(const BenchDecodeArgs& a) {
  set_threads(a.threads);
  infer::Config c;
  c.vocab = 256;  // byte-level, as gdn's language models
  c.d_model = a.d_model;
  c.attention.assign(size_t(a.layers), false);
  c.window.assign(size_t(a.layers), 0);
  c.heads = c.v_heads = a.heads;
  c.head_k = a.head_dim;
  c.head_v = 2 * a.head_dim;  // FLA's expand_v = 2
  c.mlp_hidden = 256 * ((a.d_model * 8 / 3 + 255) / 256);
  infer::Model model = infer::Model::random(c, 1);
  const double rss_model = rss_mib();
  std::fprintf(stderr,
               "gdn bench decode: Gated DeltaNet d_model %d, %d layers, %d heads x (K %d, V %d), %.1fM "
               "parameters, %s, %d threads\n",
               c.d_model, c.layers(), c.heads, c.head_k, c.head_v, model.num_params() / 1e6, cpu_name().c_str(),
               a.threads > 0 ? a.threads : int(std::thread::hardware_concurrency()));

  // Prefill 1K tokens, keep a copy of that state, prefill on to the long context in
  // pieces of 1024 tokens (the chunk form; the layers keep buffers of a piece's size), then
  // time decode steps from both states.
  nn::Rng rng(2);
  infer::State state = model.new_state(), state_1k;
  std::vector<int32_t> ids(static_cast<size_t>(1024));
  std::vector<float> logits(size_t(c.vocab));
  double prefill_s = 0, rss_1k = 0;
  while (state.position < a.long_context) {
    const int n = int(std::min<int64_t>(1024, a.long_context - state.position));
    for (int i = 0; i < n; ++i) ids[size_t(i)] = int32_t(rng.below(uint64_t(c.vocab)));
    const double t = now_s();
    model.forward(state, ids.data(), n, logits.data());
    prefill_s += now_s() - t;
    if (state.position == 1024) {
      state_1k = state;
      rss_1k = rss_mib();
    }
    std::fprintf(stderr, "\rprefill %lld / %lld tokens", (long long)state.position, (long long)a.long_context);
  }
  std::fprintf(stderr, "\n");
  const int64_t context = state.position;
  const double prefill_tps = double(context) / prefill_s;
  const auto [ms_1k, ms_long] = decode_ms(model, state_1k, state, a.steps, rng);
  const size_t state_bytes_1k = state_1k.bytes(), state_long = state.bytes();
  const double rss_long = rss_mib();

  std::printf("prefill: %.0f tokens/s (%lld tokens, chunk form)\n", prefill_tps, (long long)context);
  std::printf("decode at %6d tokens of context: %.2f ms/token, state %.2f MiB (process resident %.0f MiB)\n", 1024,
              ms_1k, state_bytes_1k / 1048576.0, rss_1k);
  std::printf("decode at %6lld tokens of context: %.2f ms/token, state %.2f MiB (process resident %.0f MiB)\n",
              (long long)context, ms_long, state_long / 1048576.0, rss_long);
  std::printf("ratio %lldK / 1K: %.3f (the model's weights alone: %.0f MiB resident)\n", (long long)(context / 1024),
              ms_long / ms_1k, rss_model);
  if (a.json) {
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    const nlohmann::json j = {
        {"bench", "decode"},
        {"machine",
         {{"cpu", cpu_name()}, {"threads", a.threads > 0 ? a.threads : int(std::thread::hardware_concurrency())}}},
        {"date", date},
        {"model",
         {{"d_model", c.d_model},
          {"layers", c.layers()},
          {"heads", c.heads},
          {"head_k", c.head_k},
          {"head_v", c.head_v},
          {"mlp_hidden", c.mlp_hidden},
          {"vocab", c.vocab},
          {"params", model.num_params()}}},
        {"prefill_tokens_per_s", prefill_tps},
        {"ms_per_token_1k", ms_1k},
        {"ms_per_token_32k", ms_long},
        {"long_context_tokens", context},
        {"ratio_32k_over_1k", ms_long / ms_1k},
        {"state_bytes_1k", state_bytes_1k},
        {"state_bytes_32k", state_long},
        {"rss_mib_1k", rss_1k},
        {"rss_mib_32k", rss_long},
        {"rss_mib_model", rss_model}};
    std::printf("%s\n", j.dump().c_str());
  }
}

GDN_COMMAND(
    "bench decode", "Prefill tokens/s and decode ms/token at 1K and 32K of context (~100M GDN, CPU)",
    [](CLI::App& app) {
      auto a = std::make_shared<BenchDecodeArgs>();
      app.add_option("--d-model", a->d_model, "Model width");
      app.add_option("--layers", a->layers, "Layers");
      app.add_option("--heads", a->heads, "Heads (value heads = heads)");
      app.add_option("--head-dim", a->head_dim, "Key head dim K (V = 2K)");
      app.add_option("--context", a->long_context, "The long context, tokens")->check(CLI::Range(2048, 1 << 22));
      app.add_option("--steps", a->steps, "Timed decode steps at each context")->check(CLI::Range(1, 10000));
      app.add_option("--threads", a->threads, "Threads (OpenMP and OpenBLAS); default: all cores");
      app.add_flag("--json", a->json, "End with one JSON line");
      app.callback([a] { run_bench_decode(*a); });
    });

}  // namespace
}  // namespace gdn::cli
