// Op problems as safetensors files: what `gdn op` reads and writes, so that any other
// implementation (PyTorch, FLA, ggml) can be checked against ours without C++.
//
// Input file, fp32 (F16/BF16/F64 are converted):
//   q, k [B,T,H,K]   v [B,T,HV,V]   beta [B,T,HV] (delta rule; ignored by the additive rule)
//   g [B,T,HV] (scalar gate, RetNet optional) or [B,T,HV,K] (gla, kda)
//   h0 [N,HV,K,V] optional   cu_seqlens [N+1] int32/int64 optional (varlen, B = 1)
//   do [B,T,HV,V] and optional dht [N,HV,K,V] for the backward
// Output file: o [B,T,HV,V], ht [N,HV,K,V]; with the backward dq, dk, dv, and dg, dbeta,
// dh0 where they apply (g given and used, delta rule, h0 given). fp32, or fp64 for
// Form::reference. Dimensions are inferred from q and v and every tensor is checked
// against them; errors name the file, the tensor and the expected shape.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "gdn/ops.h"
#include "gdn/safetensors.h"

namespace gdn {

// Where the op runs. cuda: the kernels of gdn/cuda_ops.h on fp32 inputs, for gated_deltanet,
// deltanet (no g), mamba2 and linear_attention (the additive rule, with and without g),
// K = V = 128: form chunk (forward and backward, chunk size 64, varlen allowed) or recurrent
// (forward only, the decode kernel over fixed-length sequences).
enum class OpDevice { cpu, cuda };
OpDevice parse_op_device(std::string_view name);
const char* op_device_name(OpDevice d);

struct OpRunOptions {
  OpDevice device = OpDevice::cpu;
  Variant variant = Variant::gated_deltanet;
  Form form = Form::chunk;
  bool backward = false;
  bool l2norm_qk = true;
  double scale = 0;  // <= 0: K^-1/2
  int chunk_size = 64;
};

// The tensors of one problem, in the element type the form computes in. Absent optional
// tensors are empty vectors.
template <class T>
struct OpData {
  OpConfig cfg;
  std::vector<T> q, k, v, g, beta, h0, d_o, dht;

  OpInputs<T> inputs() const;
  OpGradOutputs<T> grad_outputs() const;
};

template <class T>
struct OpResults {
  std::vector<T> o, ht;                       // always
  std::vector<T> dq, dk, dv, dg, dbeta, dh0;  // backward; empty where they do not apply
};

// Reads and checks the problem (shapes here, values through gdn::validate). `do` is
// required when opt.backward is set.
template <class T>
OpData<T> load_op_data(const SafeTensorsFile& file, const OpRunOptions& opt);

// Runs opt.form: reference in fp64 (T = double), recurrent / chunk in fp32 (T = float).
// Outputs are poisoned with NaN first, so an element the op forgets stays visible.
template <class T>
OpResults<T> run_op(const OpData<T>& data, const OpRunOptions& opt);

// The op on the CUDA kernels (fp32 in and out). Throws gdn::Error saying what is missing:
// CUDA in this build, a CUDA device, or support for the variant, form or shape.
OpResults<float> run_op_cuda(const OpData<float>& data, const OpRunOptions& opt);

// Checks that the CUDA kernels cover opt's variant, form and chunk size (no device needed), so
// that `gdn op` can refuse before reading its input.
void check_cuda_op_options(const OpRunOptions& opt);

// Writes every non-empty result with its shape, plus metadata describing the run.
template <class T>
void save_op_results(const std::string& path, const OpData<T>& data, const OpResults<T>& res, const OpRunOptions& opt);

// load -> run -> save, in the precision the form needs: what `gdn op` does.
void run_op_file(const std::string& in_path, const std::string& out_path, const OpRunOptions& opt);

}  // namespace gdn
