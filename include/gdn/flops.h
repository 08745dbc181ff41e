// Floating-point operation counts of the chunkwise form's algorithm, for benchmarks
// (GFLOP/s against the machine's sgemm rate). The formulas are in src/ops/flops.cpp.
#pragma once

#include "gdn/ops.h"

namespace gdn {

double chunk_forward_flops(const OpConfig& cfg);
// The backward alone (it recomputes the forward's chunk states itself).
double chunk_backward_flops(const OpConfig& cfg);

}  // namespace gdn
