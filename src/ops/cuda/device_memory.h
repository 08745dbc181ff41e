// Host-side helpers around the CUDA kernels: checked runtime calls, bf16 rounding, a device
// allocation that frees itself, uploads and downloads. Shared by the op runner, the benchmarks and the
// GPU check; compiled only when this build has CUDA.
#pragma once

#include <cuda_fp16.h>
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
// 16-bit storage of x for a 16-bit DType (bf16 as above; fp16 by CUDA's host conversion, round
// to nearest even), and back; x as the kernels see it after a round trip through t.
inline uint16_t half_bits(DType t, float x) {
  return t == DType::bf16 ? bf16_bits(x) : __half_as_ushort(__float2half_rn(x));
}
inline float half_value(DType t, uint16_t b) {
  return t == DType::bf16 ? bf16_value(b) : __half2float(__ushort_as_half(b));
}
inline float round_to(DType t, float x) { return t == DType::f32 ? x : half_value(t, half_bits(t, x)); }
inline size_t element_bytes(DType t) { return t == DType::f32 ? 4 : 2; }
inline const char* dtype_name(DType t) { return t == DType::f32 ? "fp32" : t == DType::bf16 ? "bf16" : "fp16"; }

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
