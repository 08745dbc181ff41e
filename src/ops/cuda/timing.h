// Timing on the device: CUDA-event medians after warm-up (as triton.testing.do_bench takes
// them, so that our kernels and FLA's are timed alike), and the device-to-device copy
// bandwidth that memory-bound kernels are compared with in the same run.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "device_memory.h"

namespace gdn::cuda {

// Median of `reps` timings of fn on the default stream, in ms, measured the way
// triton.testing.do_bench measures FLA: `warmup` untimed calls first; before each timed call a
// 256 MiB memset evicts L2 (no call reads what the previous one left there); the calls are
// queued without waiting for each other (one synchronisation at the end), so the launch
// latency is hidden behind the memset as it is in a model's stream of kernels.
inline double event_median_ms(const std::function<void()>& fn, int warmup, int reps) {
  DeviceBuffer flush(size_t(256) << 20);
  std::vector<cudaEvent_t> start(std::max(reps, 1)), stop(start.size());
  for (size_t i = 0; i < start.size(); ++i) {
    cuda_check(cudaEventCreate(&start[i]), "cudaEventCreate");
    cuda_check(cudaEventCreate(&stop[i]), "cudaEventCreate");
  }
  for (int i = 0; i < warmup; ++i) fn();
  for (size_t i = 0; i < start.size(); ++i) {
    cuda_check(cudaMemsetAsync(flush.ptr, 0, flush.bytes), "cudaMemsetAsync");
    cuda_check(cudaEventRecord(start[i]), "cudaEventRecord");
    fn();
    cuda_check(cudaEventRecord(stop[i]), "cudaEventRecord");
  }
  cuda_check(cudaEventSynchronize(stop.back()), "cudaEventSynchronize");
  std::vector<float> t(start.size());
  for (size_t i = 0; i < t.size(); ++i) {
    cuda_check(cudaEventElapsedTime(&t[i], start[i], stop[i]), "cudaEventElapsedTime");
    cudaEventDestroy(start[i]);
    cudaEventDestroy(stop[i]);
  }
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
