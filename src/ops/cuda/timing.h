// Timing on the device: CUDA-event medians after warm-up, and the device-to-device copy
// bandwidth that memory-bound kernels are compared with in the same run.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "device_memory.h"

namespace gdn::cuda {

// Median of `reps` timings of fn on the default stream (each between two events) after
// `warmup` untimed calls, in ms.
inline double event_median_ms(const std::function<void()>& fn, int warmup, int reps) {
  cudaEvent_t a, b;
  cuda_check(cudaEventCreate(&a), "cudaEventCreate");
  cuda_check(cudaEventCreate(&b), "cudaEventCreate");
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<float> t(std::max(reps, 1));
  for (float& ms : t) {
    cuda_check(cudaEventRecord(a), "cudaEventRecord");
    fn();
    cuda_check(cudaEventRecord(b), "cudaEventRecord");
    cuda_check(cudaEventSynchronize(b), "cudaEventSynchronize");
    cuda_check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Bytes read + written per second by cudaMemcpy device-to-device of 1 GiB (median of 20).
inline double copy_bandwidth() {
  const size_t bytes = size_t(1) << 30;
  DeviceBuffer src(bytes), dst(bytes);
  cuda_check(cudaMemset(src.ptr, 1, bytes), "cudaMemset");
  const double ms = event_median_ms(
      [&] { cuda_check(cudaMemcpyAsync(dst.ptr, src.ptr, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync"); }, 3,
      20);
  return 2.0 * bytes / (ms * 1e-3);
}

}  // namespace gdn::cuda
