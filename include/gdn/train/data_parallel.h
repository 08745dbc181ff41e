// Data parallelism inside one step, for models too small for threads inside a layer (at
// d_model 64 a GEMM or an op call is over before a thread team has woken up). The batch is
// cut into fixed contiguous shards of sequences; each thread runs forward and backward of
// one shard on its own replica of the model, single-threaded inside (OpenMP and OpenBLAS);
// the threads sleep between steps.
// Replicas read the master's parameter values at the start of every call, and their
// gradients are summed into the master in replica order, each weighted by its share of the
// batch's labelled positions: the result is the gradient of the mean loss over the whole
// batch, and a run is deterministic for a given replica count.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gdn/nn/model.h"

namespace gdn::train {

// How a training run uses its threads.
enum class Parallel {
  automatic,  // data when the batch holds at least one sequence per thread, else op
  data,       // one model replica per thread, each on a fixed shard of the batch
  op,         // threads inside each GEMM, layer loop and op call (OpenMP, OpenBLAS)
};
Parallel parse_parallel(const std::string& name);  // "auto", "data", "op"; throws gdn::Error
std::string to_string(Parallel p);

class DataParallel {
 public:
  // `master` is replica 0 (it must outlive this object); the other replicas are made here.
  DataParallel(nn::Model<float>& master, int replicas);
  ~DataParallel();

  int replicas() const { return int(replicas_.size()) + 1; }
  nn::Model<float>& master() { return master_; }

  // ids, labels [B, T]. Forward and backward over the shards; overwrites the master's
  // gradients with those of the mean loss over the whole batch's labelled positions and
  // returns the batch's loss, count and correct predictions.
  nn::LossStats forward_backward(const int32_t* ids, const int32_t* labels, int B, int T);
  // Forward only (evaluation): the whole batch's statistics.
  nn::LossStats forward(const int32_t* ids, const int32_t* labels, int B, int T);

 private:
  class Workers;
  nn::Model<float>& replica(int r);
  // Runs forward (and backward) of every non-empty shard on its replica, one per thread.
  void run_shards(const int32_t* ids, const int32_t* labels, int B, int T, bool backward);
  nn::LossStats batch_stats() const;
  void reduce_gradients();

  nn::Model<float>& master_;
  std::vector<std::unique_ptr<nn::Model<float>>> replicas_;  // replicas 1..R-1
  std::vector<nn::LossStats> shard_stats_;
  std::unique_ptr<Workers> workers_;  // replicas 1..R-1 run on these
};

}  // namespace gdn::train
