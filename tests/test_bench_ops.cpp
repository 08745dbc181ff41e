// The ops benchmark on a tiny shape: the record has every field the README and the
// results files rely on, with values that make sense (no timing thresholds).
#include <gtest/gtest.h>

#include "bench/ops_bench.h"
#include "gdn/common.h"
#include "ops/cuda_device.h"

TEST(BenchOps, RecordHasEveryField) {
  gdn::bench::OpsBenchOptions opt;
  opt.threads = 1;
  opt.repeats = 1;
  opt.warmup = 0;
  opt.sgemm_n = 64;
  opt.cfg.T = 70;
  opt.cfg.H = opt.cfg.HV = 2;
  opt.cfg.K = opt.cfg.V = 16;
  int lines = 0;
  const auto r = gdn::bench::run_ops_bench(opt, [&](const std::string&) { ++lines; });
  EXPECT_GT(lines, 0);
  for (const char* key : {"sgemm_gflops", "recurrent_fwd_ms", "recurrent_tokens_per_s", "recurrent_fwdbwd_ms"}) {
    ASSERT_TRUE(r.contains(key) && r[key].is_number()) << key;
    EXPECT_GT(r[key].get<double>(), 0) << key;
  }
  for (const char* key : {"chunk_fwd_gflops", "chunk_fwdbwd_gflops", "chunk_fwd_ms", "chunk_fwdbwd_ms",
                          "chunk_fwd_vs_sgemm", "chunk_speedup_fwd"}) {
    ASSERT_TRUE(r.contains(key) && r[key].is_number()) << key;
    EXPECT_GT(r[key].get<double>(), 0) << key;
  }
  EXPECT_LT(r["chunk_vs_recurrent_rel_err"].get<double>(), 1e-5);
  EXPECT_EQ(r["machine"]["threads"], 1);
  EXPECT_EQ(r["config"]["T"], 70);
  EXPECT_FALSE(r["date"].get<std::string>().empty());
  const std::string table = gdn::bench::format_ops_bench(r);
  EXPECT_NE(table.find("sgemm 64^3"), std::string::npos) << table;
  EXPECT_NE(table.find("recurrent forward"), std::string::npos) << table;
}

TEST(BenchOps, RejectsBadOptions) {
  gdn::bench::OpsBenchOptions opt;
  opt.device = "tpu";
  EXPECT_THROW(gdn::bench::run_ops_bench(opt, [](const std::string&) {}), gdn::Error);
  opt.device = "cpu";
  opt.threads = 0;
  EXPECT_THROW(gdn::bench::run_ops_bench(opt, [](const std::string&) {}), gdn::Error);
}

// --device cuda: options the kernels cannot run are refused before any device is used; then
// either the record (with a GPU) or an error saying that there is no CUDA here.
TEST(BenchOps, CudaRefusesBadOptionsAndRunsOrSaysWhyNot) {
  auto quiet = [](const std::string&) {};
  gdn::bench::OpsBenchOptions opt;
  opt.device = "cuda";
  opt.repeats = 2;
  opt.warmup = 1;
  opt.threads = 1;
  opt.cfg.T = 70;
  opt.cfg.H = 1, opt.cfg.HV = 2;
  opt.decode_seqs = {1, 3};
  auto expect_error = [&](const gdn::bench::OpsBenchOptions& o, const std::string& needle) {
    try {
      gdn::bench::run_ops_bench(o, quiet);
      ADD_FAILURE() << "accepted; expected an error about " << needle;
    } catch (const gdn::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto bad = opt;
  bad.dtype = "fp8";
  expect_error(bad, "--dtype");
  bad = opt;
  bad.cfg.K = bad.cfg.V = 64;
  expect_error(bad, "--head-dim 128");
  bad = opt;
  bad.cfg.variant = gdn::Variant::retnet;
  expect_error(bad, "retnet");
  bad = opt;
  bad.decode_seqs = {0};
  expect_error(bad, "--decode-seqs");

  std::string no_device;
  try {
    gdn::require_cuda_device("probe");
  } catch (const gdn::Error& e) {
    no_device = e.what();
  }
  if (!no_device.empty()) {
    expect_error(opt, "--device cuda");
    return;
  }
  const auto r = gdn::bench::run_ops_bench(opt, quiet);
  for (const char* key : {"copy_bandwidth_bytes_per_s", "gemm_bf16_tflops", "chunk_fwd_ms", "chunk_fwdbwd_ms",
                          "chunk_fwd_vs_gemm", "cpu_chunk_fwd_ms"}) {
    ASSERT_TRUE(r.contains(key) && r[key].is_number()) << key;
    EXPECT_GT(r[key].get<double>(), 0) << key;
  }
  ASSERT_EQ(r["decode"].size(), 2u);
  EXPECT_EQ(r["decode"][1]["seqs"], 3);
  EXPECT_LE(r["decode"][1]["o_rel_err"].get<double>(), 1e-2);
  const std::string table = gdn::bench::format_ops_bench(r);
  EXPECT_NE(table.find("decode (1 token)"), std::string::npos) << table;
  // Every other variant with a kernel: checked (gradients of g and beta where it has them) and timed.
  for (gdn::Variant v : {gdn::Variant::deltanet, gdn::Variant::kda, gdn::Variant::gla, gdn::Variant::mamba2,
                         gdn::Variant::linear_attention}) {
    auto o = opt;
    o.cfg.variant = v;
    const auto info = gdn::variant_info(v);
    const auto rv = gdn::bench::run_ops_bench(o, quiet);
    const auto& errors = rv["chunk_check_rel_err"];
    EXPECT_EQ(errors.contains("dbeta"), info.delta) << info.name;
    EXPECT_EQ(errors.contains("dg"), info.gate != gdn::GateKind::none) << info.name;
    EXPECT_GT(rv["chunk_fwdbwd_ms"].get<double>(), 0) << info.name;
    EXPECT_LE(rv["decode"][1]["o_rel_err"].get<double>(), 1e-2) << info.name;
  }
}
