// safetensors: round trips of every dtype, the bf16/f16 conversions, and every kind of
// malformed file the reader must reject (with the file and tensor named).
#include <gtest/gtest.h>
#include <immintrin.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "gdn/common.h"
#include "temp_dir.h"
#include "gdn/safetensors.h"

namespace fs = std::filesystem;
using gdn::DType;

namespace {

using gdn::test::TempDir;

std::mt19937_64& rng() {
  static std::mt19937_64 r{std::random_device{}()};
  return r;
}

// A file made by hand: 8-byte size, header text as given, then `data_bytes` bytes.
std::string write_raw(const TempDir& dir, const std::string& header, size_t data_bytes,
                      std::optional<uint64_t> header_size = std::nullopt) {
  const std::string path = dir.file("raw.safetensors");
  std::ofstream f(path, std::ios::binary);
  const uint64_t n = header_size.value_or(header.size());
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header;
  f << std::string(data_bytes, '\x01');
  return path;
}

void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "expected a gdn::Error";
  } catch (const gdn::Error& e) {
    for (const auto& s : needles)
      EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what() << "\n  missing: " << s;
  }
}

void expect_rejected(const std::string& header, size_t data_bytes, std::initializer_list<std::string> needles) {
  TempDir dir;
  const std::string path = write_raw(dir, header, data_bytes);
  std::vector<std::string> all{path};
  all.insert(all.end(), needles);
  try {
    gdn::SafeTensorsFile::load(path);
    ADD_FAILURE() << "accepted: " << header;
  } catch (const gdn::Error& e) {
    for (const auto& s : all)
      EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what() << "\n  missing: " << s;
  }
}

}  // namespace

TEST(SafeTensors, RoundTripEveryDtype) {
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  struct Item {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Item> items;
  const DType dtypes[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                          DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};
  std::uniform_int_distribution<int> dim(1, 7);
  for (DType d : dtypes) {
    std::vector<int64_t> shape{dim(rng()), dim(rng()), dim(rng())};
    size_t n = size_t(shape[0] * shape[1] * shape[2]) * gdn::dtype_size(d);
    std::vector<uint8_t> bytes(n);
    for (auto& b : bytes) b = uint8_t(rng()());
    if (d == DType::BOOL)
      for (auto& b : bytes) b &= 1;
    items.push_back({std::string("t_") + gdn::dtype_name(d), d, shape, bytes});
  }
  items.push_back({"scalar", DType::F32, {}, std::vector<uint8_t>(4, 7)});
  items.push_back({"empty", DType::F16, {0, 3}, {}});
  items.push_back({"odd_u8", DType::U8, {3}, {1, 2, 3}});  // makes the larger dtypes' alignment matter

  gdn::SafeTensorsWriter w;
  for (const auto& it : items) w.add(it.name, it.dtype, it.shape, it.bytes.data());
  w.set_metadata("format", "pt");
  w.set_metadata("note", "ünïcode \"quoted\"");
  w.write(path);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const auto f = gdn::SafeTensorsFile::load(path);
  ASSERT_EQ(f.names().size(), items.size());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "ünïcode \"quoted\"");
  for (const auto& it : items) {
    const auto& info = f.info(it.name);
    EXPECT_EQ(info.dtype, it.dtype) << it.name;
    EXPECT_EQ(info.shape, it.shape) << it.name;
    ASSERT_EQ(info.nbytes, it.bytes.size()) << it.name;
    EXPECT_EQ(info.offset % gdn::dtype_size(it.dtype), 0u) << it.name << " is not aligned";
    if (!it.bytes.empty()) EXPECT_EQ(std::memcmp(f.raw(it.name), it.bytes.data(), it.bytes.size()), 0) << it.name;
  }

  // The layout of the reference serializer: header padded with spaces to a multiple of 8.
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
  std::string header(n, '\0');
  in.read(header.data(), std::streamsize(n));
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
}

