// Wall time spent in the delta-rule op and in GEMMs, summed over the process (for the
// training-throughput breakdown; off by default, two clock reads per call when on).
#pragma once

#include <atomic>
#include <chrono>

namespace gdn::nn {

struct Profile {
  std::atomic<bool> enabled{false};
  std::atomic<int64_t> op_ns{0}, gemm_ns{0};
  void reset() {
    op_ns = 0;
    gemm_ns = 0;
  }
};
Profile& profile();

// Adds the lifetime of the scope to one counter when profiling is on.
class ProfileScope {
 public:
  explicit ProfileScope(std::atomic<int64_t>& counter) : counter_(profile().enabled ? &counter : nullptr) {
    if (counter_) t0_ = std::chrono::steady_clock::now();
  }
  ~ProfileScope() {
    if (counter_)
      *counter_ += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0_).count();
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  std::atomic<int64_t>* counter_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace gdn::nn
