// Op problem files: shape inference, every kind of bad input (named in the error), and a
// run through the file path against the op API called directly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <random>

#include "gdn/common.h"
#include "temp_dir.h"
#include "gdn/op_io.h"
#include "ops/cuda_device.h"

namespace fs = std::filesystem;

namespace {

using gdn::test::TempDir;

std::mt19937_64& rng() {
  static std::mt19937_64 r{std::random_device{}()};
  return r;
}

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// A problem file under construction: name -> fp32 tensor, plus optional cu_seqlens.
struct Problem {
  std::map<std::string, Tensor> t;
  std::vector<int32_t> cu_seqlens;

  // Random tensors in the ranges the ops expect: g <= 0, beta in (0, 1).
  void add(const std::string& name, std::vector<int64_t> shape) {
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    std::vector<float> x(n);
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> unit(0.05f, 0.95f);
    for (auto& e : x) {
      if (name == "g")
        e = -unit(rng());
      else if (name == "beta")
        e = unit(rng());
      else
        e = normal(rng());
    }
    t[name] = {std::move(shape), std::move(x)};
  }
  std::string write(const TempDir& dir, const std::string& name = "in.safetensors") const {
    gdn::SafeTensorsWriter w;
    for (const auto& [n, x] : t) w.add_f32(n, x.shape, x.data.data());
    if (!cu_seqlens.empty()) w.add_i32("cu_seqlens", {int64_t(cu_seqlens.size())}, cu_seqlens.data());
    const std::string path = dir.file(name);
    w.write(path);
    return path;
  }
};

// Gated DeltaNet problem with B,T,H,HV,K,V; N sequences of state.
Problem gdn_problem(int64_t B, int64_t T, int64_t H, int64_t HV, int64_t K, int64_t V, bool backward = true) {
  Problem p;
  p.add("q", {B, T, H, K});
  p.add("k", {B, T, H, K});
  p.add("v", {B, T, HV, V});
  p.add("g", {B, T, HV});
  p.add("beta", {B, T, HV});
  p.add("h0", {B, HV, K, V});
  if (backward) {
    p.add("do", {B, T, HV, V});
    p.add("dht", {B, HV, K, V});
  }
  return p;
}

gdn::OpRunOptions options(gdn::Variant variant = gdn::Variant::gated_deltanet, bool backward = true,
                          gdn::Form form = gdn::Form::recurrent) {
  gdn::OpRunOptions o;
  o.variant = variant;
  o.backward = backward;
  o.form = form;
  return o;
}

// Loading `p` must fail with a message containing the file path and every needle.
void expect_load_error(const Problem& p, const gdn::OpRunOptions& opt, std::initializer_list<std::string> needles) {
  TempDir dir;
  const std::string path = p.write(dir);
  try {
    gdn::load_op_data<float>(gdn::SafeTensorsFile::load(path), opt);
    ADD_FAILURE() << "accepted a bad problem";
  } catch (const gdn::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg << "\n  missing the file name";
    for (const auto& s : needles) EXPECT_NE(msg.find(s), std::string::npos) << msg << "\n  missing: " << s;
  }
}

double rel_err(const std::vector<float>& x, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (double(x[i]) - ref[i]) * (double(x[i]) - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace

TEST(OpIo, InfersShapes) {
  std::uniform_int_distribution<int> dim(1, 5);
  const int64_t B = dim(rng()), T = dim(rng()) + 3, H = dim(rng()), HV = H * dim(rng()), K = dim(rng()) + 1,
                V = dim(rng()) + 2;
  TempDir dir;
  const Problem p = gdn_problem(B, T, H, HV, K, V);
  const auto d = gdn::load_op_data<float>(gdn::SafeTensorsFile::load(p.write(dir)), options());
  EXPECT_EQ(d.cfg.B, B);
  EXPECT_EQ(d.cfg.T, T);
  EXPECT_EQ(d.cfg.H, H);
  EXPECT_EQ(d.cfg.HV, HV);
  EXPECT_EQ(d.cfg.K, K);
  EXPECT_EQ(d.cfg.V, V);
  EXPECT_EQ(d.cfg.num_seqs(), B);
  EXPECT_EQ(d.q, p.t.at("q").data);
  EXPECT_EQ(d.g, p.t.at("g").data);
  EXPECT_EQ(d.h0, p.t.at("h0").data);
  EXPECT_EQ(d.dht, p.t.at("dht").data);
  // Expected results may ride along in the input file.
  Problem with_o = p;
  with_o.add("o", {B, T, HV, V});
  EXPECT_NO_THROW(gdn::load_op_data<float>(gdn::SafeTensorsFile::load(with_o.write(dir)), options()));
  const auto in = d.inputs();
  EXPECT_EQ(in.beta, d.beta.data());
  // Without --backward, do and dht are not read.
  const auto fwd =
      gdn::load_op_data<double>(gdn::SafeTensorsFile::load(p.write(dir)), options(gdn::Variant::gated_deltanet, false));
  EXPECT_TRUE(fwd.d_o.empty() && fwd.dht.empty());
  EXPECT_EQ(fwd.v.size(), p.t.at("v").data.size());
}

TEST(OpIo, InfersVarlenAndOptionalTensors) {
  TempDir dir;
  Problem p;
  const int64_t T = 9, H = 2, HV = 4, K = 4, V = 3;
  p.cu_seqlens = {0, 1, 5, 5, 9};  // lengths 1, 4, 0, 4
  p.add("q", {1, T, H, K});
  p.add("k", {1, T, H, K});
  p.add("v", {1, T, HV, V});
  p.add("h0", {4, HV, K, V});
  p.add("g", {1, T, HV, K});
  p.add("beta", {1, T, HV});
  const auto d = gdn::load_op_data<float>(gdn::SafeTensorsFile::load(p.write(dir)), options(gdn::Variant::kda, false));
  EXPECT_EQ(d.cfg.num_seqs(), 4);
  EXPECT_EQ(d.cfg.cu_seqlens, p.cu_seqlens);
  EXPECT_EQ(d.g.size(), size_t(T * HV * K));

  // RetNet: g optional; additive rule: beta ignored.
  Problem r = p;
  r.t.erase("g");
  const auto rd =
      gdn::load_op_data<float>(gdn::SafeTensorsFile::load(r.write(dir)), options(gdn::Variant::retnet, false));
  EXPECT_TRUE(rd.g.empty());
  EXPECT_TRUE(rd.beta.empty());
  EXPECT_EQ(rd.inputs().beta, nullptr);
}

TEST(OpIo, RejectsWrongShapesAndMissingTensors) {
  const auto base = gdn_problem(2, 7, 2, 4, 8, 5);
  const auto opt = options();
  auto with = [&](const std::function<void(Problem&)>& edit) {
    Problem p = base;
    edit(p);
    return p;
  };
  expect_load_error(with([](Problem& p) { p.t.erase("q"); }), opt, {"missing tensor q"});
  expect_load_error(with([](Problem& p) { p.t.erase("v"); }), opt, {"missing tensor v"});
  expect_load_error(with([](Problem& p) { p.add("H0", {2, 4, 8, 5}); }), opt, {"unknown tensor H0"});
  expect_load_error(with([](Problem& p) { p.add("q", {2, 7, 16}); }), opt, {"tensor q", "[B,T,H,K]", "[2, 7, 16]"});
  expect_load_error(with([](Problem& p) { p.add("q", {2, 0, 2, 8}); }), opt, {"tensor q", "positive"});
  expect_load_error(with([](Problem& p) {
                      p.add("k", {2, 7, 2, 9});
                    }),
                    opt, {"tensor k", "expected shape [B,T,H,K]=[2, 7, 2, 8], got [2, 7, 2, 9]"});
  expect_load_error(with([](Problem& p) { p.add("v", {2, 6, 4, 5}); }), opt, {"tensor v", "T=7", "[2, 6, 4, 5]"});
  expect_load_error(with([](Problem& p) { p.add("v", {2, 7, 3, 5}); }), opt, {"tensor v", "HV=3", "H=2"});
  expect_load_error(with([](Problem& p) { p.t.erase("beta"); }), opt, {"missing tensor beta", "[B,T,HV]=[2, 7, 4]"});
  expect_load_error(with([](Problem& p) { p.add("beta", {2, 7, 2}); }), opt, {"tensor beta", "[2, 7, 4]", "[2, 7, 2]"});
  expect_load_error(with([](Problem& p) { p.t.erase("g"); }), opt, {"missing tensor g", "gated_deltanet"});
  expect_load_error(with([](Problem& p) { p.add("g", {2, 7, 4, 8}); }), opt, {"tensor g", "[B,T,HV]=[2, 7, 4]"});
  expect_load_error(base, options(gdn::Variant::kda), {"tensor g", "[B,T,HV,K]=[2, 7, 4, 8]", "[2, 7, 4]"});
  expect_load_error(base, options(gdn::Variant::deltanet), {"tensor g", "deltanet", "no gate"});
  expect_load_error(with([](Problem& p) { p.add("h0", {1, 4, 8, 5}); }), opt, {"tensor h0", "[N,HV,K,V]=[2, 4, 8, 5]"});
  expect_load_error(with([](Problem& p) { p.add("h0", {2, 4, 5, 8}); }), opt, {"tensor h0", "[2, 4, 5, 8]"});
  expect_load_error(with([](Problem& p) { p.t.erase("do"); }), opt, {"missing tensor do", "[2, 7, 4, 5]"});
  expect_load_error(with([](Problem& p) { p.add("do", {2, 7, 2, 5}); }), opt, {"tensor do", "[B,T,HV,V]"});
  expect_load_error(with([](Problem& p) { p.add("dht", {2, 4, 8}); }), opt, {"tensor dht", "[N,HV,K,V]"});
  // A tensor of the wrong dtype.
  {
    TempDir dir;
    Problem p = base;
    p.t.erase("beta");
    const std::string path = dir.file("int_beta.safetensors");
    gdn::SafeTensorsWriter w;
    for (const auto& [n, x] : p.t) w.add_f32(n, x.shape, x.data.data());
    std::vector<int32_t> beta(2 * 7 * 4, 1);
    w.add_i32("beta", {2, 7, 4}, beta.data());
    w.write(path);
    try {
      gdn::load_op_data<float>(gdn::SafeTensorsFile::load(path), opt);
      ADD_FAILURE() << "accepted an int32 beta";
    } catch (const gdn::Error& e) {
      EXPECT_NE(std::string(e.what()).find("tensor beta"), std::string::npos) << e.what();
    }
  }
}

TEST(OpIo, RejectsBadVarlenOffsets) {
  Problem p;
  const int64_t T = 6, H = 1, K = 4, V = 4;
  p.add("q", {1, T, H, K});
  p.add("k", {1, T, H, K});
  p.add("v", {1, T, H, V});
  p.add("g", {1, T, H});
  p.add("beta", {1, T, H});
  const auto opt = options(gdn::Variant::gated_deltanet, false);
  auto with_cu = [&](std::vector<int32_t> cu) {
    Problem x = p;
    x.cu_seqlens = std::move(cu);
    return x;
  };
  expect_load_error(with_cu({0}), opt, {"tensor cu_seqlens", "[N+1]"});
  expect_load_error(with_cu({0, 4}), opt, {"tensor cu_seqlens", "T=6"});
  expect_load_error(with_cu({1, 6}), opt, {"tensor cu_seqlens", "got 1"});
  expect_load_error(with_cu({0, 4, 3, 6}), opt, {"tensor cu_seqlens"});
  expect_load_error(with_cu({0, 3, 7}), opt, {"tensor cu_seqlens"});
  Problem b2 = gdn_problem(2, T, H, H, K, V, false);
  b2.cu_seqlens = {0, 3, 6};
  expect_load_error(b2, opt, {"tensor cu_seqlens", "B must be 1"});
  Problem h0 = with_cu({0, 2, 6});
  h0.add("h0", {1, H, K, V});
  expect_load_error(h0, opt, {"tensor h0", "[N,HV,K,V]=[2, 1, 4, 4]"});
}

TEST(OpIo, RejectsNonFiniteValues) {
  const auto base = gdn_problem(1, 5, 2, 2, 4, 4);
  for (const char* name : {"q", "k", "v", "g", "beta", "h0", "do", "dht"}) {
    for (float bad : {NAN, INFINITY}) {
      Problem p = base;
      auto& x = p.t.at(name).data;
      x[std::uniform_int_distribution<size_t>(0, x.size() - 1)(rng())] = bad;
      expect_load_error(p, options(), {std::string("tensor ") + name});
    }
  }
  Problem pos = base;
  pos.t.at("g").data[3] = 0.5f;
  expect_load_error(pos, options(), {"tensor g", "<= 0"});
}

// The file path gives the same numbers as the API called directly, writes every output
// that applies (none left NaN) and agrees with the fp64 reference.
TEST(OpIo, RunThroughFilesMatchesReference) {
  for (gdn::Variant variant :
       {gdn::Variant::gated_deltanet, gdn::Variant::kda, gdn::Variant::retnet, gdn::Variant::deltanet}) {
    SCOPED_TRACE(gdn::variant_info(variant).name);
    const auto& info = gdn::variant_info(variant);
    Problem p = gdn_problem(2, 11, 2, 4, 8, 6);
    if (info.gate == gdn::GateKind::vector) p.add("g", {2, 11, 4, 8});
    if (info.gate == gdn::GateKind::none || info.gate == gdn::GateKind::fixed) p.t.erase("g");
    TempDir dir;
    const std::string in = p.write(dir), out = dir.file("out.safetensors"), ref = dir.file("ref.safetensors");
    gdn::run_op_file(in, out, options(variant, true, gdn::Form::recurrent));
    gdn::run_op_file(in, ref, options(variant, true, gdn::Form::reference));
    const auto o = gdn::SafeTensorsFile::load(out), r = gdn::SafeTensorsFile::load(ref);
    std::vector<std::string> expected{"dh0", "dk", "dq", "dv", "ht", "o"};
    if (info.delta) expected.push_back("dbeta");
    if (info.gate == gdn::GateKind::scalar || info.gate == gdn::GateKind::vector) expected.push_back("dg");
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(o.names(), expected);
    EXPECT_EQ(r.names(), expected);
    EXPECT_EQ(o.metadata().at("variant"), info.name);
    EXPECT_EQ(r.info("o").dtype, gdn::DType::F64);
    for (const auto& name : expected) {
      EXPECT_EQ(o.info(name).shape, r.info(name).shape) << name;
      const auto x = o.get_f32(name);
      for (float e : x) ASSERT_TRUE(std::isfinite(e)) << name << " has an unwritten element";
      EXPECT_LT(rel_err(x, r.get_f64(name)), 1e-4) << name;
    }
    // Same as calling the op API directly on the loaded data.
    const auto opt = options(variant, true, gdn::Form::recurrent);
    const auto data = gdn::load_op_data<float>(gdn::SafeTensorsFile::load(in), opt);
    const auto direct = gdn::run_op(data, opt);
    EXPECT_EQ(o.get_f32("o"), direct.o);
    EXPECT_EQ(o.get_f32("dq"), direct.dq);
  }
}

// --device cuda: what the kernels do not cover is refused by name before any device is used.
TEST(OpIoCuda, RefusesWhatTheKernelsDoNotCover) {
  TempDir dir;
  const std::string in = gdn_problem(1, 5, 1, 2, 8, 8).write(dir), out = dir.file("out.safetensors");
  auto expect_refusal = [&](gdn::OpRunOptions opt, std::initializer_list<std::string> needles) {
    opt.device = gdn::OpDevice::cuda;
    try {
      gdn::run_op_file(in, out, opt);
      ADD_FAILURE() << "--device cuda accepted what it does not support";
    } catch (const gdn::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("--device cuda"), std::string::npos) << msg;
      for (const auto& s : needles) EXPECT_NE(msg.find(s), std::string::npos) << msg << "\n  missing: " << s;
    }
    EXPECT_FALSE(fs::exists(out));
  };
  expect_refusal(options(gdn::Variant::longhorn, false, gdn::Form::chunk), {"longhorn", "no CUDA kernel"});
  expect_refusal(options(gdn::Variant::gated_deltanet, false, gdn::Form::reference), {"reference", "CPU only"});
  expect_refusal(options(gdn::Variant::gated_deltanet, true, gdn::Form::recurrent), {"recurrent", "backward"});
  auto small_chunks = options(gdn::Variant::gated_deltanet, false, gdn::Form::chunk);
  small_chunks.chunk_size = 32;
  expect_refusal(small_chunks, {"chunk size 64", "32"});
  expect_refusal(options(gdn::Variant::gated_deltanet, false, gdn::Form::chunk), {"K = V = 128", "K=8"});
  EXPECT_EQ(gdn::parse_op_device("cuda"), gdn::OpDevice::cuda);
  EXPECT_THROW(gdn::parse_op_device("gpu"), gdn::Error);
}

// --device cuda on a supported problem: where this build or machine has no CUDA the error says
// so; with a GPU every output matches the CPU reference as the fp32 kernels promise (1e-4).
// Gated DeltaNet (scalar gate) and KDA, GLA (vector gate: g [B,T,HV,K]).
TEST(OpIoCuda, MatchesTheReferenceOrSaysWhyNot) {
  std::string no_device;
  try {
    gdn::require_cuda_device("probe");
  } catch (const gdn::Error& e) {
    no_device = e.what();
  }
  TempDir dir;
  for (gdn::Variant variant : {gdn::Variant::gated_deltanet, gdn::Variant::kda, gdn::Variant::gla})
  for (gdn::Form form : {gdn::Form::chunk, gdn::Form::recurrent}) {
    const bool vector_gate = gdn::variant_info(variant).gate == gdn::GateKind::vector;
    SCOPED_TRACE(gdn::cat(gdn::variant_info(variant).name, " ", gdn::form_name(form)));
    Problem p = gdn_problem(2, 70, 1, 2, 128, 128);
    if (vector_gate) p.add("g", {2, 70, 2, 128});
    const std::string in = p.write(dir), ref = dir.file("ref.safetensors");
    const std::string out = dir.file(std::string("cuda_") + gdn::form_name(form) + ".safetensors");
    auto opt = options(variant, form == gdn::Form::chunk, form);
    opt.device = gdn::OpDevice::cuda;
    if (!no_device.empty()) {
      try {
        gdn::run_op_file(in, out, opt);
        ADD_FAILURE() << "ran on CUDA where the probe found none: " << no_device;
      } catch (const gdn::Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("--device cuda"), std::string::npos) << msg;
        EXPECT_TRUE(msg.find("no CUDA kernels") != std::string::npos || msg.find("CUDA device") != std::string::npos)
            << msg;
      }
      continue;
    }
    gdn::run_op_file(in, out, opt);
    gdn::run_op_file(in, ref, options(variant, opt.backward, gdn::Form::reference));
    const auto o = gdn::SafeTensorsFile::load(out), r = gdn::SafeTensorsFile::load(ref);
    EXPECT_EQ(o.names(), r.names());
    EXPECT_EQ(o.metadata().at("device"), "cuda");
    for (const auto& name : r.names()) {
      const auto x = o.get_f32(name);
      for (float e : x) ASSERT_TRUE(std::isfinite(e)) << name << " has an unwritten element";
      EXPECT_LT(rel_err(x, r.get_f64(name)), 1e-4) << name;
    }
  }
}
