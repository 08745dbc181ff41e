// Host-side plan shared by the chunk kernels: the chunk table of a (possibly varlen) batch
// and the layout of the workspace.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

#include "gdn/common.h"
#include "gdn/cuda_ops.h"
#include "tile.cuh"

namespace gdn::cuda::detail {

// Per sequence: flat token range [bos, eos) and the global index of its first chunk.
struct SeqInfo {
  int bos, eos, first_chunk, pad;
};

// Chunks of sequence s, and the tokens in chunk ci (its index within s).
__host__ __device__ __forceinline__ int chunk_count(const SeqInfo& s) { return (s.eos - s.bos + kChunk - 1) / kChunk; }
__device__ __forceinline__ int chunk_len(const SeqInfo& s, int ci) { return min(kChunk, s.eos - (s.bos + kChunk * ci)); }

// Where chunk `c` (global index) lives: its sequence and its flat token range.
struct ChunkRef {
  int seq, start, len;
};
__device__ __forceinline__ ChunkRef chunk_ref(const SeqInfo* seqs, const int* chunk_seq, int c) {
  const int n = chunk_seq[c];
  const SeqInfo s = seqs[n];
  return {n, s.bos + kChunk * (c - s.first_chunk), chunk_len(s, c - s.first_chunk)};
}

inline Status error_status(cudaError_t e, const char* what) {
  return {e, gdn::cat(what, ": ", cudaGetErrorString(e))};
}
inline Status bad_input(std::string m) { return {cudaErrorInvalidValue, std::move(m)}; }

#define GDN_CUDA_TRY(call)                                              \
  do {                                                                  \
    cudaError_t e_ = (call);                                            \
    if (e_ != cudaSuccess) return ::gdn::cuda::detail::error_status(e_, #call); \
  } while (0)
#define GDN_CUDA_LAUNCHED(name)                                         \
  do {                                                                  \
    cudaError_t e_ = cudaGetLastError();                                \
    if (e_ != cudaSuccess) return ::gdn::cuda::detail::error_status(e_, name); \
  } while (0)

// The number of SMs of the current device.
inline Status current_sm_count(int& sms) {
  int device = 0;
  GDN_CUDA_TRY(cudaGetDevice(&device));
  GDN_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return {};
}

// The update rule as a compile-time kernel parameter: the delta rule's stages (A, W, U and
// their gradients) are compiled only into its kernels.
template <Update U>
using UpdateTag = std::integral_constant<Update, U>;
template <Update U>
constexpr bool kDelta = U == Update::delta;

// The gate kind likewise: the vector gate's stages (per-dimension decays, the sub-chunked
// gated products of gate.cuh) are compiled only into its kernels.
template <Gate G>
using GateTag = std::integral_constant<Gate, G>;
template <Gate G>
constexpr bool kVector = G == Gate::vector;

// Calls f(T{}) with the element type T (float, bf16 or f16) of `t`.
template <class F>
auto with_element_type(DType t, F&& f) {
  if (t == DType::f32) return f(float{});
  return t == DType::bf16 ? f(bf16{}) : f(f16{});
}

// Calls f(T{}, UpdateTag<U>{}, GateTag<G>{}) with the element type T, update rule U and gate
// kind G that a shape asks for.
template <class F>
auto dispatch(DType t, Update u, Gate g, F&& f) {
  auto with_type = [&](auto type) {
    using D = UpdateTag<Update::delta>;
    using A = UpdateTag<Update::additive>;
    using S = GateTag<Gate::scalar>;
    using V = GateTag<Gate::vector>;
    if (u == Update::delta) return g == Gate::scalar ? f(type, D{}, S{}) : f(type, D{}, V{});
    return g == Gate::scalar ? f(type, A{}, S{}) : f(type, A{}, V{});
  };
  return with_element_type(t, with_type);
}

// A shared-memory member that only some kernel variants have: X when `present`, else an empty
// 16-byte placeholder (keeping the next member's cp.async alignment).
struct alignas(16) Absent {};
template <bool present, class X>
using Only = std::conditional_t<present, X, Absent>;

// "" when `beta` (or dbeta) is given exactly when the update rule uses it, else the error.
inline std::string beta_error(const char* fn, Update u, const void* beta, const char* name) {
  if (u == Update::delta && !beta) return gdn::cat(fn, ": the delta rule needs ", name);
  if (u == Update::additive && beta) return gdn::cat(fn, ": the additive rule takes no ", name, " (pass null)");
  return "";
}

// "" when g is given as the gate kind needs it (the vector gate cannot be absent), else the error.
inline std::string gate_error(const char* fn, Gate gate, const void* g) {
  if (gate == Gate::vector && !g) return gdn::cat(fn, ": the vector gate needs g [B,T,HV,K] (GLA, KDA)");
  return "";
}

// "" when every tensor the kernels copy by cp.async (`names`) starts on a 16-byte boundary, else
// the error. Row starts are then aligned too: rows are 128 elements.
inline std::string alignment_error(const char* fn, const char* names, std::initializer_list<const void*> tensors) {
  for (const void* t : tensors)
    if (reinterpret_cast<uintptr_t>(t) % 16 != 0)
      return gdn::cat(fn, ": ", names, " must be 16-byte aligned (the kernels copy them by cp.async)");
  return "";
}

// Bump allocator over the caller's workspace; sizes round up to 256 bytes.
struct Carve {
  char* base;
  size_t used = 0;
  template <class T>
  T* take(size_t count) {
    T* p = reinterpret_cast<T*>(base ? base + used : nullptr);
    used += (count * sizeof(T) + 255) / 256 * 256;
    return p;
  }
};

struct ChunkPlan {
  int N = 0, NC = 0;  // sequences, chunks
  int longest = 0;    // the most chunks of one sequence
  std::vector<SeqInfo> seqs;
  std::vector<int> chunk_seq;
  float scale = 0.f;
  std::string error;  // non-empty when the shape is not supported

  explicit ChunkPlan(const ChunkShape& s) {
    if (s.K != kDim || s.V != kDim) {
      error = gdn::cat("gdn::cuda: K and V must be ", kDim, " (got K=", s.K, ", V=", s.V, ")");
      return;
    }
    if (s.H <= 0 || s.HV <= 0 || s.HV % s.H != 0) {
      error = gdn::cat("gdn::cuda: HV (", s.HV, ") must be a positive multiple of H (", s.H, ")");
      return;
    }
    if (s.T <= 0 || s.B <= 0) {
      error = gdn::cat("gdn::cuda: B and T must be positive (got B=", s.B, ", T=", s.T, ")");
      return;
    }
    scale = s.scale > 0.f ? s.scale : 1.f / std::sqrt(float(s.K));
    if (s.cu_seqlens) {
      if (s.B != 1) {
        error = gdn::cat("gdn::cuda: cu_seqlens needs B == 1 (got B=", s.B, ")");
        return;
      }
      N = s.num_seqs;
      if (N <= 0 || s.cu_seqlens[0] != 0 || s.cu_seqlens[N] != s.T) {
        error = gdn::cat("gdn::cuda: cu_seqlens must have num_seqs + 1 entries from 0 to T=", s.T);
        return;
      }
    } else {
      N = s.B;
    }
    for (int n = 0; n < N; ++n) {
      const int bos = s.cu_seqlens ? s.cu_seqlens[n] : n * s.T;
      const int eos = s.cu_seqlens ? s.cu_seqlens[n + 1] : (n + 1) * s.T;
      if (eos < bos) {
        error = gdn::cat("gdn::cuda: cu_seqlens must not decrease (entry ", n + 1, ")");
        return;
      }
      seqs.push_back({bos, eos, NC, 0});
      const int chunks = (eos - bos + kChunk - 1) / kChunk;
      for (int c = 0; c < chunks; ++c) chunk_seq.push_back(n);
      NC += chunks;
      longest = std::max(longest, chunks);
    }
  }
};

// The plan's chunks (global indices) in the order of a sequential pass's steps: every sequence's
// first chunk, then every second, ... (sequences that have ended drop out). The chain forward's
// prepare walks them so, beside the chain kernel that consumes them (chunk_fwd.cu, forward_chain).
inline std::vector<int> chunks_in_step_order(const ChunkPlan& plan) {
  std::vector<int> order;
  order.reserve(plan.NC);
  for (int step = 0; step < plan.longest; ++step)
    for (const SeqInfo& s : plan.seqs)
      if (step < chunk_count(s)) order.push_back(s.first_chunk + step);
  return order;
}

}  // namespace gdn::cuda::detail
