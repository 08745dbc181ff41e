// The ops benchmark on a tiny shape: the record has every field the README and the
// results files rely on, with values that make sense (no timing thresholds).
#include <gtest/gtest.h>

#include "bench/ops_bench.h"
#include "gdn/common.h"

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
  // Chunk figures are numbers when the chunk form is built, null (with the reason) when not.
  const bool chunk = !r.contains("chunk_error");
  for (const char* key : {"chunk_fwd_gflops", "chunk_fwdbwd_gflops", "chunk_fwd_ms", "chunk_fwdbwd_ms",
                          "chunk_fwd_vs_sgemm", "chunk_speedup_fwd"}) {
    ASSERT_TRUE(r.contains(key)) << key;
    EXPECT_EQ(r[key].is_number(), chunk) << key;
  }
  if (chunk) EXPECT_LT(r["chunk_vs_recurrent_rel_err"].get<double>(), 1e-5);
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
