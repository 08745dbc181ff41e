// How an op variant maps onto the CUDA kernels' template parameters, and which of g and
// beta it passes (a tensor the variant ignores stays on the host). CUDA builds only.
#pragma once

#include "gdn/cuda_ops.h"
#include "gdn/ops.h"

namespace gdn::cuda {

struct KernelVariant {
  Update update;
  Gate gate;
  bool gated, delta;
  explicit KernelVariant(Variant v)
      : update(variant_info(v).delta ? Update::delta : Update::additive),
        gate(variant_info(v).gate == GateKind::vector ? Gate::vector : Gate::scalar),
        gated(variant_info(v).gate != GateKind::none),
        delta(variant_info(v).delta) {}
};

}  // namespace gdn::cuda
