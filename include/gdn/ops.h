// The delta-rule op family (shared/DESIGN.md §2): one API for every member, every form.
//
// Layout is sequence-first, as in FLA and transformers:
//   q, k  [B, T, H, K]      v  [B, T, HV, V]      beta  [B, T, HV]
//   g     [B, T, HV] (scalar gate) or [B, T, HV, K] (vector gate), natural log, <= 0
//   h0    [N, HV, K, V]     o  [B, T, HV, V]      ht    [N, HV, K, V]
// N is the number of sequences: B, or with cu_seqlens (varlen, B == 1) its length - 1.
// Value head hv reads q/k head hv / (HV / H) (grouped value heads, GVA).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gdn {

enum class Variant {
  linear_attention,
  retnet,
  mamba2,
  gla,
  deltanet,
  gated_deltanet,
  kda,
  longhorn,
};

enum class GateKind {
  none,    // alpha = 1, g is ignored
  fixed,   // RetNet: log(1 - 2^(-5-hv)) per value head unless g is given
  scalar,  // g [B,T,HV]
  vector,  // g [B,T,HV,K]
};

struct VariantInfo {
  Variant variant;
  const char* name;
  GateKind gate;
  bool delta;     // delta rule (uses beta) vs additive rule (beta ignored)
  bool longhorn;  // beta' = beta / (1 + beta |k|^2)
};

const VariantInfo& variant_info(Variant v);
const std::vector<VariantInfo>& all_variants();
// Throws gdn::Error listing the known names when `name` is not one of them.
Variant parse_variant(std::string_view name);

enum class Form {
  reference,  // fp64 per-token loop: the definition
  recurrent,  // fp32 per-token recurrence
  chunk,      // fp32 chunkwise (WY / UT) form
};
Form parse_form(std::string_view name);
const char* form_name(Form f);

struct OpConfig {
  Variant variant = Variant::gated_deltanet;
  int B = 1, T = 0, H = 0, HV = 0, K = 0, V = 0;
  // Varlen: N + 1 offsets into the T axis (B must be 1); empty for fixed-length batches.
  std::vector<int32_t> cu_seqlens;
  double scale = 0;        // <= 0 means K^-1/2
  bool l2norm_qk = true;   // fused L2 norm of q and k: x / sqrt(sum x^2 + 1e-6)
  int chunk_size = 64;     // 16, 32 or 64 (chunk form)

  int num_seqs() const { return cu_seqlens.empty() ? B : int(cu_seqlens.size()) - 1; }
  double effective_scale() const;
  const VariantInfo& info() const { return variant_info(variant); }
  // Size in elements of the gate tensor the variant takes (0 when it takes none).
  size_t g_numel() const;
};

// Pointers are host memory, contiguous in the layouts above. Optional inputs are null.
template <class T>
struct OpInputs {
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  const T* g = nullptr;     // required for scalar/vector gates, optional for RetNet, ignored otherwise
  const T* beta = nullptr;  // required for the delta rule, ignored by the additive rule
  const T* h0 = nullptr;    // optional initial state
};

template <class T>
struct OpOutputs {
  T* o = nullptr;   // required
  T* ht = nullptr;  // optional final state
};

template <class T>
struct OpGradOutputs {
  const T* d_o = nullptr;  // required: gradient of o
  const T* dht = nullptr;  // optional: gradient of ht
};

// Gradients with the shapes of the inputs. dq, dk, dv are required; dg when g was given;
// dbeta when the variant uses beta (it is zero-filled for the additive rule when given);
// dh0 when h0 was given.
template <class T>
struct OpGrads {
  T* dq = nullptr;
  T* dk = nullptr;
  T* dv = nullptr;
  T* dg = nullptr;
  T* dbeta = nullptr;
  T* dh0 = nullptr;
};

// Validates shapes, presence and finiteness of every input; throws gdn::Error naming the
// tensor and the expected shape. Called by forward/backward; exposed for front ends.
template <class T>
void validate(const OpConfig& cfg, const OpInputs<T>& in);

// fp32 recurrent or chunkwise form. Form::reference is rejected here (it is fp64).
void forward(Form form, const OpConfig& cfg, const OpInputs<float>& in, const OpOutputs<float>& out);
void backward(Form form, const OpConfig& cfg, const OpInputs<float>& in,
              const OpGradOutputs<float>& dout, const OpGrads<float>& grads);

// The fp64 reference: the definition as one readable loop, forward and backward.
void reference_forward(const OpConfig& cfg, const OpInputs<double>& in, const OpOutputs<double>& out);
void reference_backward(const OpConfig& cfg, const OpInputs<double>& in,
                        const OpGradOutputs<double>& dout, const OpGrads<double>& grads);

}  // namespace gdn
