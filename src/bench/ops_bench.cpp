// `gdn bench ops` (see ops_bench.h).
#include "bench/ops_bench.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <random>
#include <thread>
#include <vector>

#include "bench/ops_bench_util.h"
#include "gdn/common.h"
#include "gdn/flops.h"

namespace gdn::bench {

namespace {

using json = nlohmann::json;

// Buffers for one form's outputs and gradients.
struct Buffers {
  std::vector<float> o, dq, dk, dv, dg, dbeta;
  Buffers(const OpConfig& c, const Problem& p)
      : o(size_t(c.B) * c.T * c.HV * c.V),
        dq(p.q.size()),
        dk(p.k.size()),
        dv(p.v.size()),
        dg(p.g.size()),
        dbeta(p.beta.size()) {}
  OpOutputs<float> outputs() { return {o.data(), nullptr}; }
  OpGrads<float> grads() {
    return {dq.data(), dk.data(), dv.data(), dg.empty() ? nullptr : dg.data(), dbeta.empty() ? nullptr : dbeta.data(),
            nullptr};
  }
};

}  // namespace

OpConfig OpsBenchOptions::default_config() {
  OpConfig c;
  c.variant = Variant::gated_deltanet;
  c.B = 1, c.T = 4096, c.H = 16, c.HV = 16, c.K = 128, c.V = 128;
  c.l2norm_qk = true;
  c.chunk_size = 64;
  return c;
}

void set_threads(int n) {
  GDN_CHECK(n >= 1, "--threads: expected at least 1, got ", n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "unknown";
}

json run_ops_bench(const OpsBenchOptions& opt, const std::function<void(const std::string&)>& progress) {
  if (opt.device == "cuda") return run_ops_bench_cuda(opt, progress);
  GDN_CHECK(opt.device == "cpu", "--device: expected cpu or cuda, got '", opt.device, "'");
  GDN_CHECK(opt.repeats >= 1 && opt.warmup >= 0, "--repeats must be >= 1 and --warmup >= 0");
  GDN_CHECK(opt.sgemm_n >= 1, "--sgemm-size must be >= 1");
  set_threads(opt.threads);
  const OpConfig& c = opt.cfg;
  const double tokens = double(c.B) * c.T;

  json r;
  r["bench"] = "ops";
  r["date"] = utc_now();
  r["git_commit"] = build_commit();
  r["device"] = opt.device;
  r["machine"] = {{"cpu", cpu_model()}, {"cores", std::thread::hardware_concurrency()}, {"threads", opt.threads}};
  r["config"] = {{"variant", c.info().name},
                 {"B", c.B},
                 {"T", c.T},
                 {"H", c.H},
                 {"HV", c.HV},
                 {"K", c.K},
                 {"V", c.V},
                 {"chunk_size", c.chunk_size},
                 {"l2norm_qk", c.l2norm_qk},
                 {"dtype", "f32"}};
  r["repeats"] = opt.repeats;
  r["warmup"] = opt.warmup;

  // The ceiling: sgemm at a size large enough to reach it.
  {
    const int n = opt.sgemm_n;
    std::vector<float> a(size_t(n) * n), b(size_t(n) * n), out(size_t(n) * n);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1, 1);
    for (auto& x : a) x = u(rng);
    for (auto& x : b) x = u(rng);
    progress(cat("sgemm ", n, "^3, ", opt.threads, " threads"));
    const Timing t = time_runs(opt.warmup, opt.repeats, [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, out.data(),
                  n);
    });
    r["sgemm_n"] = n;
    r["sgemm_ms"] = t.median_ms;
    r["sgemm_gflops"] = 2.0 * n * n * n / (t.median_ms * 1e6);
    progress(cat("  ", t.median_ms, " ms, ", r["sgemm_gflops"].get<double>(), " GFLOP/s"));
  }

  const Problem p = make_problem(c, 20261125);
  const OpInputs<float> in = p.inputs();
  const OpGradOutputs<float> dout{p.d_o.data(), nullptr};

  // Recurrent form.
  Buffers rec(c, p);
  {
    progress(cat("recurrent forward, ", shape_label(c)));
    const Timing t = time_runs(opt.warmup, opt.repeats, [&] { forward(Form::recurrent, c, in, rec.outputs()); });
    r["recurrent_fwd"] = timing_json(t);
    r["recurrent_fwd_ms"] = t.median_ms;
    r["recurrent_tokens_per_s"] = tokens / (t.median_ms * 1e-3);
    progress(cat("  ", t.median_ms, " ms"));
    if (opt.backward && opt.recurrent_backward) {
      progress("recurrent forward + backward");
      const Timing tb = time_runs(opt.warmup, opt.repeats, [&] {
        forward(Form::recurrent, c, in, rec.outputs());
        backward(Form::recurrent, c, in, dout, rec.grads());
      });
      r["recurrent_fwdbwd"] = timing_json(tb);
      r["recurrent_fwdbwd_ms"] = tb.median_ms;
      progress(cat("  ", tb.median_ms, " ms"));
    }
  }

