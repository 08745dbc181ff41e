// `gdn bench ops`: the op's speed against this machine's ceiling, measured in one run.
//
// One run measures sgemm (OpenBLAS, the ceiling a matrix-product algorithm can reach),
// the chunkwise forward and forward + backward of one variant (GFLOP/s from the FLOP
// counts of gdn/flops.h, formulas in src/ops/flops.cpp), and the recurrent form, so that
// every ratio it reports comes from the same machine state. Times are medians over
// `repeats` runs after `warmup` runs.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "gdn/ops.h"

namespace gdn::bench {

struct OpsBenchOptions {
  std::string device = "cpu";  // the only one for now; a GPU backend adds its own
  int threads = 2;
  int repeats = 5;
  int warmup = 1;
  int sgemm_n = 2048;    // M = N = K
  bool backward = true;  // also time forward + backward
  bool recurrent_backward = true;
  OpConfig cfg = default_config();

  // The shape the targets are stated for: B=1, T=4096, H=16, K=V=128.
  static OpConfig default_config();
};

struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int runs = 0;
};

// Progress lines go to `progress` (stderr in the CLI). Returns the JSON record; chunk
// figures are null when this build has no chunk form.
nlohmann::json run_ops_bench(const OpsBenchOptions& opt, const std::function<void(const std::string&)>& progress);

// A human-readable table of a record from run_ops_bench.
std::string format_ops_bench(const nlohmann::json& record);

// The CPU model from /proc/cpuinfo ("unknown" elsewhere).
std::string cpu_model();

// Sets the OpenMP and OpenBLAS thread counts.
void set_threads(int n);

}  // namespace gdn::bench
