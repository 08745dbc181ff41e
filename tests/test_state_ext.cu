// The chunk-entry state's 8-bit extension (h_ext, src/ops/cuda/chunk_fwd.cuh), on the host: the
// kernels' own encode / decode helpers, checked for the precision the format promises, at binade
// edges, signs, fp16's subnormals and the clamp, and its byte order. Compiled by nvcc, runs
// without a GPU (the GPU check covers the kernels that store and read it).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "ops/cuda/chunk_fwd.cuh"

namespace {

using gdn::cuda::detail::bf16;
using gdn::cuda::detail::f16;
namespace d = gdn::cuda::detail;

float round_to(float s, bf16) { return __bfloat162float(__float2bfloat16(s)); }
float round_to(float s, f16) { return __half2float(__float2half(s)); }

// S from h = T(s) and the byte the forward would store for it.
template <class T>
float round_trip(float s, int* code = nullptr) {
  const float h = round_to(s, T{});
  const uint32_t byte = d::ext_code<T>(s, h);
  const int e = d::ext_byte(make_uint2(byte, 0u), 0);
  if (code) *code = e;
  return d::ext_value<T>(h, e);
}

// Values over the whole range the states take, both signs, and every binade edge's neighbours.
std::vector<float> samples(float lo_exp, float hi_exp) {
  std::mt19937 rng(20261126);
  std::uniform_real_distribution<float> mant(1.f, 2.f), expo(lo_exp, hi_exp);
  std::vector<float> xs;
  for (int i = 0; i < 200000; ++i) xs.push_back((i % 2 ? -1.f : 1.f) * mant(rng) * std::exp2(std::floor(expo(rng))));
  for (int k = int(lo_exp); k < int(hi_exp); ++k)
    for (float p : {std::exp2(float(k)), -std::exp2(float(k))})
      for (int step = -300; step <= 300; ++step) xs.push_back(d::bit_cast<float>(d::bit_cast<int>(p) + step));
  return xs;
}

// |S − s| ≤ 2^(shift − 1) fp32 ulps of s's binade (rounded to the nearest code): relative 2^-16 for
// bf16 and 2^-19 for fp16, where h alone is 2^-9 and 2^-12. Codes reach −128..128 and 128 is
// clamped to 127: values within half a step of the midpoint above h (1 in 512) keep one bit less.
template <class T>
void check_precision(float lo_exp, float hi_exp, double bound) {
  constexpr int kShift = d::kExtShift<T>, kClamped = (128 << kShift) - (1 << (kShift - 1));
  double worst = 0, worst_clamped = 0, worst_h = 0;
  for (float s : samples(lo_exp, hi_exp)) {
    const float h = round_to(s, T{}), back = round_trip<T>(s);
    ASSERT_TRUE(std::isfinite(back)) << s;
    ASSERT_EQ(std::signbit(back), std::signbit(s)) << s;
    const double err = std::abs(double(back) - s) / std::abs(double(s));
    worst_h = std::max(worst_h, std::abs(double(h) - s) / std::abs(double(s)));
    double& w = d::bit_cast<int>(s) - d::bit_cast<int>(h) >= kClamped ? worst_clamped : worst;
    w = std::max(w, err);
  }
  EXPECT_LE(worst, bound);
  EXPECT_LE(worst_clamped, 2 * bound);
  EXPECT_GE(worst_h / worst, 120.0) << "the extension adds 7 bits to h";
}

TEST(StateExt, Bf16CarriesSixteenBits) { check_precision<bf16>(-60.f, 60.f, std::ldexp(1.0, -16)); }
// From 2^-13: below fp16's smallest normal binade fp32's ulps halve, |d| reaches 2^13 and the code
// saturates (the subnormals, next test).
TEST(StateExt, Fp16CarriesNineteenBitsInItsNormalRange) {
  check_precision<f16>(-13.f, 15.f, std::ldexp(1.0, -19));
}

TEST(StateExt, Fp16SubnormalsAreNoWorseThanH) {
  for (float s = 1e-8f; s < 6.1e-5f; s *= 1.001f)
    for (float x : {s, -s}) {
      const double err = std::abs(double(round_trip<f16>(x)) - x);
      EXPECT_LE(err, std::abs(double(round_to(x, f16{})) - x) + 1e-12) << x;
    }
}

TEST(StateExt, ZeroAndExactValuesGiveCodeZero) {
  for (float s : {0.f, -0.f, 1.f, -2.5f, 0.375f, 1024.f}) {
    int e = -1;
    EXPECT_EQ(round_trip<bf16>(s, &e), s);
    EXPECT_EQ(e, 0) << s;
    EXPECT_EQ(round_trip<f16>(s, &e), s);
    EXPECT_EQ(e, 0) << s;
  }
}

TEST(StateExt, CodesAreClampedToOneSignedByte) {
  // The tie above h: d = +2^15 fp32 ulps would be code 128; a value far from h saturates.
  const float h = 1.f, tie = d::bit_cast<float>(d::bit_cast<int>(h) + (1 << 15));
  EXPECT_EQ(d::ext_byte(make_uint2(d::ext_code<bf16>(tie, h), 0u), 0), 127);
  EXPECT_EQ(d::ext_byte(make_uint2(d::ext_code<bf16>(3.f, h), 0u), 0), 127);
  EXPECT_EQ(d::ext_byte(make_uint2(d::ext_code<bf16>(-3.f, -h), 0u), 0), 127);
  EXPECT_EQ(d::ext_byte(make_uint2(d::ext_code<bf16>(0.25f, h), 0u), 0), -128);
}

TEST(StateExt, BytesSignExtendFromEitherWord) {
  const uint2 w = make_uint2(0x807f01ffu, 0x00fe8001u);
  const int want[8] = {-1, 1, 127, -128, 1, -128, -2, 0};
  for (int b = 0; b < 8; ++b) EXPECT_EQ(d::ext_byte(w, b), want[b]) << b;
}

// Byte 8t + 2k + b of each aligned 32 columns holds column 8k + 2t + b: the mma fragment of lane t
// of a quad (tiles k = 0..3, pairs b), so that the lane's 8 bytes are contiguous.
TEST(StateExt, FragmentOrderIsAPermutationOfEach32Columns) {
  std::set<int> seen;
  for (int c = 0; c < 128; ++c) {
    const int at = d::ext_column(c);
    EXPECT_EQ(at / 32, c / 32) << c;
    seen.insert(at);
    const int k = (c % 32) / 8, t = (c % 8) / 2, b = c % 2;
    EXPECT_EQ(at % 32, 8 * t + 2 * k + b) << c;
  }
  EXPECT_EQ(seen.size(), 128u);
}

}  // namespace
