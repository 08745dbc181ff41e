// See cuda_device.h.
#include "ops/cuda_device.h"

#include "gdn/common.h"

#if GDN_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace gdn {

namespace {
// RetNet's fixed gates and Longhorn's update have no kernel (yet).
constexpr Variant kCudaVariants[] = {Variant::gated_deltanet, Variant::deltanet, Variant::kda,
                                     Variant::mamba2,         Variant::linear_attention, Variant::gla};
}  // namespace

bool cuda_has_kernel(Variant v) {
  for (Variant k : kCudaVariants)
    if (k == v) return true;
  return false;
}

std::string cuda_kernel_variants() {
  std::string s;
  for (Variant k : kCudaVariants) s += cat(s.empty() ? "" : ", ", variant_info(k).name);
  return s;
}

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
