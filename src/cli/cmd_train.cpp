// gdn train: trains a model from a JSON run description with command-line overrides.
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "cli/run_spec.h"
#include "gdn/common.h"
#include "gdn/nn/profile.h"

namespace gdn::cli {
namespace {

struct TrainArgs {
  std::string config, mixer, data, eval_data, checkpoint, init_from, parallel;
  int layers = 0, d_model = 0, heads = 0, batch = 0, seq_len = 0, kv = 0, threads = 0;
  double lr = 0, epochs = 0;
  int64_t steps = 0, seed = -1, data_seed = -1, eval_every = -1, checkpoint_every = -1;
  bool json = false, resume = false, profile = false;
};

void run_train(const TrainArgs& a) {
  RunSpec s = RunSpec::load(a.config);
  if (a.threads) s.train.threads = a.threads;
  if (!s.train.threads) s.train.threads = 1;
  set_threads(s.train.threads);
  if (!a.parallel.empty()) s.train.parallel = train::parse_parallel(a.parallel);
  if (!a.mixer.empty()) s.model.mixers = {a.mixer};
  if (a.layers) s.model.layers = a.layers;
  if (a.d_model) s.model.d_model = a.d_model;
  if (a.heads) s.model.heads = a.heads;
  if (a.lr > 0) s.train.adam.lr = a.lr;
  if (a.epochs > 0) {
    s.train.epochs = a.epochs;
    s.train.steps = 0;
  }
  if (a.steps > 0) s.train.steps = a.steps;
  if (a.batch) s.train.batch = a.batch;
  if (a.seed >= 0) s.train.seed = uint64_t(a.seed);
  if (a.data_seed >= 0) s.data_seed = uint64_t(a.data_seed);
  if (a.eval_every >= 0) s.train.eval_every = a.eval_every;
  if (!a.checkpoint.empty()) s.train.checkpoint = a.checkpoint;
  if (a.checkpoint_every >= 0) s.train.checkpoint_every = a.checkpoint_every;
  if (a.seq_len) s.data["seq_len"] = a.seq_len;
  if (a.kv) s.data["num_kv_pairs"] = a.kv;
  if (!a.data.empty()) s.data = {{"train_file", a.data}};
  if (!a.eval_data.empty()) s.data["eval_file"] = a.eval_data;
  s.train.progress = true;
  s.model.validate();
  GDN_CHECK(!a.resume || !s.train.checkpoint.empty(), "train: --resume needs --checkpoint PATH");

  const train::Dataset train_set = s.train_set();
  const train::Dataset eval_set = s.eval_set();
  GDN_CHECK(eval_set.vocab <= s.model.vocab_size, "evaluation data uses token ids up to ", eval_set.vocab - 1,
            " but the model's vocab_size is ", s.model.vocab_size);
  train::Trainer trainer(s.model, s.train, train_set, &eval_set);
  if (a.resume) trainer.resume(s.train.checkpoint);
  if (!a.init_from.empty()) trainer.init_from(a.init_from);
  const std::string data_seed = s.data.contains("task") ? cat(" (data seed ", s.data_seed, ")") : "";
  std::fprintf(stderr, "gdn train: %s, %zu parameters, %lld training sequences of %d tokens%s, %lld steps, %d thread%s%s\n",
               s.model.to_json()["mixers"].dump().c_str(), trainer.model().num_params(), (long long)train_set.n,
               train_set.len, data_seed.c_str(), (long long)s.train.total_steps(train_set.n), trainer.threads(),
               trainer.threads() > 1 ? "s" : "",
               trainer.threads() == 1                           ? ""
               : trainer.parallel() == train::Parallel::data ? " (data parallel: a model replica per thread)"
                                                               : " (inside each layer and op)");
  nn::profile().enabled = a.profile;
  const train::EvalResult r = trainer.run();
  nlohmann::json shares;
  if (a.profile) {
    // Evaluation runs the op and GEMMs too; the shares are of the training steps only
    // when the run evaluates at the end alone, so evaluation is counted out here. Data-
    // parallel replicas add up the time of every thread: shares of threads x wall time.
    const int busy_threads = trainer.parallel() == train::Parallel::data ? trainer.threads() : 1;
    const double total = trainer.train_seconds() * busy_threads, op = nn::profile().op_ns * 1e-9,
                 gemm = nn::profile().gemm_ns * 1e-9;
    shares = {{"train_seconds", trainer.train_seconds()}, {"thread_seconds", total}, {"op_seconds", op}, {"gemm_seconds", gemm},
              {"op_share", op / total}, {"gemm_share", gemm / total}, {"rest_share", 1 - (op + gemm) / total}};
    std::printf("time in training steps %.2f s%s: delta-rule op %.1f%%, GEMM %.1f%%, rest %.1f%%\n",
                trainer.train_seconds(), busy_threads > 1 ? cat(" x ", busy_threads, " threads").c_str() : "",
                100 * op / total, 100 * gemm / total, 100 * (1 - (op + gemm) / total));
  }
  const double last_loss = trainer.log().empty() ? NAN : trainer.log().back().loss;
  std::printf("eval: loss %.4f accuracy %.4f over %lld labelled positions\n", r.loss, r.accuracy, (long long)r.count);
  if (a.json) {
    nlohmann::json out = {{"eval_accuracy", r.accuracy}, {"eval_loss", r.loss}, {"eval_count", r.count},
                          {"train_loss", last_loss},    {"steps", trainer.step()}, {"tokens_per_s", trainer.tokens_per_second()},
                          {"threads", trainer.threads()}, {"parallel", train::to_string(trainer.parallel())},
                          {"params", trainer.model().num_params()}, {"model", s.model.to_json()}};
    if (a.profile) out["profile"] = shares;
    std::printf("%s\n", out.dump().c_str());
  }
}

GDN_COMMAND("train", "Train a model (MQAR and other tasks, or your own safetensors data)", [](CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  app.add_option("--config", a->config, "JSON run description {model, train, data}");
  app.add_option("--mixer", a->mixer, "Mixer of every layer (gated_deltanet, deltanet, linear_attention, retnet, "
                                      "mamba2, gla, kda, longhorn, attention, swa)");
  app.add_option("--layers", a->layers, "Number of layers");
  app.add_option("--d-model", a->d_model, "Model width");
  app.add_option("--heads", a->heads, "Heads of the delta-family mixers");
  app.add_option("--lr", a->lr, "Peak learning rate");
  auto* ep = app.add_option("--epochs", a->epochs, "Epochs over the training set");
  app.add_option("--steps", a->steps, "Optimizer steps")->excludes(ep);
  app.add_option("--batch", a->batch, "Sequences per batch");
  app.add_option("--seq-len", a->seq_len, "Sequence length of a generated task");
  app.add_option("--kv", a->kv, "MQAR key-value pairs per sequence");
  app.add_option("--data", a->data, "Training data: safetensors with int32 inputs, labels [N, L]");
  app.add_option("--eval-data", a->eval_data, "Evaluation data, same format");
  app.add_option("--seed", a->seed, "Seed of the model init and the batch order");
  app.add_option("--data-seed", a->data_seed,
                 "Seed of a generated task's examples, both splits (default: the config's data.seed); a new "
                 "seed draws a fresh training set, e.g. for a warm-started cycle");
  app.add_option("--eval-every", a->eval_every, "Evaluate every N steps (0: at the end)");
  app.add_option("--checkpoint", a->checkpoint, "Checkpoint path (safetensors, written atomically)");
  app.add_option("--checkpoint-every", a->checkpoint_every, "Write the checkpoint every N steps");
  auto* resume = app.add_flag("--resume", a->resume, "Continue from --checkpoint exactly where it stopped");
  app.add_option("--init-from", a->init_from,
                 "Warm start: weights from this checkpoint of the same model; optimizer, step and schedule start fresh")
      ->excludes(resume);
  app.add_option("--threads", a->threads, "Threads; default: the config's train.threads, else 1");
  app.add_option("--parallel", a->parallel,
                 "How the threads are used: data = one model replica per thread, each on a fixed shard of the "
                 "batch (scales on small models); op = threads inside each GEMM, layer and op call; auto "
                 "(default) = data when the batch holds at least one sequence per thread, else op")
      ->check(CLI::IsMember({"auto", "data", "op"}));
  app.add_flag("--profile", a->profile, "Report the time share of the delta-rule op, the GEMMs and the rest");
  app.add_flag("--json", a->json, "End with one JSON line holding eval_accuracy and eval_loss");
  app.callback([a] { run_train(*a); });
});

}  // namespace
}  // namespace gdn::cli
