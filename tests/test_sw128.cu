// The single pass's q and k tiles in wgmma's 128-byte swizzle (src/ops/cuda/core_tile.cuh,
// sw128_offset), on the host: the properties its copy, its ldmatrix addresses and its descriptors
// rely on. Compiled by nvcc, runs without a GPU (the GPU check covers the kernel that uses them).
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "ops/cuda/core_tile.cuh"

namespace {

namespace d = gdn::cuda::detail;
constexpr int kRows = d::kChunk, kCols = d::kDim;  // a chunk's [64][128] tile of 16-bit elements

int offset(int r, int c) { return d::sw128_offset<kRows>(r, c); }

TEST(Sw128, EveryElementHasItsOwnPlace) {
  std::vector<int> seen(kRows * kCols, 0);
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) {
      const int e = offset(r, c);
      ASSERT_GE(e, 0);
      ASSERT_LT(e, kRows * kCols);
      ++seen[e];
    }
  for (int e = 0; e < kRows * kCols; ++e) EXPECT_EQ(seen[e], 1) << "element offset " << e;
}

// The copy's 8-lane groups read a row's 64-column half, one 128-byte global line: it must land in one
// 128-byte shared line, its 16-byte pieces whole. Half h of all rows lies Rows × 128 bytes from half 0
// (the descriptors' step to the second half).
TEST(Sw128, RowHalfIsOneLineOfWholePieces) {
  for (int r = 0; r < kRows; ++r)
    for (int h = 0; h < 2; ++h) {
      std::set<int> lines;
      for (int c = 64 * h; c < 64 * h + 64; ++c) {
        lines.insert(2 * offset(r, c) / 128);
        if (c % 8) EXPECT_EQ(offset(r, c), offset(r, c - 1) + 1) << "piece of row " << r << " split at " << c;
      }
      ASSERT_EQ(lines.size(), 1u) << "row " << r << " half " << h;
      EXPECT_EQ(*lines.begin(), h * kRows + r);
    }
}

// ldmatrix reads one 16-byte piece column of 8 consecutive rows: the 8 pieces must fall in 8
// different 16-byte bank groups of a 128-byte line (no conflict).
TEST(Sw128, PieceColumnOfEightRowsIsConflictFree) {
  for (int r0 = 0; r0 < kRows; r0 += 8)
    for (int p = 0; p < kCols / 8; ++p) {
      std::set<int> groups;
      for (int r = r0; r < r0 + 8; ++r) groups.insert(2 * offset(r, 8 * p) / 16 % 8);
      EXPECT_EQ(groups.size(), 8u) << "rows " << r0 << "..+7, piece " << p;
    }
}

// What the kernel's address arithmetic assumes: rows r and r + 16 n share a permutation (the copy
// steps its destination by a constant), and within a half a k step of 16 columns flips byte-address
// bits 5 and 6 (L's ldmatrix addresses; the K-major descriptors move their start by 32 bytes),
// which holds in absolute shared addresses because the tile is 1024-byte aligned (8-row atoms).
TEST(Sw128, KernelAddressSteps) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < kCols; c += 8)
      for (int n = 1; n < kRows / 16; ++n) EXPECT_EQ(offset(r + 16 * n, c), offset(r, c) + 16 * 64 * n);
  for (int r = 0; r < kRows; ++r)
    for (int h8 = 0; h8 < 2; ++h8)
      for (int ks = 0; ks < kCols / 16; ++ks) {
        const int half = ks / 4, base = 2 * offset(r, 64 * half + 8 * h8);
        EXPECT_EQ(2 * offset(r, 16 * ks + 8 * h8), (base ^ ((ks % 4) << 5))) << "row " << r << " k step " << ks;
        EXPECT_EQ(base - 2 * offset(r, 8 * h8), half * kRows * 128);
      }
  EXPECT_EQ(offset(8, 0) - offset(0, 0), 1024 / 2) << "8-row atoms 1024 bytes apart (the stride offset)";
}

}  // namespace
