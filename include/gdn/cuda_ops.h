// CUDA kernels for the delta-rule family (shared/DESIGN.md §2): chunkwise forward and backward
// and a recurrent decode step on a state pool, for the delta rule (Gated DeltaNet; DeltaNet
// without g) and, as compile-time variants of the same kernels, the additive rule
// S = α S + k vᵀ (linear attention without g; RetNet with its fixed log-gates passed as g;
// Mamba2 with its data-dependent g, dt applied by the layer) and the vector gate
// S = Diag(e^{g_t}) S, one log-gate per key dimension (GLA: additive rule; KDA: delta rule).
// The scalar gate is optional in both rules: g == null means α = 1. Framework-free: device
// pointers, a stream, and a returned Status. Layouts are those of gdn/ops.h:
//   q, k [B,T,H,K]   v [B,T,HV,V]   beta [B,T,HV] (fp32)   o [B,T,HV,V]
//   g [B,T,HV] (scalar gate) or [B,T,HV,K] (vector gate), fp32, natural log, <= 0
//   h0, ht [N,HV,K,V] fp32   cu_seqlens: N+1 int32 offsets (varlen, B == 1)
// Value head hv reads q/k head hv / (HV / H). K = V = 128; q, k, v, o and their gradients
// are bf16, fp16 or fp32 (DType); state and accumulation are fp32. The 16-bit paths run the
// tensor cores in their own type; the fp32 path splits every tensor-core operand into two bf16
// halves and agrees with the fp64 reference to ~1e-5.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace gdn::cuda {

enum class DType { f32, bf16, f16 };

// delta: S ← (I − β k kᵀ) α S + β k vᵀ (needs beta).  additive: S ← α S + k vᵀ (beta must be null).
enum class Update { delta, additive };

// scalar: g [B,T,HV] or null (no gate).  vector: g [B,T,HV,K], required (GLA, KDA).
enum class Gate { scalar, vector };

struct Status {
  cudaError_t code = cudaSuccess;
  std::string message;  // empty when ok
  bool ok() const { return code == cudaSuccess && message.empty(); }
};

struct ChunkShape {
  int B = 1, T = 0, H = 0, HV = 0, K = 128, V = 128;
  int num_seqs = 0;                     // N: B, or cu_seqlens' length - 1
  const int32_t* cu_seqlens = nullptr;  // HOST memory, N + 1 offsets, or null (fixed length)
  float scale = 0.f;                    // <= 0: K^-1/2
  bool l2norm_qk = true;                // q, k / sqrt(sum of squares + 1e-6), gradient included
  DType dtype = DType::bf16;            // of q, k, v, o, d_o, dq, dk, dv
  Update update = Update::delta;
  Gate gate = Gate::scalar;
};

// g: optional for the scalar gate (null: no gate), required for the vector gate. beta:
// required by the delta rule, null for the additive rule.
struct ChunkForwardArgs {
  // q, k and v must be 16-byte aligned (the kernels copy them by cp.async or the tensor memory
  // accelerator; refused otherwise).
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  const float *g = nullptr, *beta = nullptr;
  const float* h0 = nullptr;  // optional
  void* o = nullptr;          // required
  float* ht = nullptr;        // optional
  // False when no chunk_backward will reuse this workspace (inference): the forward then skips
  // the intermediates that only the backward reads (A, the vector gate's gated K Kᵀ, the state's
  // 8-bit extension for 16-bit inputs, the scalar gate's P and Q e^γ; the GDN forward of bf16/fp16
  // inputs, whose output is formed inside the state pass, skips h and V' instead of P:
  // 20% faster at 8×2048×16×128 on an H100; where sequences × value heads fill the GPU's SMs it
  // runs as one kernel that stores nothing but o and ht, ~2× the training forward's speed
  // there; sm_90a builds).
  // o and ht agree either way to the inputs' rounding. chunk_backward with workspace_has_forward
  // needs a forward run with true.
  bool for_backward = true;
};

struct ChunkBackwardArgs {
  // q, k, v and d_o must be 16-byte aligned (the kernels copy them by cp.async; refused otherwise).
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  const float *g = nullptr, *beta = nullptr;
  const float* h0 = nullptr;   // optional
  const void* d_o = nullptr;   // required
  const float* dht = nullptr;  // optional
  void *dq = nullptr, *dk = nullptr, *dv = nullptr;  // required, [B,T,H,K] / [B,T,HV,V]
  float *dg = nullptr, *dbeta = nullptr;             // dg (like g) iff g is given; dbeta iff the delta rule
  float* dh0 = nullptr;                              // written when h0 is given
  // True when the workspace already holds chunk_forward's intermediates for these same
  // inputs (chunk_forward ran on it, sized by chunk_backward_workspace_bytes): the backward
  // then skips recomputing them, as a training step does. They stay valid afterwards.
  bool workspace_has_forward = false;
};

// Scratch the chunk kernels need (device memory, at least 256-byte aligned). The backward's
// workspace starts with the forward's, so one buffer of the backward's size serves both.
size_t chunk_forward_workspace_bytes(const ChunkShape& s);
size_t chunk_backward_workspace_bytes(const ChunkShape& s);

Status chunk_forward(const ChunkShape& s, const ChunkForwardArgs& a, void* workspace, size_t workspace_bytes,
                     cudaStream_t stream);
Status chunk_backward(const ChunkShape& s, const ChunkBackwardArgs& a, void* workspace,
                      size_t workspace_bytes, cudaStream_t stream);

// Decode: `tokens` steps for each of `num_seqs` sequences, with inputs q, k [num_seqs, tokens,
// H, K], v [num_seqs, tokens, HV, V], beta [num_seqs, tokens, HV], g [num_seqs, tokens, HV]
// (scalar gate) or [num_seqs, tokens, HV, K] (vector gate), output o like v. The state of
// sequence i is state_pool[state_indices[i]] ([P, HV, K, V] fp32), updated in place. g and
// beta as in ChunkForwardArgs.
struct DecodeShape {
  int num_seqs = 0, tokens = 1, H = 0, HV = 0, K = 128, V = 128;
  int pool_size = 0;  // P: a sequence whose index is outside [0, P) gets NaN outputs, state untouched
  float scale = 0.f;
  bool l2norm_qk = true;
  DType dtype = DType::bf16;
  Update update = Update::delta;
  Gate gate = Gate::scalar;
};

struct DecodeArgs {
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  const float *g = nullptr, *beta = nullptr;
  float* state_pool = nullptr;
  const int32_t* state_indices = nullptr;  // device memory, [num_seqs]
  void* o = nullptr;
};

Status decode(const DecodeShape& s, const DecodeArgs& a, cudaStream_t stream);

}  // namespace gdn::cuda
