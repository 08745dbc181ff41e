#include "gdn/train/trainer.h"

#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "gdn/common.h"
#include "gdn/nn/profile.h"
#include "gdn/safetensors.h"
#include "io/json_fields.h"

namespace gdn::train {

namespace {
constexpr const char* kFormat = "gdn-checkpoint-1";

std::string format_seconds(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int t = int(s + 0.5);
  if (t >= 3600) return cat(t / 3600, "h", (t / 60) % 60, "m");
  if (t >= 60) return cat(t / 60, "m", t % 60, "s");
  return cat(t, "s");
}
}  // namespace

TrainConfig TrainConfig::from_json(const nlohmann::json& j) {
  GDN_CHECK(j.is_object(), "train config: expected a JSON object");
  const JsonFields fields(j, "train config");
  fields.allow_only({"steps", "epochs", "batch", "lr", "beta1", "beta2", "eps", "weight_decay",
                                "warmup", "min_lr_ratio", "clip", "seed", "eval_every", "checkpoint",
                                "checkpoint_every", "progress", "threads", "parallel", "group_by_length"});
  TrainConfig c;
  fields.read("steps", c.steps);
  fields.read("epochs", c.epochs);
  fields.read("batch", c.batch);
  fields.read("lr", c.adam.lr);
  fields.read("beta1", c.adam.beta1);
  fields.read("beta2", c.adam.beta2);
  fields.read("eps", c.adam.eps);
  fields.read("weight_decay", c.adam.weight_decay);
  fields.read("warmup", c.warmup);
  fields.read("min_lr_ratio", c.min_lr_ratio);
  fields.read("clip", c.clip);
  fields.read("seed", c.seed);
  fields.read("eval_every", c.eval_every);
  fields.read("checkpoint", c.checkpoint);
  fields.read("checkpoint_every", c.checkpoint_every);
  fields.read("progress", c.progress);
  fields.read("threads", c.threads);
  fields.read("group_by_length", c.group_by_length);
  std::string parallel = to_string(c.parallel);
  fields.read("parallel", parallel);
  try {
    c.parallel = parse_parallel(parallel);
  } catch (const Error& e) {
    fail("train config: ", e.what());
  }
  GDN_CHECK(c.batch > 0, "train config: batch must be > 0, got ", c.batch);
  GDN_CHECK(c.adam.lr > 0 && std::isfinite(c.adam.lr), "train config: lr must be > 0, got ", c.adam.lr);
  GDN_CHECK(c.steps >= 0 && c.epochs >= 0, "train config: steps and epochs must be >= 0");
  GDN_CHECK(c.threads >= 0, "train config: threads must be >= 0 (0: OpenMP's count), got ", c.threads);
  return c;
}

nlohmann::json TrainConfig::to_json() const {
  return {{"steps", steps}, {"epochs", epochs}, {"batch", batch}, {"lr", adam.lr}, {"beta1", adam.beta1},
          {"beta2", adam.beta2}, {"eps", adam.eps}, {"weight_decay", adam.weight_decay}, {"warmup", warmup},
          {"min_lr_ratio", min_lr_ratio}, {"clip", clip}, {"seed", seed}, {"eval_every", eval_every},
          {"checkpoint", checkpoint}, {"checkpoint_every", checkpoint_every}, {"threads", threads},
          {"parallel", to_string(parallel)}, {"group_by_length", group_by_length}};
}

int64_t TrainConfig::total_steps(int64_t train_examples) const {
  if (steps > 0) return steps;
  const int64_t per_epoch = std::max<int64_t>(1, train_examples / batch);
  return std::max<int64_t>(1, int64_t(std::ceil((epochs > 0 ? epochs : 1.0) * per_epoch)));
}

namespace {
// Loss and accuracy over the labelled positions of `data`, batch by batch through
// `forward(ids, labels, rows, len)`.
template <class Forward>
EvalResult evaluate_batches(const Dataset& data, int batch, Forward&& forward) {
  GDN_CHECK(batch > 0, "evaluate: batch must be > 0, got ", batch);
  // Evaluation stays out of the training-time profile.
  const bool profiling = nn::profile().enabled.exchange(false);
  EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t i = 0; i < data.n; i += batch) {
    const int b = int(std::min<int64_t>(batch, data.n - i));
    const nn::LossStats st = forward(data.input_row(i), data.label_row(i), b, data.len);
    loss_sum += st.loss * double(st.count);
    r.count += st.count;
    correct += st.correct;
  }
  if (r.count > 0) {
    r.loss = loss_sum / double(r.count);
    r.accuracy = double(correct) / double(r.count);
  }
  nn::profile().enabled = profiling;
  return r;
}

// Sets the OpenMP and OpenBLAS thread counts for a scope and restores them after.
class ThreadScope {
 public:
  ThreadScope(int omp_threads, int blas_threads)
      : omp_(omp_get_max_threads()), blas_(openblas_get_num_threads()) {
    omp_set_num_threads(omp_threads);
    openblas_set_num_threads(blas_threads);
  }
  ~ThreadScope() {
    omp_set_num_threads(omp_);
    openblas_set_num_threads(blas_);
  }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int omp_, blas_;
};
}  // namespace

