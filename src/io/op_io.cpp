// The mapping between op problem files (safetensors) and the op API; see gdn/op_io.h.
#include "gdn/op_io.h"

#include <cmath>
#include <iomanip>
#include <limits>
#include <set>

#include "gdn/common.h"

namespace gdn {

namespace {

// The data pointer of an optional tensor: null when it is absent (empty).
template <class Vec>
auto ptr_or_null(Vec& x) {
  return x.empty() ? nullptr : x.data();
}

template <class Real>
std::vector<Real> read_tensor(const SafeTensorsFile& f, const std::string& name) {
  if constexpr (std::is_same_v<Real, double>)
    return f.get_f64(name);
  else
    return f.get_f32(name);
}

// Reads `name`, which must have exactly `expected` (described as `dims`, e.g. "[B,T,HV]").
template <class Real>
std::vector<Real> read_shaped(const SafeTensorsFile& f, const std::string& name, const std::vector<int64_t>& expected,
                              const char* dims) {
  const auto& got = f.info(name).shape;
  GDN_CHECK(got == expected, "tensor ", name, " in ", f.path(), ": expected shape ", dims, "=", shape_str(expected),
            ", got ", shape_str(got));
  return read_tensor<Real>(f, name);
}

// gdn::validate checks the op inputs; the gradients of the outputs are checked here.
template <class Real>
void check_finite(const SafeTensorsFile& f, const std::string& name, const std::vector<Real>& x) {
  for (size_t i = 0; i < x.size(); ++i)
    GDN_CHECK(std::isfinite(x[i]), "tensor ", name, " in ", f.path(), ": non-finite value ", x[i], " at flat index ",
              i);
}

template <class Real>
std::vector<Real> poisoned(size_t n) {
  return std::vector<Real>(n, std::numeric_limits<Real>::quiet_NaN());
}

}  // namespace

template <class Real>
OpInputs<Real> OpData<Real>::inputs() const {
  return {ptr_or_null(q), ptr_or_null(k), ptr_or_null(v), ptr_or_null(g), ptr_or_null(beta), ptr_or_null(h0)};
}

template <class Real>
OpGradOutputs<Real> OpData<Real>::grad_outputs() const {
  return {ptr_or_null(d_o), ptr_or_null(dht)};
}

template <class Real>
OpData<Real> load_op_data(const SafeTensorsFile& f, const OpRunOptions& opt) {
  const std::string& P = f.path();
  for (const char* name : {"q", "k", "v"})
    GDN_CHECK(f.has(name), "file ", P, ": missing tensor ", name, " (need q, k [B,T,H,K] and v [B,T,HV,V])");
  // A misspelt optional tensor ("H0") would otherwise be silently left out. Output names
  // are allowed (and ignored) so that a file can carry expected results too.
  for (const auto& name : f.names()) {
    static const std::set<std::string> known{"q", "k",  "v",  "g",  "beta", "h0", "cu_seqlens", "do", "dht",
                                             "o", "ht", "dq", "dk", "dv",   "dg", "dbeta",      "dh0"};
    GDN_CHECK(known.count(name), "file ", P, ": unknown tensor ", name,
              " (inputs: q, k, v, g, beta, h0, cu_seqlens, do, dht)");
  }
  const auto& qs = f.info("q").shape;
  const auto& vs = f.info("v").shape;
  GDN_CHECK(qs.size() == 4, "tensor q in ", P, ": expected 4 dims [B,T,H,K], got ", shape_str(qs));
  GDN_CHECK(vs.size() == 4, "tensor v in ", P, ": expected 4 dims [B,T,HV,V], got ", shape_str(vs));
  for (int64_t d : qs)
    GDN_CHECK(d > 0 && d <= std::numeric_limits<int>::max(), "tensor q in ", P, ": dims must be positive, got ",
              shape_str(qs));
  for (int64_t d : vs)
    GDN_CHECK(d > 0 && d <= std::numeric_limits<int>::max(), "tensor v in ", P, ": dims must be positive, got ",
              shape_str(vs));

  OpData<Real> d;
  OpConfig& c = d.cfg;
  c.variant = opt.variant;
  c.B = int(qs[0]), c.T = int(qs[1]), c.H = int(qs[2]), c.K = int(qs[3]);
  c.HV = int(vs[2]), c.V = int(vs[3]);
  c.scale = opt.scale;
  c.l2norm_qk = opt.l2norm_qk;
  c.chunk_size = opt.chunk_size;
  GDN_CHECK(vs[0] == c.B && vs[1] == c.T, "tensor v in ", P, ": expected shape [B,T,HV,V] with B=", c.B, ", T=", c.T,
            " (from q), got ", shape_str(vs));
  GDN_CHECK(c.HV % c.H == 0, "tensor v in ", P, ": value heads HV=", c.HV,
            " must be a multiple of the q/k heads H=", c.H, " (grouped value heads)");

  if (f.has("cu_seqlens")) {
    const auto& cs = f.info("cu_seqlens").shape;
    GDN_CHECK(cs.size() == 1 && cs[0] >= 2, "tensor cu_seqlens in ", P, ": expected shape [N+1] with N >= 1, got ",
              shape_str(cs));
    GDN_CHECK(c.B == 1, "tensor cu_seqlens in ", P, ": varlen packs sequences along T, so B must be 1, got B=", c.B);
    c.cu_seqlens = f.get_i32("cu_seqlens");
  }
  const int64_t B = c.B, T = c.T, H = c.H, HV = c.HV, K = c.K, V = c.V, N = c.num_seqs();
  const std::vector<int64_t> qk_shape{B, T, H, K}, v_shape{B, T, HV, V}, bt_shape{B, T, HV}, state_shape{N, HV, K, V};

  const VariantInfo& info = c.info();
  d.q = read_shaped<Real>(f, "q", qk_shape, "[B,T,H,K]");
  d.k = read_shaped<Real>(f, "k", qk_shape, "[B,T,H,K]");
  d.v = read_shaped<Real>(f, "v", v_shape, "[B,T,HV,V]");
  switch (info.gate) {
    case GateKind::none:
      GDN_CHECK(!f.has("g"), "tensor g in ", P, ": variant ", info.name,
                " has no gate; remove g or choose a gated variant");
      break;
    case GateKind::fixed:
    case GateKind::scalar:
      GDN_CHECK(f.has("g") || info.gate == GateKind::fixed, "file ", P, ": missing tensor g: variant ", info.name,
                " needs a log-gate g of shape [B,T,HV]=", shape_str(bt_shape));
      if (f.has("g")) d.g = read_shaped<Real>(f, "g", bt_shape, "[B,T,HV]");
      break;
    case GateKind::vector:
      GDN_CHECK(f.has("g"), "file ", P, ": missing tensor g: variant ", info.name,
                " needs a log-gate g of shape [B,T,HV,K]=", shape_str({B, T, HV, K}));
      d.g = read_shaped<Real>(f, "g", {B, T, HV, K}, "[B,T,HV,K]");
      break;
  }
  if (info.delta) {
    GDN_CHECK(f.has("beta"), "file ", P, ": missing tensor beta: variant ", info.name,
              " needs beta of shape [B,T,HV]=", shape_str(bt_shape));
    d.beta = read_shaped<Real>(f, "beta", bt_shape, "[B,T,HV]");
  }
  if (f.has("h0")) d.h0 = read_shaped<Real>(f, "h0", state_shape, "[N,HV,K,V]");
  if (opt.backward) {
    GDN_CHECK(f.has("do"), "file ", P,
              ": missing tensor do: the backward needs the gradient of o, shape [B,T,HV,V]=", shape_str(v_shape));
    d.d_o = read_shaped<Real>(f, "do", v_shape, "[B,T,HV,V]");
    check_finite(f, "do", d.d_o);
    if (f.has("dht")) {
      d.dht = read_shaped<Real>(f, "dht", state_shape, "[N,HV,K,V]");
      check_finite(f, "dht", d.dht);
    }
  }
  try {
    validate(c, d.inputs());
  } catch (const Error& e) {
    fail("file ", P, ": ", e.what());
  }
  return d;
}

template <class Real>
OpResults<Real> run_op(const OpData<Real>& d, const OpRunOptions& opt) {
  const OpConfig& c = d.cfg;
  constexpr bool fp64 = std::is_same_v<Real, double>;
  GDN_CHECK(fp64 == (opt.form == Form::reference), "run_op: form ", form_name(opt.form), " computes in ",
            opt.form == Form::reference ? "fp64" : "fp32");
  const size_t BT = size_t(c.B) * c.T, state = size_t(c.num_seqs()) * c.HV * c.K * c.V;
  OpResults<Real> r;
  r.o = poisoned<Real>(BT * c.HV * c.V);
  r.ht = poisoned<Real>(state);
  const OpOutputs<Real> out{r.o.data(), r.ht.data()};
  if constexpr (fp64)
    reference_forward(c, d.inputs(), out);
  else
    forward(opt.form, c, d.inputs(), out);
  if (!opt.backward) return r;

  r.dq = poisoned<Real>(BT * c.H * c.K);
  r.dk = poisoned<Real>(BT * c.H * c.K);
  r.dv = poisoned<Real>(BT * c.HV * c.V);
  if (!d.g.empty()) r.dg = poisoned<Real>(d.g.size());
  if (c.info().delta) r.dbeta = poisoned<Real>(BT * c.HV);
  if (!d.h0.empty()) r.dh0 = poisoned<Real>(state);
  const OpGrads<Real> grads{r.dq.data(),       r.dk.data(),          r.dv.data(),
                            ptr_or_null(r.dg), ptr_or_null(r.dbeta), ptr_or_null(r.dh0)};
  if constexpr (fp64)
    reference_backward(c, d.inputs(), d.grad_outputs(), grads);
  else
    backward(opt.form, c, d.inputs(), d.grad_outputs(), grads);
  return r;
}

template <class Real>
void save_op_results(const std::string& path, const OpData<Real>& d, const OpResults<Real>& r,
                     const OpRunOptions& opt) {
  const OpConfig& c = d.cfg;
  const int64_t B = c.B, T = c.T, H = c.H, HV = c.HV, K = c.K, V = c.V, N = c.num_seqs();
  const DType dtype = std::is_same_v<Real, double> ? DType::F64 : DType::F32;
  SafeTensorsWriter w;
  auto put = [&](const char* name, const std::vector<Real>& x, std::vector<int64_t> shape) {
    if (!x.empty()) w.add(name, dtype, shape, x.data());
  };
  const std::vector<int64_t> g_shape =
      c.info().gate == GateKind::vector ? std::vector<int64_t>{B, T, HV, K} : std::vector<int64_t>{B, T, HV};
  put("o", r.o, {B, T, HV, V});
  put("ht", r.ht, {N, HV, K, V});
  put("dq", r.dq, {B, T, H, K});
  put("dk", r.dk, {B, T, H, K});
  put("dv", r.dv, {B, T, HV, V});
  put("dg", r.dg, g_shape);
  put("dbeta", r.dbeta, {B, T, HV});
  put("dh0", r.dh0, {N, HV, K, V});
  w.set_metadata("variant", c.info().name);
  w.set_metadata("form", form_name(opt.form));
  w.set_metadata("device", op_device_name(opt.device));
  w.set_metadata("l2norm_qk", c.l2norm_qk ? "true" : "false");
  w.set_metadata("scale", cat(std::setprecision(17), c.effective_scale()));
  w.set_metadata("chunk_size", cat(c.chunk_size));
  w.write(path);
}

OpDevice parse_op_device(std::string_view name) {
  if (name == "cpu") return OpDevice::cpu;
  if (name == "cuda") return OpDevice::cuda;
  fail("unknown device '", name, "' (expected cpu or cuda)");
}

const char* op_device_name(OpDevice d) { return d == OpDevice::cuda ? "cuda" : "cpu"; }

void run_op_file(const std::string& in_path, const std::string& out_path, const OpRunOptions& opt) {
  if (opt.device == OpDevice::cuda) {
    check_cuda_op_options(opt);
    const OpData<float> data = load_op_data<float>(SafeTensorsFile::load(in_path), opt);
    save_op_results(out_path, data, run_op_cuda(data, opt), opt);
    return;
  }
  const SafeTensorsFile file = SafeTensorsFile::load(in_path);
  auto go = [&](auto tag) {
    using Real = decltype(tag);
    const OpData<Real> data = load_op_data<Real>(file, opt);
    save_op_results(out_path, data, run_op(data, opt), opt);
  };
  if (opt.form == Form::reference)
    go(double{});
  else
    go(float{});
}

#define GDN_INSTANTIATE(Real)                                                                          \
  template struct OpData<Real>;                                                                        \
  template OpData<Real> load_op_data<Real>(const SafeTensorsFile&, const OpRunOptions&);               \
  template OpResults<Real> run_op<Real>(const OpData<Real>&, const OpRunOptions&);                     \
  template void save_op_results<Real>(const std::string&, const OpData<Real>&, const OpResults<Real>&, \
                                      const OpRunOptions&);
GDN_INSTANTIATE(float)
GDN_INSTANTIATE(double)
#undef GDN_INSTANTIATE

}  // namespace gdn
