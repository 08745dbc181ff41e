// Device buffers and bf16 rounding shared by the GPU check and benchmark.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "gdn/common.h"
#include "gdn/cuda_ops.h"

namespace gdn::gpu {

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw gdn::Error(gdn::cat(what, ": ", cudaGetErrorString(e)));
}
inline void status_check(const gdn::cuda::Status& s) {
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
inline double round_bf16(double x) { return bf16_value(bf16_bits(float(x))); }

// Uniform values in [-scale, scale) from a splitmix64 stream: fast enough for the
// gigabyte-sized state pools of the decode check and benchmark.
inline void fill_uniform(std::vector<float>& x, uint64_t seed, float scale) {
  uint64_t s = seed;
  for (auto& e : x) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    e = scale * (float(z >> 40) * (2.f / 16777216.f) - 1.f);
  }
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

// Uploads doubles as fp32 or bf16.
inline DeviceBuffer upload(const std::vector<double>& x, gdn::cuda::DType t) {
  if (t == gdn::cuda::DType::f32) {
    std::vector<float> f(x.begin(), x.end());
    DeviceBuffer b(f.size() * 4);
    cuda_check(cudaMemcpy(b.ptr, f.data(), b.bytes, cudaMemcpyHostToDevice), "upload");
    return b;
  }
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = bf16_bits(float(x[i]));
  DeviceBuffer b(h.size() * 2);
  cuda_check(cudaMemcpy(b.ptr, h.data(), b.bytes, cudaMemcpyHostToDevice), "upload");
  return b;
}

inline std::vector<double> download(const DeviceBuffer& b, size_t n, gdn::cuda::DType t) {
  std::vector<double> out(n);
  if (t == gdn::cuda::DType::f32) {
    std::vector<float> f(n);
    cuda_check(cudaMemcpy(f.data(), b.ptr, n * 4, cudaMemcpyDeviceToHost), "download");
    for (size_t i = 0; i < n; ++i) out[i] = f[i];
  } else {
    std::vector<uint16_t> h(n);
    cuda_check(cudaMemcpy(h.data(), b.ptr, n * 2, cudaMemcpyDeviceToHost), "download");
    for (size_t i = 0; i < n; ++i) out[i] = bf16_value(h[i]);
  }
  return out;
}

}  // namespace gdn::gpu
