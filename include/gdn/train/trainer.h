// The training loop: batches from a Dataset in a seeded per-epoch order, AdamW, warmup +
// cosine, gradient clipping, periodic evaluation, atomic checkpoints and exact resume.
// A run is a function of (model config, train config, data, seed, thread count and how the
// threads are used).
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "gdn/nn/model.h"
#include "gdn/train/data_parallel.h"
#include "gdn/train/data.h"
#include "gdn/train/optim.h"

namespace gdn::train {

struct TrainConfig {
  int64_t steps = 0;    // 0: epochs * (train examples / batch)
  double epochs = 0;
  int batch = 32;
  AdamWConfig adam;
  double warmup = 0.1;  // < 1: fraction of the steps; >= 1: steps
  double min_lr_ratio = 0.0;
  double clip = 1.0;
  uint64_t seed = 0;
  int64_t eval_every = 0;        // steps; 0: at the end only
  std::string checkpoint;        // safetensors path; empty: none
  int64_t checkpoint_every = 0;  // steps; 0: at the end only (when checkpoint is set)
  bool progress = true;          // progress bar on stderr
  int threads = 0;               // 0: OpenMP's current thread count
  Parallel parallel = Parallel::automatic;
  // Batches of rows whose labels end in the same 64-token block, each batch cut after its
  // last label (exact for a causal model, whose loss ignores later positions): the same
  // examples for less compute when rows are padded to a common length (training mixtures).
  bool group_by_length = false;

  static TrainConfig from_json(const nlohmann::json& j);  // unknown fields are errors
  nlohmann::json to_json() const;
  int64_t total_steps(int64_t train_examples) const;
};

struct EvalResult {
  double loss = 0, accuracy = 0;
  int64_t count = 0;
};
EvalResult evaluate(nn::Model<float>& model, const Dataset& data, int batch);
// The same, each batch sharded over the replicas (forward only).
EvalResult evaluate(DataParallel& replicas, const Dataset& data, int batch);

struct StepLog {
  int64_t step = 0;
  double loss = 0, accuracy = 0, lr = 0, grad_norm = 0;
};

class Trainer {
 public:
  Trainer(const nn::ModelConfig& model_cfg, const TrainConfig& cfg, const Dataset& train, const Dataset* eval);

  // Restores weights, optimizer state and step from a checkpoint of the same model.
  void resume(const std::string& path);
  // Warm start: weights from a checkpoint of the same model; the optimizer state, step and
  // schedule start fresh (a new run, e.g. a second learning-rate cycle or a fine-tune).
  void init_from(const std::string& path);
  void save(const std::string& path) const;
  // Trains to the configured number of steps; returns the final evaluation (if any).
  EvalResult run();

  nn::Model<float>& model() { return *model_; }
  const std::vector<StepLog>& log() const { return log_; }
  int64_t step() const { return step_; }
  double tokens_per_second() const { return tokens_per_s_; }
  double train_seconds() const { return train_seconds_; }  // in steps, without evaluations
  int threads() const { return threads_; }
  Parallel parallel() const { return parallel_; }  // data or op (auto resolved)
  // The rows of `epoch` in training order, batch after batch.
  const std::vector<int64_t>& epoch_order(int64_t epoch);
  // Called after every step (for tests and the demo's curves).
  std::function<void(const StepLog&)> on_step;

 private:
  // Fills the batch of `step` and returns its row length.
  int fill_batch(int64_t step, std::vector<int32_t>& ids, std::vector<int32_t>& labels);

  nn::ModelConfig model_cfg_;
  TrainConfig cfg_;
  const Dataset& train_;
  const Dataset* eval_;
  std::unique_ptr<nn::Model<float>> model_;
  std::unique_ptr<AdamW> opt_;
  int threads_ = 1;
  Parallel parallel_ = Parallel::op;
  std::unique_ptr<DataParallel> replicas_;  // data parallel on more than one thread
  int64_t step_ = 0, total_ = 0;
  std::vector<StepLog> log_;
  double tokens_per_s_ = 0, train_seconds_ = 0;
  int64_t order_epoch_ = -1;
  std::vector<int64_t> order_;   // the epoch's rows, batch after batch
  std::vector<int> row_label_end_;  // group_by_length: each training row's label_end()
};

// Model weights from a checkpoint (FLA names; optimizer tensors are ignored). The model
// config comes from the checkpoint's metadata.
std::unique_ptr<nn::Model<float>> load_model(const std::string& path);

}  // namespace gdn::train