EvalResult evaluate(nn::Model<float>& model, const Dataset& data, int batch) {
  return evaluate_batches(data, batch, [&](const int32_t* ids, const int32_t* labels, int b, int len) {
    return model.forward(ids, labels, b, len);
  });
}

EvalResult evaluate(DataParallel& replicas, const Dataset& data, int batch) {
  return evaluate_batches(data, batch, [&](const int32_t* ids, const int32_t* labels, int b, int len) {
    return replicas.forward(ids, labels, b, len);
  });
}

Trainer::Trainer(const nn::ModelConfig& model_cfg, const TrainConfig& cfg, const Dataset& train, const Dataset* eval)
    : model_cfg_(model_cfg), cfg_(cfg), train_(train), eval_(eval) {
  train_.validate("training data");
  if (eval_) eval_->validate("evaluation data");
  GDN_CHECK(train_.vocab <= model_cfg_.vocab_size, "training data uses token ids up to ", train_.vocab - 1,
            " but the model's vocab_size is ", model_cfg_.vocab_size);
  GDN_CHECK(train_.n >= cfg_.batch, "training data has ", train_.n, " sequences, fewer than one batch (", cfg_.batch, ")");
  model_ = std::make_unique<nn::Model<float>>(model_cfg_, cfg_.seed);
  threads_ = cfg_.threads > 0 ? cfg_.threads : omp_get_max_threads();
  parallel_ = cfg_.parallel;
  if (parallel_ == Parallel::automatic) parallel_ = cfg_.batch >= threads_ ? Parallel::data : Parallel::op;
  GDN_CHECK(parallel_ != Parallel::data || cfg_.batch >= threads_, "train: data parallelism gives each of the ",
            threads_, " threads at least one sequence of the batch, but the batch holds ", cfg_.batch,
            " (raise the batch, lower the threads, or use parallel \"op\")");
  if (parallel_ == Parallel::data && threads_ > 1) replicas_ = std::make_unique<DataParallel>(*model_, threads_);
  opt_ = std::make_unique<AdamW>(model_->params(), cfg_.adam);
  total_ = cfg_.total_steps(train_.n);
  if (cfg_.group_by_length) {
    GDN_CHECK(!model_cfg_.autoencoder(), "train: group_by_length cuts rows after their last label, but the ",
              "autoencoder head reads each row's last position");
    row_label_end_.resize(size_t(train_.n));
    for (int64_t i = 0; i < train_.n; ++i) row_label_end_[size_t(i)] = train_.label_end(i);
  }
}

// The epoch's order is drawn from (seed, epoch) alone, so a resumed run sees the same
// batches. With group_by_length the shuffled rows are dealt into batches of one length
// block (the rows left over from each block fill mixed batches) and the batches shuffled:
// still floor(n / batch) batches, each row at most once.
const std::vector<int64_t>& Trainer::epoch_order(int64_t epoch) {
  if (epoch == order_epoch_) return order_;
  order_.resize(train_.n);
  std::iota(order_.begin(), order_.end(), 0);
  nn::Rng rng(cfg_.seed * 0x9e3779b97f4a7c15ull + uint64_t(epoch) + 1);
  for (int64_t i = train_.n - 1; i > 0; --i) std::swap(order_[i], order_[rng.below(uint64_t(i + 1))]);
  order_epoch_ = epoch;
  if (!cfg_.group_by_length) return order_;
  const int B = cfg_.batch;
  std::vector<std::vector<int64_t>> by_block;
  for (int64_t row : order_) {
    const size_t block = size_t(row_label_end_[size_t(row)] + 63) / 64;
    if (by_block.size() <= block) by_block.resize(block + 1);
    by_block[block].push_back(row);
  }
  std::vector<std::vector<int64_t>> batches;
  std::vector<int64_t> rest;
  for (const auto& rows : by_block) {
    size_t i = 0;
    for (; i + size_t(B) <= rows.size(); i += size_t(B)) batches.emplace_back(rows.begin() + i, rows.begin() + i + B);
    rest.insert(rest.end(), rows.begin() + i, rows.end());
  }
  for (size_t i = 0; i + size_t(B) <= rest.size(); i += size_t(B))
    batches.emplace_back(rest.begin() + i, rest.begin() + i + B);
  for (size_t i = batches.size() - 1; i > 0; --i) std::swap(batches[i], batches[rng.below(uint64_t(i + 1))]);
  order_.clear();
  for (const auto& b : batches) order_.insert(order_.end(), b.begin(), b.end());
  return order_;
}

