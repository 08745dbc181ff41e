// Timing on the device: CUDA-event medians after warm-up and an L2 flush (as
// triton.testing.do_bench takes them, so that our kernels and FLA's are timed alike), and the
// device-to-device copy bandwidth that memory-bound kernels are compared with in the same run.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "device_memory.h"

namespace gdn::cuda {

// How the L2 is emptied before each timed call.
//  clean: a 256 MiB buffer is read through the L2, which then holds only clean lines: the timed
//    call's misses evict them for free, so it is charged its own DRAM traffic and nothing else.
//  dirty: the buffer is memset, as triton.testing.do_bench (and nvbench) flush: the L2 is left full
//    of dirty lines (50 MB on an H200) that the timed call writes back as it evicts them. That is
//    1% of a 4 GB kernel's traffic but a third of a 134 MB decode step's.
enum class L2Flush { clean, dirty };

// Reads `bytes` of p through the L2 (a kernel of timing.cu; its result is never used).
void read_through_l2(const void* p, size_t bytes, cudaStream_t stream);

// Median of `reps` timings of fn on the default stream, in ms, measured the way
// triton.testing.do_bench measures FLA (fla_bench.py uses the same flush): `warmup` untimed
// calls first; before each timed call the L2 is flushed (no call reads what the previous one
// left there); the calls are queued without waiting for each other (one synchronisation at the
// end), so the launch latency is hidden behind the flush as it is in a model's stream of kernels.
inline double event_median_ms(const std::function<void()>& fn, int warmup, int reps,
                              L2Flush flush_mode = L2Flush::clean) {
  DeviceBuffer flush(size_t(256) << 20);
  cuda_check(cudaMemset(flush.ptr, 0, flush.bytes), "cudaMemset");
  std::vector<cudaEvent_t> start(std::max(reps, 1)), stop(start.size());
  for (size_t i = 0; i < start.size(); ++i) {
    cuda_check(cudaEventCreate(&start[i]), "cudaEventCreate");
    cuda_check(cudaEventCreate(&stop[i]), "cudaEventCreate");
  }
  for (int i = 0; i < warmup; ++i) fn();
  for (size_t i = 0; i < start.size(); ++i) {
    if (flush_mode == L2Flush::dirty)
      cuda_check(cudaMemsetAsync(flush.ptr, 0, flush.bytes), "cudaMemsetAsync");
    else
      read_through_l2(flush.ptr, flush.bytes, nullptr);
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

// The time of a device-to-device copy reading `bytes` and writing `bytes`, in ms.
inline double copy_ms(size_t bytes, L2Flush flush_mode = L2Flush::clean) {
  DeviceBuffer src(bytes), dst(bytes);
  cuda_check(cudaMemset(src.ptr, 1, bytes), "cudaMemset");
  return event_median_ms(
      [&] { cuda_check(cudaMemcpyAsync(dst.ptr, src.ptr, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync"); }, 3,
      20, flush_mode);
}

// Bytes read + written per second by a device-to-device copy of 1 GiB (median of 20).
inline double copy_bandwidth() {
  const size_t bytes = size_t(1) << 30;
  return 2.0 * bytes / (copy_ms(bytes) * 1e-3);
}

}  // namespace gdn::cuda
