// gdn demo: the delta rule against linear attention, gating and softmax attention on an
// MQAR setting with nearly as many key-value pairs as a head's key dimension. Same small model,
// same data, same steps for every mixer, several seeds each (single runs of models this
// small swing between seeds); table, CSV, JSON and an SVG plot.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include "cli/command.h"
#include "cli/run_spec.h"
#include "gdn/common.h"

namespace gdn::cli {
namespace {

struct DemoArgs {
  std::vector<std::string> mixers = {"linear_attention", "mamba2", "deltanet", "gated_deltanet", "attention"};
  // One 16-dimensional head per layer and 14 key-value pairs, nearly as many as its keys have
  // dimensions: the delta rule stores them, linear attention's sum of outer products blurs them
  // (probes behind the choice: bench/results/2026-11-26-demo-probes-device.json; with 12 pairs
  // linear attention still reaches 49-64%). Small enough for three seeds of five mixers in
  // under 8 minutes on two cores.
  int d_model = 32, heads = 1, head_dim = 16, seq_len = 64, kv = 14, vocab = 128, batch = 32, threads = 0, jobs = 0;
  int64_t steps = 5000, train_examples = 20000, eval_examples = 500;
  bool random_non_queries = false;
  double lr = 5e-3;
  // One head per layer draws one gate timescale; FLA's dt range [1e-3, 0.1] (made for many heads)
  // starts a third of the layers with a memory half-life under 8 tokens, and Gated DeltaNet's runs
  // then stalled. [1e-4, 1e-3] starts every head with a half-life of 43+ tokens, about L
  // (Gated DeltaNet's median over 10 seeds 55% -> 96.6%: bench/results/2026-11-25-demo-init.json).
  std::array<double, 2> gate_dt_range = {1e-4, 1e-3};
  // ~PyTorch's default Linear scale at width 32 (1/sqrt(3 * 32) = 0.10). FLA's 0.02 suits widths
  // of a thousand and more; at width 32 it left attention at chance (16% after 30000 steps)
  // where 0.1 solves the task (bench/results/2026-11-25-demo-init.json).
  double init_std = 0.1;
  uint64_t seed = 0;
  int seeds = 3;  // runs per mixer, seeds seed .. seed + seeds - 1
  std::string out = "demo_out";
  bool json = false;
};

struct DemoRun {
  std::string mixer;
  uint64_t seed = 0;
  size_t params = 0;
  train::EvalResult eval;
  double seconds = 0, tokens_per_s = 0;
  std::vector<double> curve;  // training accuracy on the queried positions, smoothed
};

// Launch order for parallel runs: the slowest mixers first, so that no core idles while the
// last long run finishes alone. Relative costs: seconds of one run of the demo's setting at 6000
// steps on the 2-core machine (2026-11-26); a mixer not listed counts as the median.
template <class MixerOf>
std::vector<size_t> longest_first(size_t n, MixerOf&& mixer_of) {
  static const std::map<std::string, double> seconds = {
      {"attention", 89}, {"swa", 89}, {"gated_deltanet", 69}, {"deltanet", 62}, {"mamba2", 56}, {"linear_attention", 52}};
  auto cost = [&](size_t i) {
    const auto it = seconds.find(mixer_of(i));
    return it == seconds.end() ? 62.0 : it->second;
  };
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return cost(x) > cost(y); });
  return order;
}

// The runs of one mixer, in seed order.
std::vector<const DemoRun*> runs_of(const std::vector<DemoRun>& runs, const std::string& mixer) {
  std::vector<const DemoRun*> out;
  for (const auto& r : runs)
    if (r.mixer == mixer) out.push_back(&r);
  return out;
}

double median_accuracy(const std::vector<const DemoRun*>& runs) {
  std::vector<double> acc;
  for (const auto* r : runs) acc.push_back(r->eval.accuracy);
  std::sort(acc.begin(), acc.end());
  const size_t n = acc.size();
  return n % 2 ? acc[n / 2] : 0.5 * (acc[n / 2 - 1] + acc[n / 2]);
}