int Trainer::fill_batch(int64_t step, std::vector<int32_t>& ids, std::vector<int32_t>& labels) {
  const int64_t per_epoch = train_.n / cfg_.batch;
  const int64_t epoch = step / per_epoch, slot = step % per_epoch;
  const int64_t* rows = epoch_order(epoch).data() + slot * cfg_.batch;
  int L = train_.len;
  if (cfg_.group_by_length) {
    L = 1;
    for (int b = 0; b < cfg_.batch; ++b) L = std::max(L, row_label_end_[size_t(rows[b])]);
  }
  ids.resize(size_t(cfg_.batch) * L);
  labels.resize(ids.size());
  for (int b = 0; b < cfg_.batch; ++b) {
    std::copy_n(train_.input_row(rows[b]), L, ids.data() + size_t(b) * L);
    std::copy_n(train_.label_row(rows[b]), L, labels.data() + size_t(b) * L);
  }
  return L;
}

EvalResult Trainer::run() {
  // Data parallel: the replicas run on DataParallel's own threads, and OpenMP and OpenBLAS
  // keep to one (an OpenMP team for the optimizer would spin between steps).
  const int library_threads = parallel_ == Parallel::data ? 1 : threads_;
  const ThreadScope thread_scope(library_threads, library_threads);
  auto evaluate_now = [&] {
    return replicas_ ? evaluate(*replicas_, *eval_, cfg_.batch) : evaluate(*model_, *eval_, cfg_.batch);
  };
  std::vector<int32_t> ids, labels;
  const int64_t warmup = cfg_.warmup < 1 ? int64_t(cfg_.warmup * double(total_)) : int64_t(cfg_.warmup);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t first = step_;
  int64_t tokens = 0;
  train_seconds_ = 0;
  EvalResult last_eval;
  double ema_loss = NAN;
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  for (; step_ < total_;) {
    const auto step_t0 = std::chrono::steady_clock::now();
    const int len = fill_batch(step_, ids, labels);
    tokens += int64_t(cfg_.batch) * len;
    nn::LossStats st;
    if (replicas_) {
      st = replicas_->forward_backward(ids.data(), labels.data(), cfg_.batch, len);
    } else {
      model_->zero_grad();
      st = model_->forward(ids.data(), labels.data(), cfg_.batch, len);
      model_->backward();
    }
    GDN_CHECK(std::isfinite(st.loss), "training: the loss is not finite at step ", step_);
    StepLog rec;
    rec.step = step_;
    rec.loss = st.loss;
    rec.accuracy = st.count ? double(st.correct) / double(st.count) : 0;
    rec.grad_norm = clip_grad_norm(model_->params(), cfg_.clip);
    rec.lr = lr_at(step_, total_, warmup, cfg_.adam.lr, cfg_.min_lr_ratio);
    opt_->step(rec.lr);
    ++step_;
    train_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - step_t0).count();
    log_.push_back(rec);
    if (on_step) on_step(rec);
    ema_loss = std::isnan(ema_loss) ? rec.loss : 0.9 * ema_loss + 0.1 * rec.loss;
    const double secs = elapsed();
    tokens_per_s_ = double(tokens) / std::max(train_seconds_, 1e-9);
    if (!cfg_.checkpoint.empty() && cfg_.checkpoint_every > 0 && step_ % cfg_.checkpoint_every == 0 && step_ < total_)
      save(cfg_.checkpoint);
    const bool eval_now = eval_ && cfg_.eval_every > 0 && step_ % cfg_.eval_every == 0 && step_ < total_;
    if (eval_now) last_eval = evaluate_now();
    if (cfg_.progress) {
      const int width = 24, filled = int(double(step_) / double(total_) * width);
      const double eta = secs / double(step_ - first) * double(total_ - step_);
      std::string bar(size_t(filled), '#');
      bar.resize(width, '.');
      std::fprintf(stderr, "\r[%s] %lld/%lld loss %.4f acc %.3f %s%.0f tok/s ETA %s   ", bar.c_str(),
                   (long long)step_, (long long)total_, ema_loss, rec.accuracy,
                   eval_now ? cat("eval_acc ", last_eval.accuracy, " ").c_str() : "", tokens_per_s_,
                   format_seconds(eta).c_str());
      if (eval_now || step_ == total_) std::fprintf(stderr, "\n");
    }
  }
  if (!cfg_.checkpoint.empty()) save(cfg_.checkpoint);
  if (eval_) last_eval = evaluate_now();
  return last_eval;
}

