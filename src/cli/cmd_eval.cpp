// gdn eval: loss and accuracy of a checkpoint on labelled data (a safetensors file or a
// generated task from a run description).
#include <algorithm>
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "cli/run_spec.h"
#include "gdn/common.h"

namespace gdn::cli {
namespace {

struct EvalArgs {
  std::string checkpoint, config, data;
  int batch = 32, threads = 0;
  bool json = false;
};

void run_eval(const EvalArgs& a) {
  set_threads(a.threads);
  GDN_CHECK(!a.data.empty() || !a.config.empty(), "eval: give --data FILE or --config FILE (its data section)");
  auto model = train::load_model(a.checkpoint);
  train::Dataset data;
  if (a.data.empty()) {
    const RunSpec spec = RunSpec::load(a.config);
    check_data_fits_model(spec.data, model->config());
    data = spec.eval_set();
  } else {
    data = train::load_token_file(a.data);
  }
  GDN_CHECK(data.vocab <= model->config().vocab_size, "eval: the data uses token ids up to ", data.vocab - 1,
            " but the model's vocab_size is ", model->config().vocab_size);
  // More than one thread: a model replica per thread, each on a shard of every batch.
  const int threads = std::max(1, a.threads);
  train::EvalResult r;
  if (threads > 1 && a.batch >= threads) {
    train::DataParallel replicas(*model, threads);
    r = train::evaluate(replicas, data, a.batch);
  } else {
    r = train::evaluate(*model, data, a.batch);
  }
  std::printf("eval: loss %.4f accuracy %.4f over %lld labelled positions (%lld sequences)\n", r.loss, r.accuracy,
              (long long)r.count, (long long)data.n);
  if (a.json)
    std::printf("%s\n", nlohmann::json{{"eval_accuracy", r.accuracy}, {"eval_loss", r.loss}, {"eval_count", r.count}}
                            .dump()
                            .c_str());
}

GDN_COMMAND("eval", "Evaluate a checkpoint: loss and accuracy on the labelled positions", [](CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  app.add_option("--checkpoint", a->checkpoint, "Checkpoint written by gdn train")->required();
  app.add_option("--data", a->data, "Labelled data: safetensors with int32 inputs, labels [N, L]");
  app.add_option("--config", a->config, "Run description whose data section generates the evaluation set");
  app.add_option("--batch", a->batch, "Sequences per batch")->capture_default_str();
  app.add_option("--threads", a->threads, "Threads; default 1 (with --batch >= threads: a model replica per thread)");
  app.add_flag("--json", a->json, "End with one JSON line holding eval_accuracy and eval_loss");
  app.callback([a] { run_eval(*a); });
});

}  // namespace
}  // namespace gdn::cli
