// safetensors reader and writer, following the reference implementation
// (huggingface/safetensors, safetensors/src/tensor.rs):
//   - u64 LE header size N, then N bytes of UTF-8 JSON starting with '{' (trailing
//     spaces allowed), then the data section;
//   - each tensor's data_offsets [begin, end) are relative to the data section, and
//     the tensors, sorted by offset, tile it exactly: no gap, no overlap, nothing after;
//   - end - begin == numel * dtype size; "__metadata__" maps strings to strings.
#include "gdn/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "gdn/common.h"

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace gdn {

namespace {

using json = nlohmann::json;

// The reference refuses headers above 100 MB; so do we, before allocating anything.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4},   {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8}, {DType::I32, "I32", 4},   {DType::I16, "I16", 2}, {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},   {DType::BOOL, "BOOL", 1},
};

const DTypeEntry& dtype_entry(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e;
  fail("safetensors: invalid DType value ", int(d));
}

bool parse_dtype(const std::string& s, DType* out) {
  for (const auto& e : kDTypes)
    if (s == e.name) {
      *out = e.dtype;
      return true;
    }
  return false;
}

// numel * dtype size, or false on overflow.
bool checked_nbytes(const std::vector<int64_t>& shape, size_t elem, size_t* out) {
  uint64_t n = elem;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / uint64_t(d)) return false;
    n *= uint64_t(d);
  }
  *out = size_t(n);
  return true;
}

// Reads n bytes at the stream's position; false when the file ends first.
bool read_exact(std::ifstream& f, void* out, size_t n) {
  f.read(static_cast<char*>(out), std::streamsize(n));
  return size_t(f.gcount()) == n;
}

// Parses the header, recording the top-level keys so that duplicates (which a JSON
// object silently collapses) are rejected rather than resolved to the last one.
json parse_header(const std::string& path, const std::string& text) {
  std::set<std::string> keys;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!keys.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text, on_event);
  } catch (const json::exception& e) {
    fail("safetensors file ", path, ": header is not valid JSON (", e.what(), ")");
  }
  GDN_CHECK(duplicate.empty(), "safetensors file ", path, ": tensor ", duplicate, " appears twice in the header");
  GDN_CHECK(header.is_object(), "safetensors file ", path, ": header is not a JSON object");
  return header;
}

std::vector<int64_t> parse_shape(const std::string& where, const json& j) {
  GDN_CHECK(j.is_array(), where, ": shape must be an array of non-negative integers, got ", j.dump());
  std::vector<int64_t> shape;
  for (const auto& d : j) {
    GDN_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()), where,
              ": shape must be an array of non-negative integers, got ", j.dump());
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

}  // namespace

const char* dtype_name(DType d) { return dtype_entry(d).name; }
size_t dtype_size(DType d) { return dtype_entry(d).size; }

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// ---------------------------------------------------------------------------- reading

