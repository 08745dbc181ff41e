// gdn bench ops: sgemm ceiling, chunkwise and recurrent forms, measured in one run; with
// --device cuda the CUDA kernels against the copy and GEMM ceilings (src/bench/ops_bench.h).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "bench/ops_bench.h"
#include "cli/command.h"
#include "gdn/common.h"

namespace {

struct BenchOpsArgs {
  gdn::bench::OpsBenchOptions opt;
  std::string variant = "gated_deltanet", out;
  bool json = false, no_backward = false;
};

GDN_COMMAND("bench ops",
            "op speed: sgemm ceiling, chunkwise forward/backward GFLOP/s, recurrent form (cpu); "
            "copy and GEMM ceilings, chunk kernels, decode (cuda)",
            [](CLI::App& app) {
              auto a = std::make_shared<BenchOpsArgs>();
              auto& o = a->opt;
              app.add_flag("--json", a->json, "print one JSON line instead of the table");
              app.add_option("--out", a->out, "also write the JSON record to this file (e.g. bench/results/...)");
              app.add_option("--device", o.device, "cpu, or cuda (the CUDA kernels, each checked against the CPU first)")
                  ->check(CLI::IsMember({"cpu", "cuda"}))
                  ->capture_default_str();
              app.add_option("--dtype", o.dtype, "cuda: dtype of q, k, v, o (bf16, f16 or f32)")
                  ->check(CLI::IsMember({"bf16", "f16", "f32"}))
                  ->capture_default_str();
              app.add_option("--decode-seqs", o.decode_seqs, "cuda: sequence counts of the decode rows (e.g. 1,32,256)")
                  ->delimiter(',')
                  ->check(CLI::PositiveNumber)
                  ->capture_default_str();
              app.add_option("--threads", o.threads, "threads for OpenMP and OpenBLAS")->capture_default_str();
              app.add_option("--repeats", o.repeats, "timed runs (the median is reported; cuda: 50 unless given)")
                  ->capture_default_str();
              app.add_option("--warmup", o.warmup, "untimed runs first (cuda: 5 unless given)")->capture_default_str();
              app.add_option("--sgemm-size", o.sgemm_n, "sgemm M=N=K")->capture_default_str();
              app.add_option("--variant", a->variant, "variant of the op")->capture_default_str();
              app.add_option("-T,--seq-len", o.cfg.T, "tokens per sequence")->capture_default_str();
              app.add_option("-B,--batch", o.cfg.B, "sequences")->capture_default_str();
              app.add_option("--heads", o.cfg.H, "q/k heads H (and HV unless --value-heads)")->capture_default_str();
              app.add_option("--value-heads", o.cfg.HV, "value heads HV (default H)");
              app.add_option("--head-dim", o.cfg.K, "K = V")->capture_default_str();
              app.add_option("--chunk-size", o.cfg.chunk_size, "chunk size")->capture_default_str();
              app.add_flag("--no-backward", a->no_backward, "time the forward passes only");
              app.callback([a, &app] {
                auto& o = a->opt;
                o.cfg.variant = gdn::parse_variant(a->variant);
                o.cfg.V = o.cfg.K;
                if (app.count("--value-heads") == 0) o.cfg.HV = o.cfg.H;
                o.backward = !a->no_backward;
                if (o.device == "cuda" && app.count("--repeats") == 0) o.repeats = 50;  // kernels take ms, not s
                if (o.device == "cuda" && app.count("--warmup") == 0) o.warmup = 5;
                const auto record = gdn::bench::run_ops_bench(
                    o, [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); });
                const std::string line = record.dump();
                if (a->json)
                  std::cout << line << std::endl;
                else
                  std::cout << gdn::bench::format_ops_bench(record) << std::flush;
                if (!a->out.empty()) {
                  const std::filesystem::path path(a->out);
                  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
                  std::ofstream f(path);
                  f << line << "\n";
                  GDN_CHECK(f.good(), "--out ", a->out, ": cannot write the results");
                }
              });
            });

}  // namespace