void Trainer::save(const std::string& path) const {
  SafeTensorsWriter w;
  const auto& params = model_->params();
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, p] = params[i];
    w.add_f32(name, p->shape, p->value.data());
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, p] = params[i];
    const AdamW& opt = *opt_;
    w.add_f32("optimizer.exp_avg." + name, p->shape, opt.exp_avg(i).data());
    w.add_f32("optimizer.exp_avg_sq." + name, p->shape, opt.exp_avg_sq(i).data());
  }
  w.set_metadata("format", kFormat);
  w.set_metadata("model_config", model_cfg_.to_json().dump());
  w.set_metadata("train_config", cfg_.to_json().dump());
  w.set_metadata("step", std::to_string(step_));
  w.write(path);
}

namespace {
const std::string& meta(const SafeTensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  GDN_CHECK(it != f.metadata().end(), "checkpoint ", f.path(), ": metadata \"", key,
            "\" is missing (not a gdn checkpoint?)");
  return it->second;
}

nn::ModelConfig checkpoint_model_config(const SafeTensorsFile& f) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(meta(f, "model_config"));
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint ", f.path(), ": model_config metadata is not valid JSON");
  }
  return nn::ModelConfig::from_json(j);
}

void load_params(const SafeTensorsFile& f, const nn::ParamList<float>& params, const std::string& prefix = "") {
  for (const auto& [name, p] : params) {
    const std::string key = prefix + name;
    GDN_CHECK(f.has(key), "checkpoint ", f.path(), ": tensor ", key, " is missing");
    p->value = f.get_f32(key, p->shape);
    for (float x : p->value)
      GDN_CHECK(std::isfinite(x), "checkpoint ", f.path(), ": tensor ", key, " holds a non-finite value");
  }
}

// A checkpoint of the model `cfg`: its format and model config checked, its weights loaded
// into `params`.
SafeTensorsFile load_checkpoint_of(const std::string& path, const nn::ModelConfig& cfg,
                                   const nn::ParamList<float>& params) {
  SafeTensorsFile f = SafeTensorsFile::load(path);
  GDN_CHECK(meta(f, "format") == kFormat, "checkpoint ", path, ": format \"", meta(f, "format"), "\", expected ", kFormat);
  const nn::ModelConfig saved = checkpoint_model_config(f);
  GDN_CHECK(saved.to_json() == cfg.to_json(), "checkpoint ", path,
            ": its model config differs from this run's:\n  checkpoint ", saved.to_json().dump(), "\n  this run   ",
            cfg.to_json().dump());
  load_params(f, params);
  return f;
}
}  // namespace

void Trainer::init_from(const std::string& path) {
  GDN_CHECK(step_ == 0, "init_from: the run has already taken ", step_, " steps");
  load_checkpoint_of(path, model_cfg_, model_->params());
}

void Trainer::resume(const std::string& path) {
  const SafeTensorsFile f = load_checkpoint_of(path, model_cfg_, model_->params());
  const auto& params = model_->params();
  for (size_t i = 0; i < params.size(); ++i) {
    opt_->exp_avg(i) = f.get_f32("optimizer.exp_avg." + params[i].first, params[i].second->shape);
    opt_->exp_avg_sq(i) = f.get_f32("optimizer.exp_avg_sq." + params[i].first, params[i].second->shape);
  }
  try {
    step_ = std::stoll(meta(f, "step"));
  } catch (const std::exception&) {
    fail("checkpoint ", path, ": step metadata \"", meta(f, "step"), "\" is not an integer");
  }
  GDN_CHECK(step_ >= 0 && step_ <= total_, "checkpoint ", path, ": step ", step_, " is outside this run's 0..", total_);
  opt_->set_steps(step_);
}

std::unique_ptr<nn::Model<float>> load_model(const std::string& path) {
  const SafeTensorsFile f = SafeTensorsFile::load(path);
  auto model = std::make_unique<nn::Model<float>>(checkpoint_model_config(f), 0);
  load_params(f, model->params());
  return model;
}

}  // namespace gdn::train
