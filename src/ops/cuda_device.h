// Whether this build and this machine can run the CUDA kernels. Compiled in every build, so
// that `--device cuda` fails with a clear message where there is no CUDA.
#pragma once

#include <string>

#include "gdn/ops.h"

namespace gdn {

// Whether the CUDA kernels implement variant v (in any build), and the list of those that
// do, for messages.
bool cuda_has_kernel(Variant v);
std::string cuda_kernel_variants();

// True when this build has the CUDA kernels (nvcc was found when it was configured).
bool cuda_built();

// The name of CUDA device 0. Throws gdn::Error starting with `who` when this build has no
// CUDA kernels or no CUDA device is usable (the runtime's reason included).
std::string require_cuda_device(const std::string& who);

}  // namespace gdn
