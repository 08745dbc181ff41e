// The chunk plan's step order (src/ops/cuda/chunk_plan.cuh, chunks_in_step_order), on the host: the
// chain forward's prepare publishes chunks in this order while the chain kernel consumes them, so it
// must hold every chunk once, each sequence's in its own order, and never a later step before an
// earlier one. Compiled by nvcc, runs without a GPU (the GPU check covers the streamed forward).
#include <gtest/gtest.h>

#include <vector>

#include "ops/cuda/chunk_plan.cuh"

namespace {

namespace d = gdn::cuda::detail;

d::ChunkPlan plan_of(int B, int T, std::vector<int> cu_seqlens = {}) {
  gdn::cuda::ChunkShape s{};
  s.B = B;
  s.T = T;
  s.H = s.HV = 1;
  s.K = s.V = d::kDim;
  if (!cu_seqlens.empty()) {
    s.cu_seqlens = cu_seqlens.data();
    s.num_seqs = int(cu_seqlens.size()) - 1;
  }
  d::ChunkPlan plan(s);  // reads cu_seqlens now: it may go after
  EXPECT_TRUE(plan.error.empty()) << plan.error;
  return plan;
}

void expect_step_order(const d::ChunkPlan& plan) {
  const std::vector<int> order = d::chunks_in_step_order(plan);
  ASSERT_EQ(int(order.size()), plan.NC);
  std::vector<int> seen(plan.NC, 0), next(plan.N, 0);
  int last_step = 0;
  for (int c : order) {
    ASSERT_GE(c, 0);
    ASSERT_LT(c, plan.NC);
    ++seen[c];
    const int n = plan.chunk_seq[c], step = c - plan.seqs[n].first_chunk;
    EXPECT_EQ(step, next[n]++) << "sequence " << n << "'s chunks out of order";
    EXPECT_GE(step, last_step) << "chunk " << c << " of step " << step << " after step " << last_step;
    last_step = step;
  }
  for (int c = 0; c < plan.NC; ++c) EXPECT_EQ(seen[c], 1) << "chunk " << c;
}

TEST(ChunkPlan, StepOrderOfEqualSequences) {
  const d::ChunkPlan plan = plan_of(2, 8192);
  expect_step_order(plan);
  const std::vector<int> order = d::chunks_in_step_order(plan);
  EXPECT_EQ(order[0], 0);
  EXPECT_EQ(order[1], 128);  // the second sequence's first chunk
  EXPECT_EQ(order[2], 1);
}

TEST(ChunkPlan, StepOrderOfVarlenSequences) {
  // gpu_check's chain_streamed_varlen: 1, 700, 65 and 1000 tokens (1, 11, 2 and 16 chunks).
  const d::ChunkPlan plan = plan_of(1, 1766, {0, 1, 701, 766, 1766});
  EXPECT_EQ(plan.longest, 16);
  expect_step_order(plan);
  expect_step_order(plan_of(1, 130, {0, 0, 64, 130}));  // an empty sequence too
}

}  // namespace
