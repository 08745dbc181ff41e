// Whether this build and this machine can run the CUDA kernels. Compiled in every build, so
// that `--device cuda` fails with a clear message where there is no CUDA.
#pragma once

#include <string>

namespace gdn {

// True when this build has the CUDA kernels (nvcc was found when it was configured).
bool cuda_built();

// The name of CUDA device 0. Throws gdn::Error starting with `who` when this build has no
// CUDA kernels or no CUDA device is usable (the runtime's reason included).
std::string require_cuda_device(const std::string& who);

}  // namespace gdn
