// Host-side helpers around the CUDA kernels: checked runtime calls, bf16 rounding, a device
// allocation that frees itself, uploads and downloads. Shared by the op runner, the benchmarks and the
// GPU check; compiled only when this build has CUDA.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "gdn/common.h"
#include "gdn/cuda_ops.h"

namespace gdn::cuda {

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw gdn::Error(gdn::cat(what, ": ", cudaGetErrorString(e)));
}
inline void status_check(const Status& s) {
  if (!s.ok()) throw gdn::Error(s.message.empty() ? cudaGetErrorString(s.code) : s.message);
}

// fp32 -> bf16 bits, round to nearest even (inputs here are finite).
inline uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf16_value(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
// A device allocation; poisoned with 0xFF bytes (NaN in fp32 and bf16) on request.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : bytes(n) {
    if (n) cuda_check(cudaMalloc(&ptr, n), "cudaMalloc");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr, o.bytes = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr, o.ptr);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  void poison() { cuda_check(cudaMemset(ptr, 0xFF, bytes), "cudaMemset"); }
  template <class T>
  T* as() const { return static_cast<T*>(ptr); }
};

template <class T>
DeviceBuffer upload_vector(const std::vector<T>& x) {
  DeviceBuffer b(x.size() * sizeof(T));
  if (b.bytes) cuda_check(cudaMemcpy(b.ptr, x.data(), b.bytes, cudaMemcpyHostToDevice), "upload");
  return b;
}

template <class T>
std::vector<T> download_vector(const DeviceBuffer& b, size_t n) {
  std::vector<T> x(n);
  if (n) cuda_check(cudaMemcpy(x.data(), b.ptr, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
  return x;
}

}  // namespace gdn::cuda
