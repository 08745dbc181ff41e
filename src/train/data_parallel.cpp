#include "gdn/train/data_parallel.h"

#include <cblas.h>
#include <omp.h>

#include <exception>

#include "gdn/common.h"

namespace gdn::train {

Parallel parse_parallel(const std::string& name) {
  if (name == "auto") return Parallel::automatic;
  if (name == "data") return Parallel::data;
  if (name == "op") return Parallel::op;
  fail("parallel: unknown mode \"", name, "\" (expected auto, data or op)");
}

std::string to_string(Parallel p) {
  switch (p) {
    case Parallel::automatic: return "auto";
    case Parallel::data: return "data";
    case Parallel::op: return "op";
  }
  return "?";
}

namespace {

// OpenBLAS (Debian's pthread build) would start its own threads inside every replica's
// GEMM; one thread each while the replicas run.
class OneBlasThread {
 public:
  OneBlasThread() : saved_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~OneBlasThread() { openblas_set_num_threads(saved_); }
  OneBlasThread(const OneBlasThread&) = delete;
  OneBlasThread& operator=(const OneBlasThread&) = delete;

 private:
  int saved_;
};

}  // namespace

DataParallel::DataParallel(nn::Model<float>& master, int replicas) : master_(master) {
  GDN_CHECK(replicas >= 1, "data parallel: the replica count must be >= 1, got ", replicas);
  // Their initial values are irrelevant: every call copies the master's in first.
  for (int r = 1; r < replicas; ++r) replicas_.push_back(std::make_unique<nn::Model<float>>(master.config(), 0));
}

DataParallel::~DataParallel() = default;

void DataParallel::run_shards(const int32_t* ids, const int32_t* labels, int B, int T, bool backward) {
  GDN_CHECK(B > 0 && T > 0, "data parallel: batch and sequence length must be positive, got B=", B, " T=", T);
  const int R = replicas();
  shard_stats_.assign(R, {});
  std::vector<std::exception_ptr> errors(R);
  const OneBlasThread one_blas_thread;
#pragma omp parallel num_threads(R)
  {
    omp_set_num_threads(1);  // this thread's nested regions (layers, the op) stay on it
    // Replica r does not depend on the thread that runs it (fewer threads than asked for
    // run several replicas one after the other).
#pragma omp for schedule(static, 1)
    for (int r = 0; r < R; ++r) {
      const int b0 = int(int64_t(B) * r / R), b1 = int(int64_t(B) * (r + 1) / R);
      if (b0 == b1) continue;
      try {
        nn::Model<float>& m = r == 0 ? master_ : *replicas_[r - 1];
        if (r > 0) {
          const auto &from = master_.params(), &to = m.params();
          for (size_t i = 0; i < from.size(); ++i) to[i].second->value = from[i].second->value;
        }
        const size_t offset = size_t(b0) * T;
        if (backward) m.zero_grad();
        shard_stats_[r] = m.forward(ids + offset, labels + offset, b1 - b0, T);
        if (backward) m.backward();
      } catch (...) {
        errors[r] = std::current_exception();
      }
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

nn::LossStats DataParallel::batch_stats() const {
  nn::LossStats st;
  double loss_sum = 0;
  for (const auto& s : shard_stats_) {
    loss_sum += s.loss * double(s.count);
    st.count += s.count;
    st.correct += s.correct;
  }
  if (st.count > 0) st.loss = loss_sum / double(st.count);
  return st;
}

// master.grad = sum over replicas r in order of (count_r / count) * grad_r: each replica
// holds the gradient of its shard's mean loss. Replicas without labels (or without rows)
// hold no gradient and are left out.
void DataParallel::reduce_gradients() {
  const int64_t total = batch_stats().count;
  std::vector<const nn::ParamList<float>*> from;
  std::vector<float> weight;
  for (int r = 0; r < replicas(); ++r)
    if (shard_stats_[r].count > 0) {
      from.push_back(&(r == 0 ? master_ : *replicas_[r - 1]).params());
      weight.push_back(float(double(shard_stats_[r].count) / double(total)));
    }
  const nn::ParamList<float>& params = master_.params();
  const size_t sources = from.size();
#pragma omp parallel num_threads(replicas())
  {
    std::vector<const float*> src(sources);
    for (size_t i = 0; i < params.size(); ++i) {
      for (size_t k = 0; k < sources; ++k) src[k] = (*from[k])[i].second->grad.data();
      float* out = params[i].second->grad.data();  // may be src[0]: read before written
      const int64_t n = int64_t(params[i].second->numel());
#pragma omp for schedule(static) nowait
      for (int64_t j = 0; j < n; ++j) {
        float acc = 0;
        for (size_t k = 0; k < sources; ++k) acc += weight[k] * src[k][j];
        out[j] = acc;
      }
    }
  }
}

nn::LossStats DataParallel::forward_backward(const int32_t* ids, const int32_t* labels, int B, int T) {
  run_shards(ids, labels, B, T, true);
  reduce_gradients();
  return batch_stats();
}

nn::LossStats DataParallel::forward(const int32_t* ids, const int32_t* labels, int B, int T) {
  run_shards(ids, labels, B, T, false);
  return batch_stats();
}

}  // namespace gdn::train
