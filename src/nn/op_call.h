// The op for each scalar type: fp32 runs the configured form, fp64 the reference (which
// is what the layer-level gradient checks differentiate through).
#pragma once

#include "gdn/nn/profile.h"
#include "gdn/ops.h"

namespace gdn::nn {

inline void op_forward(Form form, const OpConfig& c, const OpInputs<float>& in, const OpOutputs<float>& out) {
  ProfileScope scope(profile().op_ns);
  forward(form, c, in, out);
}
inline void op_forward(Form, const OpConfig& c, const OpInputs<double>& in, const OpOutputs<double>& out) {
  reference_forward(c, in, out);
}
inline void op_backward(Form form, const OpConfig& c, const OpInputs<float>& in, const OpGradOutputs<float>& d,
                        const OpGrads<float>& g) {
  ProfileScope scope(profile().op_ns);
  backward(form, c, in, d, g);
}
inline void op_backward(Form, const OpConfig& c, const OpInputs<double>& in, const OpGradOutputs<double>& d,
                        const OpGrads<double>& g) {
  reference_backward(c, in, d, g);
}

}  // namespace gdn::nn
