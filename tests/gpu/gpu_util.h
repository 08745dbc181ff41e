// Test data for the GPU check and benchmark (device buffers and 16-bit rounding come from
// src/ops/cuda/device_memory.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gdn/common.h"
#include "gdn/cuda_ops.h"
#include "../../src/ops/cuda/device_memory.h"

namespace gdn::gpu {

using gdn::cuda::cuda_check;
using gdn::cuda::DeviceBuffer;
using gdn::cuda::half_bits;
using gdn::cuda::half_value;
using gdn::cuda::status_check;

// x as a kernel with inputs of type t sees it.
inline double round_to(double x, gdn::cuda::DType t) { return gdn::cuda::round_to(t, float(x)); }

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

// Uploads doubles as fp32, bf16 or fp16.
inline DeviceBuffer upload(const std::vector<double>& x, gdn::cuda::DType t) {
  if (t == gdn::cuda::DType::f32) {
    std::vector<float> f(x.begin(), x.end());
    DeviceBuffer b(f.size() * 4);
    cuda_check(cudaMemcpy(b.ptr, f.data(), b.bytes, cudaMemcpyHostToDevice), "upload");
    return b;
  }
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = half_bits(t, float(x[i]));
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
    for (size_t i = 0; i < n; ++i) out[i] = half_value(t, h[i]);
  }
  return out;
}

}  // namespace gdn::gpu