TEST(SafeTensors, ConvertingReads) {
  TempDir dir;
  const std::string path = dir.file("conv.safetensors");
  std::normal_distribution<float> normal;
  std::vector<float> x(37);
  for (auto& e : x) e = normal(rng());
  std::vector<double> xd(x.begin(), x.end());
  std::vector<uint16_t> xb(x.size()), xh(x.size());
  for (size_t i = 0; i < x.size(); ++i) xb[i] = gdn::f32_to_bf16(x[i]), xh[i] = gdn::f32_to_f16(x[i]);
  std::vector<int64_t> idx{0, -5, 2147483647, -2147483648LL};
  std::vector<int64_t> too_big{int64_t(1) << 31};
  gdn::SafeTensorsWriter w;
  w.add_f32("f32", {37}, x.data());
  w.add("f64", DType::F64, {37}, xd.data());
  w.add("bf16", DType::BF16, {37}, xb.data());
  w.add("f16", DType::F16, {37}, xh.data());
  w.add("i64", DType::I64, {4}, idx.data());
  w.add("i64_big", DType::I64, {1}, too_big.data());
  w.write(path);
  // Overwriting an existing file works (rename over it).
  w.write(path);

  const auto f = gdn::SafeTensorsFile::load(path);
  EXPECT_EQ(f.get_f32("f32"), x);
  EXPECT_EQ(f.get_f32("f64"), x);
  EXPECT_EQ(f.get_f64("f64"), xd);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(f.get_f32("bf16")[i], gdn::bf16_to_f32(xb[i]));
    EXPECT_EQ(f.get_f32("f16")[i], gdn::f16_to_f32(xh[i]));
    EXPECT_NEAR(f.get_f32("bf16")[i], x[i], std::abs(x[i]) * 0x1p-8f);
    EXPECT_NEAR(f.get_f32("f16")[i], x[i], std::max(std::abs(x[i]) * 0x1p-11f, 0x1p-25f));
  }
  EXPECT_EQ(f.get_i32("i64"), (std::vector<int32_t>{0, -5, 2147483647, -2147483647 - 1}));
  expect_error([&] { f.get_i32("i64_big"); }, {"i64_big", path, "int32"});
  expect_error([&] { f.get_i32("f32"); }, {"f32", path, "I32"});
  expect_error([&] { f.get_f32("i64"); }, {"i64", path, "floating"});
  expect_error([&] { f.get_f32("f32", {36}); }, {"f32", path, "expected shape [36], got [37]"});
  expect_error([&] { f.info("missing"); }, {"missing", path});
  EXPECT_EQ(f.get_f32("f32", {37}).size(), 37u);
}

TEST(SafeTensors, WriterRejectsBadInput) {
  gdn::SafeTensorsWriter w;
  float x = 1;
  w.add_f32("a", {1}, &x);
  expect_error([&] { w.add_f32("a", {1}, &x); }, {"a", "twice"});
  expect_error([&] { w.add_f32("__metadata__", {1}, &x); }, {"__metadata__"});
  expect_error([&] { w.add_f32("b", {-1}, &x); }, {"b", "[-1]"});
  expect_error([&] { w.write("/nonexistent_dir_gdn/x.safetensors"); }, {"/nonexistent_dir_gdn/x.safetensors"});
}

// ------------------------------------------------------------------ bf16 / f16

