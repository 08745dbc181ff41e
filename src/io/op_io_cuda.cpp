// `gdn op --device cuda`: an op problem on the CUDA kernels (see gdn/op_io.h). Compiled in
// every build; without CUDA it only explains why it cannot run.
#include <numeric>

#include "gdn/common.h"
#include "gdn/op_io.h"
#include "ops/cuda_device.h"

#if GDN_HAVE_CUDA
#include "gdn/cuda_ops.h"
#include "ops/cuda/device_memory.h"
#include "ops/cuda_variant.h"
#endif

namespace gdn {

void check_cuda_op_options(const OpRunOptions& opt) {
  const char* variant = variant_info(opt.variant).name;
  GDN_CHECK(cuda_has_kernel(opt.variant), "--device cuda: variant ", variant, " has no CUDA kernel yet (",
            cuda_kernel_variants(), " do); use --device cpu");
  GDN_CHECK(opt.form == Form::chunk || opt.form == Form::recurrent, "--device cuda: form ", form_name(opt.form),
            " runs on the CPU only (it is the fp64 definition); use --form chunk or recurrent");
  GDN_CHECK(opt.form == Form::chunk || !opt.backward,
            "--device cuda: the recurrent form has no CUDA backward (the decode kernel is forward only); "
            "use --form chunk for gradients");
  GDN_CHECK(opt.form != Form::chunk || opt.chunk_size == 64, "--device cuda: the CUDA chunk kernels use chunk size 64, got ",
            opt.chunk_size);
}

#if GDN_HAVE_CUDA
namespace {

using cuda::DeviceBuffer;
using cuda::cuda_check;
using cuda::status_check;
using cuda::upload_vector;

// A device copy of an optional tensor: an empty buffer (null pointer) when it is absent.
DeviceBuffer upload_optional(const std::vector<float>& x) { return x.empty() ? DeviceBuffer() : upload_vector(x); }

// An output buffer of n floats, poisoned with NaN so that an element the kernel forgets shows.
DeviceBuffer output(size_t n) {
  DeviceBuffer b(n * sizeof(float));
  b.poison();
  return b;
}

std::vector<float> download(const DeviceBuffer& b) { return cuda::download_vector<float>(b, b.bytes / sizeof(float)); }

OpResults<float> run_chunk(const OpData<float>& d, const OpRunOptions& opt) {
  const OpConfig& c = d.cfg;
  const cuda::KernelVariant vt(c.variant);
  cuda::ChunkShape s;
  s.B = c.B, s.T = c.T, s.H = c.H, s.HV = c.HV, s.K = c.K, s.V = c.V, s.num_seqs = c.num_seqs();
  s.cu_seqlens = c.cu_seqlens.empty() ? nullptr : c.cu_seqlens.data();
  s.scale = float(c.effective_scale()), s.l2norm_qk = c.l2norm_qk, s.dtype = cuda::DType::f32;
  s.update = vt.update, s.gate = vt.gate;
  const size_t BT = size_t(c.B) * c.T, state = size_t(c.num_seqs()) * c.HV * c.K * c.V;

  DeviceBuffer q = upload_vector(d.q), k = upload_vector(d.k), v = upload_vector(d.v),
               gate = vt.gated ? upload_vector(d.g) : DeviceBuffer(), beta = vt.delta ? upload_vector(d.beta) : DeviceBuffer(),
               h0 = upload_optional(d.h0);
  DeviceBuffer o = output(BT * c.HV * c.V), ht = output(state);
  DeviceBuffer ws(opt.backward ? cuda::chunk_backward_workspace_bytes(s) : cuda::chunk_forward_workspace_bytes(s));
  cuda::ChunkForwardArgs fa;
  fa.q = q.ptr, fa.k = k.ptr, fa.v = v.ptr, fa.g = gate.as<float>(), fa.beta = beta.as<float>();
  fa.h0 = h0.as<float>(), fa.o = o.ptr, fa.ht = ht.as<float>(), fa.for_backward = opt.backward;
  status_check(cuda::chunk_forward(s, fa, ws.ptr, ws.bytes, nullptr));
  cuda_check(cudaDeviceSynchronize(), "gdn::cuda::chunk_forward");

  OpResults<float> r;
  r.o = download(o);
  r.ht = download(ht);
  if (!opt.backward) return r;
  DeviceBuffer d_o = upload_vector(d.d_o), dht = upload_optional(d.dht);
  DeviceBuffer dq = output(BT * c.H * c.K), dk = output(BT * c.H * c.K), dv = output(BT * c.HV * c.V),
               dg = vt.gated ? output(c.g_numel()) : DeviceBuffer(), dbeta = vt.delta ? output(BT * c.HV) : DeviceBuffer(),
               dh0 = d.h0.empty() ? DeviceBuffer() : output(state);
  cuda::ChunkBackwardArgs ba;
  ba.q = q.ptr, ba.k = k.ptr, ba.v = v.ptr, ba.g = gate.as<float>(), ba.beta = beta.as<float>(), ba.h0 = h0.as<float>();
  ba.d_o = d_o.ptr, ba.dht = dht.as<float>();
  ba.dq = dq.ptr, ba.dk = dk.ptr, ba.dv = dv.ptr, ba.dg = dg.as<float>(), ba.dbeta = dbeta.as<float>();
  ba.dh0 = dh0.as<float>();
  ba.workspace_has_forward = true;  // chunk_forward just ran on this workspace with these inputs
  status_check(cuda::chunk_backward(s, ba, ws.ptr, ws.bytes, nullptr));
  cuda_check(cudaDeviceSynchronize(), "gdn::cuda::chunk_backward");
  r.dq = download(dq), r.dk = download(dk), r.dv = download(dv);
  if (vt.gated) r.dg = download(dg);
  if (vt.delta) r.dbeta = download(dbeta);
  if (!d.h0.empty()) r.dh0 = download(dh0);
  return r;
}

// The recurrent form by the decode kernel: `T` tokens for each of the B sequences, the states
// a pool of B slots starting from h0 (or zeros) that ends as ht.
OpResults<float> run_recurrent(const OpData<float>& d) {
  const OpConfig& c = d.cfg;
  const cuda::KernelVariant vt(c.variant);
  cuda::DecodeShape s;
  s.num_seqs = c.B, s.tokens = c.T, s.H = c.H, s.HV = c.HV, s.K = c.K, s.V = c.V, s.pool_size = c.B;
  s.scale = float(c.effective_scale()), s.l2norm_qk = c.l2norm_qk, s.dtype = cuda::DType::f32;
  s.update = vt.update, s.gate = vt.gate;
  const size_t state = size_t(c.B) * c.HV * c.K * c.V;
  std::vector<int32_t> slots(c.B);
  std::iota(slots.begin(), slots.end(), 0);
  DeviceBuffer q = upload_vector(d.q), k = upload_vector(d.k), v = upload_vector(d.v),
               gd = vt.gated ? upload_vector(d.g) : DeviceBuffer(), beta = vt.delta ? upload_vector(d.beta) : DeviceBuffer(),
               idx = upload_vector(slots);
  DeviceBuffer pool = d.h0.empty() ? DeviceBuffer(state * sizeof(float)) : upload_vector(d.h0);
  if (d.h0.empty()) cuda_check(cudaMemset(pool.ptr, 0, pool.bytes), "cudaMemset");
  DeviceBuffer o = output(size_t(c.B) * c.T * c.HV * c.V);
  cuda::DecodeArgs a;
  a.q = q.ptr, a.k = k.ptr, a.v = v.ptr, a.g = gd.as<float>(), a.beta = beta.as<float>();
  a.state_pool = pool.as<float>(), a.state_indices = idx.as<int32_t>(), a.o = o.ptr;
  status_check(cuda::decode(s, a, nullptr));
  cuda_check(cudaDeviceSynchronize(), "gdn::cuda::decode");
  OpResults<float> r;
  r.o = download(o);
  r.ht = download(pool);
  return r;
}

}  // namespace
#endif

OpResults<float> run_op_cuda(const OpData<float>& d, const OpRunOptions& opt) {
  check_cuda_op_options(opt);
  const OpConfig& c = d.cfg;
  GDN_CHECK(c.K == 128 && c.V == 128, "--device cuda: the CUDA kernels need K = V = 128, got K=", c.K, ", V=", c.V);
  GDN_CHECK(opt.form == Form::chunk || c.cu_seqlens.empty(),
            "--device cuda: the recurrent form on CUDA needs fixed-length sequences (no cu_seqlens); use --form chunk");
  require_cuda_device("--device cuda");
#if GDN_HAVE_CUDA
  return opt.form == Form::chunk ? run_chunk(d, opt) : run_recurrent(d);
#else
  fail("--device cuda: this build of gdn has no CUDA kernels");
#endif
}

}  // namespace gdn
