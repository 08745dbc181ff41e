#include "gdn/train/data_parallel.h"

#include <cblas.h>
#include <omp.h>

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

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

// OpenMP and OpenBLAS (Debian's pthread build) would start their own threads inside every
// replica; one thread each for the calling thread while the replicas run.
class SingleThreadedLibraries {
 public:
  SingleThreadedLibraries() : omp_(omp_get_max_threads()), blas_(openblas_get_num_threads()) {
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
  }
  ~SingleThreadedLibraries() {
    omp_set_num_threads(omp_);
    openblas_set_num_threads(blas_);
  }
  SingleThreadedLibraries(const SingleThreadedLibraries&) = delete;
  SingleThreadedLibraries& operator=(const SingleThreadedLibraries&) = delete;

 private:
  int omp_, blas_;
};

}  // namespace

// Threads that sleep between calls. An OpenMP team spins while it waits; on a machine
// shared with other work the spinning thread takes the core that the serial part of a step
// (optimizer, next batch) needs: measured 0.6x of one thread's speed instead of 1x.
class DataParallel::Workers {
 public:
  explicit Workers(int n) {
    for (int i = 1; i <= n; ++i) threads_.emplace_back([this, i] { serve(i); });
  }
  ~Workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    start_.notify_all();
    for (auto& t : threads_) t.join();
  }
  // Runs job(i) for i = 0..n, 0 on the calling thread; returns when every call has.
  // `job` must not throw.
  void run(const std::function<void(int)>& job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      pending_ = threads_.size();
      ++generation_;
    }
    start_.notify_all();
    job(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void serve(int i) {
    omp_set_num_threads(1);  // this thread's OpenMP regions (layers, the op) stay on it
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        start_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      (*job)(i);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable start_, done_;
  const std::function<void(int)>* job_ = nullptr;
  size_t pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

DataParallel::DataParallel(nn::Model<float>& master, int replicas) : master_(master) {
  GDN_CHECK(replicas >= 1, "data parallel: the replica count must be >= 1, got ", replicas);
  // Their initial values are irrelevant: every call copies the master's in first.
  for (int r = 1; r < replicas; ++r) replicas_.push_back(std::make_unique<nn::Model<float>>(master.config(), 0));
  workers_ = std::make_unique<Workers>(replicas - 1);
}

DataParallel::~DataParallel() = default;

nn::Model<float>& DataParallel::replica(int r) { return r == 0 ? master_ : *replicas_[r - 1]; }

void DataParallel::run_shards(const int32_t* ids, const int32_t* labels, int B, int T, bool backward) {
  GDN_CHECK(B > 0 && T > 0, "data parallel: batch and sequence length must be positive, got B=", B, " T=", T);
  const int R = replicas();
  shard_stats_.assign(R, {});
  std::vector<std::exception_ptr> errors(R);
  const SingleThreadedLibraries single_threaded;
  workers_->run([&](int r) {
    const int b0 = int(int64_t(B) * r / R), b1 = int(int64_t(B) * (r + 1) / R);
    if (b0 == b1) return;
    try {
      nn::Model<float>& m = replica(r);
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
  });
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
      from.push_back(&replica(r).params());
      weight.push_back(float(double(shard_stats_[r].count) / double(total)));
    }
  const nn::ParamList<float>& params = master_.params();
  const size_t sources = from.size();
  const int R = replicas();
  // Thread t sums its slice of every parameter: each element in replica order.
  workers_->run([&](int t) {
    std::vector<const float*> src(sources);
    for (size_t i = 0; i < params.size(); ++i) {
      for (size_t k = 0; k < sources; ++k) src[k] = (*from[k])[i].second->grad.data();
      float* out = params[i].second->grad.data();  // may be src[0]: read before written
      const size_t n = params[i].second->numel(), j0 = n * t / R, j1 = n * (t + 1) / R;
      for (size_t j = j0; j < j1; ++j) {
        float acc = 0;
        for (size_t k = 0; k < sources; ++k) acc += weight[k] * src[k][j];
        out[j] = acc;
      }
    }
  });
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