SafeTensorsFile SafeTensorsFile::load(const std::string& path) {
  const std::string& P = path;
  std::ifstream in(path, std::ios::binary);
  GDN_CHECK(in, "safetensors file ", P, ": cannot open (", std::strerror(errno), ")");
  std::error_code ec;
  GDN_CHECK(std::filesystem::is_regular_file(path, ec), "safetensors file ", P, ": not a regular file");
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  GDN_CHECK(!ec, "safetensors file ", P, ": cannot stat (", ec.message(), ")");
  uint64_t header_size = 0;
  GDN_CHECK(file_size >= 8 && read_exact(in, &header_size, 8), "safetensors file ", P, ": truncated (", file_size,
            " bytes, less than the 8-byte header size)");
  GDN_CHECK(header_size <= kMaxHeaderSize, "safetensors file ", P, ": header size ", header_size,
            " exceeds the 100 MB limit");
  GDN_CHECK(header_size <= file_size - 8, "safetensors file ", P, ": header size ", header_size,
            " is larger than the file (", file_size, " bytes): truncated or not safetensors");
  std::string text(header_size, '\0');
  GDN_CHECK(read_exact(in, text.data(), text.size()), "safetensors file ", P, ": read error in the header");
  GDN_CHECK(!text.empty() && text[0] == '{', "safetensors file ", P, ": header does not start with '{'");

  json header = parse_header(P, text);
  SafeTensorsFile f;
  f.path_ = path;
  struct Span {
    size_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      GDN_CHECK(entry.is_object(), "safetensors file ", P, ": __metadata__ must map strings to strings");
      for (auto& [key, value] : entry.items()) {
        GDN_CHECK(value.is_string(), "safetensors file ", P, ": __metadata__ value of ", key, " is not a string");
        f.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = cat("safetensors file ", P, ": tensor ", name);
    GDN_CHECK(entry.is_object(), where, ": entry must be an object with dtype, shape, data_offsets");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      GDN_CHECK(entry.contains(field), where, ": missing field ", field);
    TensorInfo info;
    const json& dt = entry["dtype"];
    GDN_CHECK(dt.is_string() && parse_dtype(dt.get<std::string>(), &info.dtype), where, ": unknown dtype ", dt.dump(),
              " (known: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
    info.shape = parse_shape(where, entry["shape"]);
    const json& off = entry["data_offsets"];
    GDN_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(), where,
              ": data_offsets must be two non-negative integers, got ", off.dump());
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    GDN_CHECK(begin <= end, where, ": data_offsets [", begin, ", ", end, "] end before they begin");
    size_t expected = 0;
    GDN_CHECK(checked_nbytes(info.shape, dtype_size(info.dtype), &expected), where, ": shape ", shape_str(info.shape),
              " overflows");
    GDN_CHECK(end - begin == expected, where, ": data_offsets [", begin, ", ", end, "] hold ", end - begin,
              " bytes, but ", dtype_name(info.dtype), " ", shape_str(info.shape), " needs ", expected);
    info.offset = size_t(begin);
    info.nbytes = size_t(end - begin);
    spans.push_back({size_t(begin), size_t(end), name});
    f.tensors_.emplace(name, std::move(info));
  }

  // The tensors must tile [0, data size) exactly.
  const size_t data_size = size_t(file_size - 8 - header_size);
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  size_t at = 0;
  for (const auto& s : spans) {
    GDN_CHECK(s.begin == at, "safetensors file ", P, ": tensor ", s.name, ": data_offsets begin at ", s.begin,
              " but the previous tensor ends at ", at, s.begin < at ? " (overlap)" : " (gap)");
    GDN_CHECK(s.end <= data_size, "safetensors file ", P, ": tensor ", s.name, ": data_offsets end at ", s.end,
              " beyond the data section (", data_size, " bytes): truncated file");
    at = s.end;
  }
  GDN_CHECK(at == data_size, "safetensors file ", P, ": the tensors cover ", at, " bytes of the ", data_size,
            "-byte data section (trailing bytes)");
  f.data_.resize(data_size);
  GDN_CHECK(read_exact(in, f.data_.data(), data_size), "safetensors file ", P, ": read error in the data section");
  return f;
}

std::vector<std::string> SafeTensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, info] : tensors_) out.push_back(name);
  return out;
}

const TensorInfo& SafeTensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  GDN_CHECK(it != tensors_.end(), "safetensors file ", path_, ": no tensor named ", name);
  return it->second;
}

const uint8_t* SafeTensorsFile::raw(const std::string& name) const { return data_.data() + info(name).offset; }

namespace {

template <class Out>
std::vector<Out> convert_float(const std::string& path, const std::string& name, const TensorInfo& ti, const uint8_t* p,
                               const char* want) {
  const size_t n = size_t(ti.numel());
  std::vector<Out> out(n);
  auto load = [&](auto tag) {
    using S = decltype(tag);
    for (size_t i = 0; i < n; ++i) {
      S x;
      std::memcpy(&x, p + i * sizeof(S), sizeof(S));
      if constexpr (std::is_same_v<S, uint16_t>)
        out[i] = Out(ti.dtype == DType::BF16 ? bf16_to_f32(x) : f16_to_f32(x));
      else
        out[i] = Out(x);
    }
  };
  switch (ti.dtype) {
    case DType::F64:
      load(double{});
      break;
    case DType::F32:
      load(float{});
      break;
    case DType::F16:
    case DType::BF16:
      load(uint16_t{});
      break;
    default:
      fail("tensor ", name, " in ", path, ": expected a floating-point dtype (", want, "), got ", dtype_name(ti.dtype));
  }
  return out;
}

}  // namespace

std::vector<float> SafeTensorsFile::get_f32(const std::string& name) const {
  const TensorInfo& ti = info(name);
  return convert_float<float>(path_, name, ti, raw(name), "F32, F16, BF16 or F64");
}

std::vector<float> SafeTensorsFile::get_f32(const std::string& name, const std::vector<int64_t>& expected) const {
  const TensorInfo& ti = info(name);
  GDN_CHECK(ti.shape == expected, "tensor ", name, " in ", path_, ": expected shape ", shape_str(expected), ", got ",
            shape_str(ti.shape));
  return get_f32(name);
}

std::vector<double> SafeTensorsFile::get_f64(const std::string& name) const {
  const TensorInfo& ti = info(name);
  return convert_float<double>(path_, name, ti, raw(name), "F64, F32, F16 or BF16");
}

