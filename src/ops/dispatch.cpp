// The public op API: validate and prepare once, run the chosen form's core, finish.
#include "gdn/common.h"
#include "gdn/ops.h"
#include "ops/prepare.h"

namespace gdn {

using namespace detail;

namespace {

template <class T>
CoreOutputs<T> core_outputs(const OpOutputs<T>& out) {
  GDN_CHECK(out.o, "op outputs: o is required");
  return {out.o, out.ht};
}

template <class T>
CoreGradOutputs<T> core_grad_outputs(const OpGradOutputs<T>& dout) {
  GDN_CHECK(dout.d_o, "op gradients: do (the gradient of o) is required");
  return {dout.d_o, dout.dht};
}

}  // namespace

void forward(Form form, const OpConfig& cfg, const OpInputs<float>& in, const OpOutputs<float>& out) {
  const Prepared<float> prep = prepare(cfg, in);
  switch (form) {
    case Form::recurrent: return recurrent_core_forward(prep.core, core_outputs(out));
    case Form::chunk: return chunk_core_forward(prep.core, core_outputs(out));
    case Form::reference: break;
  }
  fail("gdn::forward: form ", form_name(form), " is fp64; call gdn::reference_forward");
}

void backward(Form form, const OpConfig& cfg, const OpInputs<float>& in,
              const OpGradOutputs<float>& dout, const OpGrads<float>& grads) {
  const Prepared<float> prep = prepare(cfg, in);
  CoreGradBuffers<float> buf = core_grad_buffers(cfg, prep, grads);
  switch (form) {
    case Form::recurrent: recurrent_core_backward(prep.core, core_grad_outputs(dout), buf.grads); break;
    case Form::chunk: chunk_core_backward(prep.core, core_grad_outputs(dout), buf.grads); break;
    case Form::reference: fail("gdn::backward: form reference is fp64; call gdn::reference_backward");
  }
  finish_backward(cfg, in, prep, buf.grads, grads);
}

void reference_forward(const OpConfig& cfg, const OpInputs<double>& in, const OpOutputs<double>& out) {
  reference_core_forward(prepare(cfg, in).core, core_outputs(out));
}

void reference_backward(const OpConfig& cfg, const OpInputs<double>& in,
                        const OpGradOutputs<double>& dout, const OpGrads<double>& grads) {
  const Prepared<double> prep = prepare(cfg, in);
  CoreGradBuffers<double> buf = core_grad_buffers(cfg, prep, grads);
  reference_core_backward(prep.core, core_grad_outputs(dout), buf.grads);
  finish_backward(cfg, in, prep, buf.grads, grads);
}

}  // namespace gdn