std::string svg_plot(const std::vector<DemoRun>& runs, const DemoArgs& a) {
  const char* colors[] = {"#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
  const int W = 900, H = 400, pad = 50, panel = 380;
  std::string s = cat("<svg xmlns='http://www.w3.org/2000/svg' width='", W, "' height='", H,
                      "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n");
  s += cat("<text x='", W / 2, "' y='20' text-anchor='middle' font-size='15'>MQAR, ", a.kv, " key-value pairs, L=", a.seq_len,
           ", d_model=", a.d_model, ", ", a.steps, " steps, ", a.seeds,
           " seeds: accuracy on the queried positions</text>\n");
  // Left: median evaluation accuracy per mixer (bar) and each seed's (dots).
  const int nm = int(a.mixers.size());
  const int x0 = pad, y0 = 60, h = H - 120, bw = panel / nm;
  for (int t = 0; t <= 4; ++t) {
    const int y = y0 + h - h * t / 4;
    s += cat("<line x1='", x0, "' y1='", y, "' x2='", x0 + panel, "' y2='", y, "' stroke='#ddd'/>", "<text x='", x0 - 6, "' y='",
             y + 4, "' text-anchor='end'>", t * 25, "%</text>\n");
  }
  for (int i = 0; i < nm; ++i) {
    const auto mine = runs_of(runs, a.mixers[size_t(i)]);
    const double acc = median_accuracy(mine);
    double top = acc;  // the label goes above the bar and every dot
    for (const auto* r : mine) top = std::max(top, r->eval.accuracy);
    const int bh = int(h * acc), x = x0 + i * bw + 8, xc = x + (bw - 16) / 2;
    s += cat("<rect x='", x, "' y='", y0 + h - bh, "' width='", bw - 16, "' height='", bh, "' fill='", colors[i % 8],
             "' fill-opacity='0.55'/>");
    for (size_t k = 0; k < mine.size(); ++k)
      s += cat("<circle cx='", xc - 12 + 24.0 * double(k) / double(std::max<size_t>(1, mine.size() - 1)), "' cy='",
               y0 + h - h * mine[k]->eval.accuracy, "' r='3.5' fill='", colors[i % 8], "' stroke='black' stroke-width='0.5'/>");
    s += cat("<text x='", xc, "' y='", y0 + h - int(h * top) - 8, "' text-anchor='middle'>", int(acc * 1000 + 0.5) / 10.0,
             "%</text>");
    s += cat("<text x='", xc, "' y='", y0 + h + 16, "' text-anchor='middle' font-size='11'>", a.mixers[size_t(i)], "</text>\n");
  }
  s += cat("<text x='", x0 + panel / 2, "' y='", y0 + h + 34,
           "' text-anchor='middle' font-size='11'>bar: median over seeds; dots: each seed</text>\n");
  // Right: training curves, one per run.
  const int cx0 = x0 + panel + 80, cw = W - cx0 - 20;
  for (int t = 0; t <= 4; ++t) {
    const int y = y0 + h - h * t / 4;
    s += cat("<line x1='", cx0, "' y1='", y, "' x2='", cx0 + cw, "' y2='", y, "' stroke='#ddd'/>", "<text x='", cx0 - 6,
             "' y='", y + 4, "' text-anchor='end'>", t * 25, "%</text>\n");
  }
  s += cat("<text x='", cx0 + cw / 2, "' y='", y0 + h + 30, "' text-anchor='middle'>training step</text>\n");
  // Legend above the panel, clear of the curves: names side by side (~6.5 px per character at
  // 11 px), a second row when they do not fit in one.
  double legend_x = cx0;
  int legend_y = y0 - 26;
  for (int i = 0; i < nm; ++i) {
    for (const auto* r : runs_of(runs, a.mixers[size_t(i)])) {
      const auto& c = r->curve;
      if (c.empty()) continue;
      std::string pts;
      for (size_t k = 0; k < c.size(); ++k)
        pts += cat(cx0 + double(cw) * double(k) / double(std::max<size_t>(1, c.size() - 1)), ",", y0 + h - h * c[k], " ");
      s += cat("<polyline fill='none' stroke-width='1.5' stroke-opacity='0.8' stroke='", colors[i % 8], "' points='", pts,
               "'/>\n");
    }
    const double width = 6.5 * double(a.mixers[size_t(i)].size()) + 14;
    if (legend_x > cx0 && legend_x + width > cx0 + cw) {
      legend_x = cx0;
      legend_y += 13;
    }
    s += cat("<text x='", legend_x, "' y='", legend_y, "' fill='", colors[i % 8], "' font-size='11'>",
             a.mixers[size_t(i)], "</text>\n");
    legend_x += width;
  }
  return s + "</svg>\n";
}

void run_demo(const DemoArgs& a) {
  set_threads(a.threads);
  RunSpec s;
  s.model.vocab_size = a.vocab;
  s.model.d_model = a.d_model;
  s.model.layers = 2;
  s.model.heads = a.heads;
  s.model.head_dim = a.head_dim;
  s.model.attn_heads = a.heads;
  s.model.mlp_hidden = a.d_model;
  s.model.gate_dt_range = a.gate_dt_range;
  s.model.init_std = a.init_std;
  s.train.batch = a.batch;
  s.train.steps = a.steps;
  s.train.adam.lr = a.lr;
  s.train.warmup = 0.05;
  s.data = {{"task", "mqar"}, {"vocab_size", a.vocab}, {"seq_len", a.seq_len}, {"num_kv_pairs", a.kv},
            {"random_non_queries", a.random_non_queries}};
  s.train_examples = a.train_examples;
  s.eval_examples = a.eval_examples;
  const train::Dataset train_set = s.train_set(), eval_set = s.eval_set();
  std::fprintf(stderr,
               "gdn demo: MQAR with %d key-value pairs in %d tokens (vocab %d), 2-layer models of width %d, "
               "%lld steps of %d sequences each, %d seed%s per mixer\n",
               a.kv, a.seq_len, a.vocab, a.d_model, (long long)a.steps, a.batch, a.seeds, a.seeds == 1 ? "" : "s");
  // One single-threaded training per (mixer, seed), `jobs` at a time in forked processes:
  // on small models that beats threads inside one training by far.
  std::filesystem::create_directories(a.out);
  auto train_one = [&](const std::string& mixer, uint64_t seed, bool progress) {
    nn::ModelConfig mc = s.model;
    mc.mixers = {mixer};
    train::TrainConfig tc = s.train;
    tc.seed = seed;
    tc.progress = progress;
    train::Trainer trainer(mc, tc, train_set, &eval_set);
    DemoRun r;
    r.mixer = mixer;
    r.seed = seed;
    r.params = trainer.model().num_params();
    double ema = 0;
    const int64_t every = std::max<int64_t>(1, a.steps / 100);
    trainer.on_step = [&](const train::StepLog& l) {
      ema = l.step == 0 ? l.accuracy : 0.9 * ema + 0.1 * l.accuracy;
      if (l.step % every == 0) r.curve.push_back(ema);
    };
    const auto t0 = std::chrono::steady_clock::now();
    r.eval = trainer.run();
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.tokens_per_s = trainer.tokens_per_second();
    return r;
  };
  auto to_json = [](const DemoRun& r) {
    return nlohmann::json{{"mixer", r.mixer}, {"seed", r.seed}, {"params", r.params}, {"accuracy", r.eval.accuracy},
                          {"loss", r.eval.loss}, {"count", r.eval.count}, {"seconds", r.seconds},
                          {"tokens_per_s", r.tokens_per_s}, {"train_accuracy_curve", r.curve}};
  };
  GDN_CHECK(a.seeds >= 1, "demo: --seeds must be >= 1");
  for (size_t i = 0; i < a.mixers.size(); ++i)
    for (size_t j = 0; j < i; ++j) GDN_CHECK(a.mixers[i] != a.mixers[j], "demo: --mixers lists ", a.mixers[i], " twice");
  for (const auto& mixer : a.mixers) {
    nn::ModelConfig mc = s.model;
    mc.mixers = {mixer};
    mc.validate();
  }
  // Runs in mixer-major order: run i trains mixers[i / seeds] with seed + i % seeds.
  const size_t n = a.mixers.size() * size_t(a.seeds);
  auto mixer_of = [&](size_t i) -> const std::string& { return a.mixers[i / size_t(a.seeds)]; };
  auto seed_of = [&](size_t i) { return a.seed + i % size_t(a.seeds); };
  auto name_of = [&](size_t i) { return cat(mixer_of(i), " seed ", seed_of(i)); };
  const int jobs = std::max(1, a.jobs > 0 ? a.jobs : int(std::thread::hardware_concurrency()));
  std::vector<DemoRun> runs(n);
  if (jobs == 1) {
    for (size_t i = 0; i < n; ++i) {
      std::fprintf(stderr, "-- %s\n", name_of(i).c_str());
      runs[i] = train_one(mixer_of(i), seed_of(i), true);
    }
  } else {
    std::fflush(nullptr);
    std::map<pid_t, size_t> running;
    auto part = [&](size_t i) { return cat(a.out, "/.", mixer_of(i), ".", seed_of(i), ".part.json"); };
    size_t done = 0;
    auto reap = [&] {
      int status = 0;
      const pid_t pid = wait(&status);
      const size_t i = running.at(pid);
      running.erase(pid);
      GDN_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "demo: the ", name_of(i), " run failed");
      std::ifstream f(part(i));
      const auto j = nlohmann::json::parse(f);
      std::filesystem::remove(part(i));
      DemoRun& r = runs[i];
      r.mixer = j["mixer"];
      r.seed = j["seed"];
      r.params = j["params"];
      r.eval.accuracy = j["accuracy"];
      r.eval.loss = j["loss"];
      r.eval.count = j["count"];
      r.seconds = j["seconds"];
      r.tokens_per_s = j["tokens_per_s"];
      r.curve = j["train_accuracy_curve"].get<std::vector<double>>();
      std::fprintf(stderr, "   [%zu/%zu] %-26s accuracy %5.1f%%  (%.0f s)\n", ++done, n, name_of(i).c_str(),
                   100 * r.eval.accuracy, r.seconds);
    };
    for (const size_t i : longest_first(n, mixer_of)) {
      if (int(running.size()) == jobs) reap();
      const pid_t pid = fork();
      GDN_CHECK(pid >= 0, "demo: fork failed");
      if (pid == 0) {
        int code = 0;
        try {
          std::ofstream(part(i)) << to_json(train_one(mixer_of(i), seed_of(i), false)).dump();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "gdn demo: %s: %s\n", name_of(i).c_str(), e.what());
          code = 1;
        }
        std::fflush(nullptr);
        _exit(code);
      }
      running[pid] = i;
    }
    while (!running.empty()) reap();
  }

  std::printf("\n%-18s %10s %10s  %-24s %10s %10s\n", "mixer", "params", "median", "each seed", "loss", "tokens/s");
  nlohmann::json acc = nlohmann::json::object(), by_seed = nlohmann::json::object(), detail = nlohmann::json::array();
  for (const auto& mixer : a.mixers) {
    const auto mine = runs_of(runs, mixer);
    std::string each;
    std::vector<double> seed_acc;
    double loss = 0, tps = 0;
    for (const auto* r : mine) {
      char pct[16];
      std::snprintf(pct, sizeof pct, "%.1f", 100 * r->eval.accuracy);
      each += cat(each.empty() ? "" : " ", pct);
      seed_acc.push_back(r->eval.accuracy);
      loss += r->eval.loss / double(mine.size());
      tps += r->tokens_per_s / double(mine.size());
    }
    const double median = median_accuracy(mine);
    acc[mixer] = median;
    by_seed[mixer] = seed_acc;
    std::printf("%-18s %10zu %9.1f%%  %-24s %10.4f %10.0f\n", mixer.c_str(), mine.front()->params, 100 * median,
                each.c_str(), loss, tps);
  }
  {
    std::ofstream csv(a.out + "/demo.csv");
    csv << "mixer,seed,params,accuracy,loss,seconds,tokens_per_s\n";
    for (const auto& r : runs) {
      csv << r.mixer << "," << r.seed << "," << r.params << "," << r.eval.accuracy << "," << r.eval.loss << ","
          << r.seconds << "," << r.tokens_per_s << "\n";
      detail.push_back(to_json(r));
    }
  }
  const nlohmann::json setting = {{"task", "mqar"}, {"vocab_size", a.vocab}, {"seq_len", a.seq_len},
                                  {"num_kv_pairs", a.kv}, {"random_non_queries", a.random_non_queries},
                                  {"d_model", a.d_model}, {"layers", 2},
                                  {"heads", a.heads}, {"head_dim", a.head_dim}, {"steps", a.steps},
                                  {"batch", a.batch}, {"lr", a.lr}, {"gate_dt_range", a.gate_dt_range}, {"init_std", a.init_std},
                                  {"seeds", a.seeds}, {"first_seed", a.seed}};
  std::ofstream(a.out + "/demo.json") << nlohmann::json{{"setting", setting},
                                                                     {"runs", detail},
                                                                     {"accuracy", acc},
                                                                     {"accuracy_by_seed", by_seed}}
                                             .dump(1)
                                      << "\n";
  std::ofstream(a.out + "/demo.svg") << svg_plot(runs, a);
  std::printf("wrote %s/demo.csv, %s/demo.json, %s/demo.svg\n", a.out.c_str(), a.out.c_str(), a.out.c_str());
  // "accuracy": the median over seeds; "accuracy_by_seed" in seed order.
  if (a.json) std::printf("%s\n", nlohmann::json{{"accuracy", acc}, {"accuracy_by_seed", by_seed}}.dump().c_str());
}