TEST(SafeTensors, HalfConversionsExactValues) {
  EXPECT_EQ(gdn::f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(gdn::f32_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(gdn::f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(gdn::f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(gdn::f32_to_f16(65504.0f), 0x7bff);  // largest f16
  EXPECT_EQ(gdn::f32_to_f16(65520.0f), 0x7c00);  // rounds up to inf
  EXPECT_EQ(gdn::f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(gdn::f32_to_f16(0x1p-24f), 0x0001);    // smallest subnormal
  EXPECT_EQ(gdn::f32_to_f16(0x1p-25f), 0x0000);    // tie, to even (zero)
  EXPECT_EQ(gdn::f32_to_f16(0x1.8p-24f), 0x0002);  // tie, to even (2)
  EXPECT_EQ(gdn::f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(gdn::f32_to_f16(INFINITY), 0x7c00);
  EXPECT_EQ(gdn::f32_to_bf16(-INFINITY), 0xff80);
  // Ties to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10 in f16.
  EXPECT_EQ(gdn::f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
  EXPECT_EQ(gdn::f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
  EXPECT_EQ(gdn::f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  EXPECT_EQ(gdn::f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_EQ(gdn::f32_to_bf16(std::bit_cast<float>(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to inf
  EXPECT_TRUE(std::isnan(gdn::bf16_to_f32(gdn::f32_to_bf16(NAN))));
  EXPECT_TRUE(std::isnan(gdn::f16_to_f32(gdn::f32_to_f16(NAN))));
  // A NaN whose payload sits only in the low bits must stay NaN, not become inf.
  EXPECT_TRUE(std::isnan(gdn::bf16_to_f32(gdn::f32_to_bf16(std::bit_cast<float>(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(gdn::f16_to_f32(gdn::f32_to_f16(std::bit_cast<float>(0x7f800001u)))));
  EXPECT_EQ(gdn::f16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(gdn::f16_to_f32(0x8400), -0x1p-14f);
}

TEST(SafeTensors, HalfConversionsRoundTripEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float fb = gdn::bf16_to_f32(uint16_t(h)), fh = gdn::f16_to_f32(uint16_t(h));
    if (!std::isnan(fb)) EXPECT_EQ(gdn::f32_to_bf16(fb), h) << std::hex << h;
    if (!std::isnan(fh)) EXPECT_EQ(gdn::f32_to_f16(fh), h) << std::hex << h;
  }
}

// Random floats over the whole range against independent references: the nearest of the
// two bf16 candidates computed in double, and the CPU's F16C conversion.
TEST(SafeTensors, HalfConversionsRoundToNearestEven) {
  std::uniform_int_distribution<uint32_t> bits;
  std::uniform_real_distribution<float> near_f16(-70000.f, 70000.f);
  for (int i = 0; i < 400000; ++i) {
    float x = std::bit_cast<float>(bits(rng()));
    if (i % 2) x = near_f16(rng()) * std::ldexp(1.0f, -int(bits(rng()) % 40));  // dense in f16's range
    if (std::isnan(x)) continue;
    const uint32_t u = std::bit_cast<uint32_t>(x);
    const uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);
    const double d_lo = std::abs(double(gdn::bf16_to_f32(lo)) - x);
    // Rounding treats infinity as 2^128, the next value the exponent would give.
    const double v_hi = std::isinf(gdn::bf16_to_f32(hi)) ? std::copysign(0x1p128, x) : double(gdn::bf16_to_f32(hi));
    const double d_hi = std::isnan(v_hi) ? INFINITY : std::abs(v_hi - x);
    const uint16_t want = (u & 0xffff) == 0 ? lo : d_lo < d_hi ? lo : d_hi < d_lo ? hi : (lo & 1 ? hi : lo);
    ASSERT_EQ(gdn::f32_to_bf16(x), want) << std::hexfloat << x;
#ifdef __F16C__
    ASSERT_EQ(gdn::f32_to_f16(x), _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)) << std::hexfloat << x;
    const uint16_t h = uint16_t(bits(rng()));
    if (!std::isnan(gdn::f16_to_f32(h))) ASSERT_EQ(gdn::f16_to_f32(h), _cvtsh_ss(h)) << std::hex << h;
#endif
  }
}

// ------------------------------------------------------------------ malformed files

TEST(SafeTensors, AcceptsHandWrittenFileWithPaddingAndMetadata) {
  TempDir dir;
  const std::string header = R"({"__metadata__":{"k":"v"},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},)"
                             R"("a":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}}      )";
  const auto f = gdn::SafeTensorsFile::load(write_raw(dir, header, 6));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f.info("b").offset, 4u);
  EXPECT_EQ(f.metadata().at("k"), "v");
}

TEST(SafeTensors, RejectsMalformedFiles) {
  const std::string ok_a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  // Header and framing.
  {
    TempDir dir;
    const std::string path = dir.file("short.safetensors");
    std::ofstream(path, std::ios::binary) << "abc";
    expect_error([&] { gdn::SafeTensorsFile::load(path); }, {path, "truncated"});
    expect_error([&] { gdn::SafeTensorsFile::load(dir.file("absent")); }, {dir.file("absent"), "cannot open"});
    expect_error([&] { gdn::SafeTensorsFile::load(dir.file("")); }, {dir.file("")});
    const std::string big = write_raw(dir, "{" + ok_a + "}", 8, 1000);
    expect_error([&] { gdn::SafeTensorsFile::load(big); }, {big, "larger than the file"});
    const std::string huge = write_raw(dir, "{" + ok_a + "}", 8, uint64_t(1) << 62);
    expect_error([&] { gdn::SafeTensorsFile::load(huge); }, {huge, "header size"});
  }
  expect_rejected(R"( {"a":1})", 0, {"'{'"});
  expect_rejected(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8, {"not valid JSON"});
  expect_rejected(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x)", 8, {"not valid JSON"});
  expect_rejected(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
      16, {"tensor a", "twice"});
  // Entries.
  expect_rejected(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2, {"tensor a", "unknown dtype"});
  expect_rejected(R"({"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", 8, {"tensor a", "unknown dtype"});
  expect_rejected(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, {"tensor a", "shape"});
  expect_rejected(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,10]}})", 10, {"tensor a", "shape"});
  expect_rejected(R"({"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", 8, {"tensor a", "shape"});
  expect_rejected(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8, {"tensor a", "missing field shape"});
  expect_rejected(R"({"a":{"dtype":"F32","shape":[2]}})", 8, {"tensor a", "missing field data_offsets"});
  expect_rejected(R"({"a":[1,2]})", 8, {"tensor a"});
  expect_rejected(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8, {"tensor a", "data_offsets"});
  expect_rejected(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8, {"tensor a", "data_offsets"});
  expect_rejected(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, {"tensor a", "data_offsets"});
  expect_rejected(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, {"tensor a", "needs 12"});
  expect_rejected(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", 8,
                  {"tensor a", "overflows"});
  expect_rejected(R"({"__metadata__":{"k":1},)" + ok_a + "}", 8, {"__metadata__"});
  expect_rejected(R"({"__metadata__":["k"],)" + ok_a + "}", 8, {"__metadata__"});
  // Tiling of the data section.
  expect_rejected("{" + ok_a + "}", 4, {"tensor a", "truncated"});
  expect_rejected("{" + ok_a + "}", 12, {"trailing"});
  expect_rejected("{" + ok_a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, {"tensor b", "overlap"});
  expect_rejected("{" + ok_a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})", 16, {"tensor b", "gap"});
  expect_rejected(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, {"tensor b", "gap"});
}
