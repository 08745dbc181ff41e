// The clean L2 flush of timing.h: every 16-byte word of the buffer is loaded (cached in L2) and
// folded into one value that is stored only if it equals a pattern the memset buffer never holds,
// so the compiler keeps the loads and the kernel writes nothing.
#include "timing.h"

#include "chunk_plan.cuh"

namespace gdn::cuda {
namespace {

__global__ void read_through_l2_kernel(const uint4* p, size_t n, unsigned* never_written) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 w = p[i];
    acc ^= w.x ^ w.y ^ w.z ^ w.w;
  }
  if (acc == 0x9e3779b9u) *never_written = acc;
}

}  // namespace

void read_through_l2(const void* p, size_t bytes, cudaStream_t stream) {
  int sms = 0;
  status_check(detail::current_sm_count(sms));
  read_through_l2_kernel<<<sms * 4, 512, 0, stream>>>(static_cast<const uint4*>(p), bytes / sizeof(uint4),
                                                      static_cast<unsigned*>(const_cast<void*>(p)));
  cuda_check(cudaGetLastError(), "read_through_l2_kernel");
}

}  // namespace gdn::cuda