  // Chunkwise form.
  for (const char* key :
       {"chunk_fwd_ms", "chunk_fwd_gflops", "chunk_fwdbwd_ms", "chunk_fwdbwd_gflops", "chunk_fwd_vs_sgemm",
        "chunk_fwdbwd_vs_sgemm", "chunk_speedup_fwd", "chunk_speedup_fwdbwd", "chunk_vs_recurrent_rel_err"})
    r[key] = nullptr;
  Buffers chk(c, p);
  forward(Form::chunk, c, in, chk.outputs());
  r["chunk_vs_recurrent_rel_err"] = rel_err(chk.o, rec.o);
  const double fwd_flops = chunk_forward_flops(c), bwd_flops = chunk_backward_flops(c);
  r["chunk_fwd_flops"] = fwd_flops;
  r["chunk_bwd_flops"] = bwd_flops;
  r["flops_formula"] = "src/ops/flops.cpp";
  const double sgemm = r["sgemm_gflops"].get<double>();
  progress(cat("chunk forward, ", shape_label(c), ", C=", c.chunk_size, ", ", fwd_flops * 1e-9, " GFLOP"));
  const Timing t = time_runs(opt.warmup, opt.repeats, [&] { forward(Form::chunk, c, in, chk.outputs()); });
  r["chunk_fwd"] = timing_json(t);
  r["chunk_fwd_ms"] = t.median_ms;
  r["chunk_fwd_gflops"] = fwd_flops / (t.median_ms * 1e6);
  r["chunk_fwd_vs_sgemm"] = r["chunk_fwd_gflops"].get<double>() / sgemm;
  r["chunk_speedup_fwd"] = r["recurrent_fwd_ms"].get<double>() / t.median_ms;
  progress(cat("  ", t.median_ms, " ms, ", r["chunk_fwd_gflops"].get<double>(), " GFLOP/s"));
  if (opt.backward) {
    progress(cat("chunk forward + backward, ", (fwd_flops + bwd_flops) * 1e-9, " GFLOP"));
    const Timing tb = time_runs(opt.warmup, opt.repeats, [&] {
      forward(Form::chunk, c, in, chk.outputs());
      backward(Form::chunk, c, in, dout, chk.grads());
    });
    r["chunk_fwdbwd"] = timing_json(tb);
    r["chunk_fwdbwd_ms"] = tb.median_ms;
    r["chunk_fwdbwd_gflops"] = (fwd_flops + bwd_flops) / (tb.median_ms * 1e6);
    r["chunk_fwdbwd_vs_sgemm"] = r["chunk_fwdbwd_gflops"].get<double>() / sgemm;
    if (r.contains("recurrent_fwdbwd_ms"))
      r["chunk_speedup_fwdbwd"] = r["recurrent_fwdbwd_ms"].get<double>() / tb.median_ms;
    progress(cat("  ", tb.median_ms, " ms, ", r["chunk_fwdbwd_gflops"].get<double>(), " GFLOP/s"));
  }
  return r;
}

std::string format_ops_bench(const json& r) {
  if (r.value("device", "cpu") == "cuda") return format_ops_bench_cuda(r);
  // A number right-aligned in `width` with `prec` decimals, or "n/a" when absent.
  auto num = [&](const char* key, int width, int prec, const char* suffix = "") -> std::string {
    char buf[64];
    if (!r.contains(key) || r[key].is_null())
      std::snprintf(buf, sizeof buf, "%*s", width, "n/a");
    else
      std::snprintf(buf, sizeof buf, "%*.*f%s", width, prec, r[key].get<double>(), suffix);
    return buf;
  };
  const json& c = r["config"];
  std::string s;
  s += cat("gdn bench ops  ", r["date"].get<std::string>(), "  commit ", r["git_commit"].get<std::string>(), "\n");
  s += cat("machine: ", r["machine"]["cpu"].get<std::string>(), ", ", r["machine"]["threads"].get<int>(), " threads (",
           r["machine"]["cores"].get<int>(), " cores)\n");
  s += cat("shape: ", c["variant"].get<std::string>(), " B=", c["B"].get<int>(), " T=", c["T"].get<int>(),
           " H=", c["H"].get<int>(), " HV=", c["HV"].get<int>(), " K=", c["K"].get<int>(), " V=", c["V"].get<int>(),
           " C=", c["chunk_size"].get<int>(), " fp32, l2norm ", c["l2norm_qk"].get<bool>() ? "on" : "off",
           "; medians of ", r["repeats"].get<int>(), " runs\n\n");
  s += cat("                              time (ms)   GFLOP/s   of sgemm\n");
  s += cat("  sgemm ", r["sgemm_n"].get<int>(), "^3",
           std::string(17 - std::to_string(r["sgemm_n"].get<int>()).size(), ' '), num("sgemm_ms", 12, 2),
           num("sgemm_gflops", 10, 1), "\n");
  s += cat("  chunk forward           ", num("chunk_fwd_ms", 12, 2), num("chunk_fwd_gflops", 10, 1),
           num("chunk_fwd_vs_sgemm", 11, 3), "\n");
  s += cat("  chunk forward+backward  ", num("chunk_fwdbwd_ms", 12, 2), num("chunk_fwdbwd_gflops", 10, 1),
           num("chunk_fwdbwd_vs_sgemm", 11, 3), "\n");
  s += cat("  recurrent forward       ", num("recurrent_fwd_ms", 12, 2), "   (", num("recurrent_tokens_per_s", 0, 0),
           " tokens/s)\n");
  s += cat("  recurrent forward+backward", num("recurrent_fwdbwd_ms", 10, 2), "\n\n");
  s += cat("  chunk speed-up over recurrent: forward ", num("chunk_speedup_fwd", 0, 2, "x"), ", forward+backward ",
           num("chunk_speedup_fwdbwd", 0, 2, "x"), "\n");
  s += cat("  chunk vs recurrent forward rel err: ",
           (r["chunk_vs_recurrent_rel_err"].is_null()
                ? std::string("n/a")
                : cat(std::scientific, std::setprecision(2), r["chunk_vs_recurrent_rel_err"].get<double>())),
           "\n");
  return s;
}

}  // namespace gdn::bench