GDN_COMMAND("demo", "Delta rule vs linear attention, gating and attention on MQAR (a few minutes on 2 cores)",
            [](CLI::App& app) {
              auto a = std::make_shared<DemoArgs>();
              app.add_option("--mixers", a->mixers, "Mixers to compare")->delimiter(',');
              app.add_option("--d-model", a->d_model, "Model width")->capture_default_str();
              app.add_option("--heads", a->heads, "Heads")->capture_default_str();
              app.add_option("--head-dim", a->head_dim, "Key/value head dimension")->capture_default_str();
              app.add_option("--seq-len", a->seq_len, "MQAR sequence length")->capture_default_str();
              app.add_option("--kv", a->kv, "MQAR key-value pairs")->capture_default_str();
              app.add_option("--vocab", a->vocab, "MQAR vocabulary")->capture_default_str();
              app.add_flag("--random-non-queries,!--zero-non-queries", a->random_non_queries,
                           "Fill the non-query positions with random tokens (Zoology's default) instead of 0");
              app.add_option("--steps", a->steps, "Training steps per mixer")->capture_default_str();
              app.add_option("--batch", a->batch, "Batch size")->capture_default_str();
              app.add_option("--lr", a->lr, "Peak learning rate")->capture_default_str();
              app.add_option("--gate-dt-range", a->gate_dt_range,
                             "Initial dt range of the decay gates (Gated DeltaNet, Mamba2), log-uniform")
                  ->capture_default_str();
              app.add_option("--init-std", a->init_std, "Standard deviation of the initial projection weights")
                  ->capture_default_str();
              app.add_option("--seed", a->seed, "First seed")->capture_default_str();
              app.add_option("--seeds", a->seeds, "Seeds per mixer (the table reports their median)")
                  ->check(CLI::Range(1, 100))
                  ->capture_default_str();
              app.add_option("--out", a->out, "Output directory")->capture_default_str();
              app.add_option("--threads", a->threads, "Threads of each run (OpenMP and OpenBLAS); default 1");
              app.add_option("--jobs", a->jobs, "Runs in parallel (processes); default: the number of cores");
              app.add_flag("--json", a->json, "End with one JSON line {\"accuracy\": {...}}");
              app.callback([a] { run_demo(*a); });
            });

}  // namespace
}  // namespace gdn::cli
