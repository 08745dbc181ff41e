// See cuda_device.h.
#include "ops/cuda_device.h"

#include "gdn/common.h"

#if GDN_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace gdn {

bool cuda_built() {
#if GDN_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::string require_cuda_device(const std::string& who) {
#if GDN_HAVE_CUDA
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it: later calls of this process must not report it again
    fail(who, ": no usable CUDA device on this machine (", cudaGetErrorString(e), ")");
  }
  GDN_CHECK(count > 0, who, ": no CUDA device on this machine");
  cudaDeviceProp prop;
  const cudaError_t p = cudaGetDeviceProperties(&prop, 0);
  GDN_CHECK(p == cudaSuccess, who, ": cannot read CUDA device 0 (", cudaGetErrorString(p), ")");
  return prop.name;
#else
  fail(who, ": this build of gdn has no CUDA kernels (nvcc was not found when it was configured; "
       "rebuild with the CUDA toolkit installed)");
#endif
}

}  // namespace gdn