std::vector<int32_t> SafeTensorsFile::get_i32(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const uint8_t* p = raw(name);
  const size_t n = size_t(ti.numel());
  std::vector<int32_t> out(n);
  if (ti.dtype == DType::I32) {
    std::memcpy(out.data(), p, n * 4);
  } else if (ti.dtype == DType::I64) {
    for (size_t i = 0; i < n; ++i) {
      int64_t x;
      std::memcpy(&x, p + i * 8, 8);
      GDN_CHECK(x >= std::numeric_limits<int32_t>::min() && x <= std::numeric_limits<int32_t>::max(), "tensor ", name,
                " in ", path_, ": element ", i, " = ", x, " does not fit in int32");
      out[i] = int32_t(x);
    }
  } else {
    fail("tensor ", name, " in ", path_, ": expected dtype I32 or I64, got ", dtype_name(ti.dtype));
  }
  return out;
}

// ---------------------------------------------------------------------------- writing

void SafeTensorsWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data) {
  GDN_CHECK(!name.empty() && name != "__metadata__", "safetensors writer: invalid tensor name '", name, "'");
  for (const auto& e : entries_) GDN_CHECK(e.name != name, "safetensors writer: tensor ", name, " added twice");
  size_t nbytes = 0;
  GDN_CHECK(checked_nbytes(shape, dtype_size(dtype), &nbytes), "safetensors writer: tensor ", name, ": invalid shape ",
            shape_str(shape));
  GDN_CHECK(nbytes == 0 || data, "safetensors writer: tensor ", name, ": null data");
  Entry e{name, dtype, shape, std::vector<uint8_t>(nbytes)};
  if (nbytes) std::memcpy(e.bytes.data(), data, nbytes);
  entries_.push_back(std::move(e));
}

void SafeTensorsWriter::add_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
  add(name, DType::F32, shape, data);
}

void SafeTensorsWriter::add_i32(const std::string& name, const std::vector<int64_t>& shape, const int32_t* data) {
  add(name, DType::I32, shape, data);
}

void SafeTensorsWriter::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

void SafeTensorsWriter::write(const std::string& path) const {
  // As the reference serializer: tensors ordered by dtype size (largest first), then
  // name, so that with the data section starting at a multiple of 8 every tensor is
  // aligned to its element size.
  std::vector<const Entry*> order;
  for (const auto& e : entries_) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    const size_t sa = dtype_size(a->dtype), sb = dtype_size(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });
  json header = json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  size_t offset = 0;
  for (const Entry* e : order) {
    header[e->name] = {
        {"dtype", dtype_name(e->dtype)}, {"shape", e->shape}, {"data_offsets", {offset, offset + e->bytes.size()}}};
    offset += e->bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_size = text.size();

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  GDN_CHECK(fd >= 0, "safetensors file ", path, ": cannot create ", tmp, " (", std::strerror(errno), ")");
  auto write_all = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd, c, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        const int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        fail("safetensors file ", path, ": write to ", tmp, " failed (", std::strerror(err), ")");
      }
      c += w;
      n -= size_t(w);
    }
  };
  write_all(&header_size, 8);
  write_all(text.data(), text.size());
  for (const Entry* e : order) write_all(e->bytes.data(), e->bytes.size());
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("safetensors file ", path, ": fsync/close of ", tmp, " failed (", std::strerror(err), ")");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("safetensors file ", path, ": rename from ", tmp, " failed (", std::strerror(err), ")");
  }
}

// ---------------------------------------------------------------------------- bf16 / f16

float bf16_to_f32(uint16_t x) { return std::bit_cast<float>(uint32_t(x) << 16); }

uint16_t f32_to_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  if (std::isnan(x)) return uint16_t((u >> 16) | 0x0040);  // keep sign and payload top, force quiet
  // Round to nearest even: add 0x7fff plus the lowest kept bit; overflow rounds to inf.
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  // Zero or subnormal: mant * 2^-24, exact in fp32.
  const float mag = std::ldexp(float(mant), -24);
  return sign ? -mag : mag;
}

uint16_t f32_to_f16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u)  // inf or nan (quiet, keeping the top payload bits)
    return uint16_t(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u | ((abs >> 13) & 0x3ffu) : 0u));
  const int exp = int(abs >> 23) - 127;            // unbiased
  if (exp >= 16) return uint16_t(sign | 0x7c00u);  // overflow
  if (exp >= -14) {
    // Normal: keep 10 mantissa bits, round to nearest even on the 13 dropped ones; a
    // carry out of the mantissa correctly bumps the exponent (up to inf).
    const uint32_t m = abs & 0x7fffffu;
    uint32_t h = (uint32_t(exp + 15) << 10) | (m >> 13);
    const uint32_t rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return uint16_t(sign | h);
  }
  if (exp < -25) return sign;  // below half the smallest subnormal: +-0
  // Subnormal: value = mant24 * 2^(exp-23), target unit 2^-24, so shift by -1-exp.
  const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
  const int shift = -1 - exp;  // 14..24
  uint32_t h = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rest > half || (rest == half && (h & 1u))) ++h;
  return uint16_t(sign | h);
}

}  // namespace gdn
