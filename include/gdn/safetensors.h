// safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
// then the raw little-endian data. The reader validates everything it is given and throws
// gdn::Error naming the file and the tensor; the writer replaces files atomically.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace gdn {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };
const char* dtype_name(DType d);
size_t dtype_size(DType d);

struct TensorInfo {
  DType dtype;
  std::vector<int64_t> shape;
  size_t offset = 0;  // into the data section
  size_t nbytes = 0;
  int64_t numel() const;
};

std::string shape_str(const std::vector<int64_t>& shape);  // "[2, 3, 4]"

class SafeTensorsFile {
 public:
  // Reads and validates the whole file. Throws gdn::Error for a missing, truncated or
  // malformed file (bad header length, bad JSON, unknown dtype, offsets out of range,
  // overlapping or gapped data, size not matching shape x dtype).
  static SafeTensorsFile load(const std::string& path);

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  std::vector<std::string> names() const;  // sorted
  const TensorInfo& info(const std::string& name) const;  // throws naming the tensor if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Converting reads. The expected-shape overloads throw "tensor NAME in FILE: expected
  // shape [..], got [..]" on mismatch. get_f32 accepts F32/F16/BF16/F64.
  std::vector<float> get_f32(const std::string& name) const;
  std::vector<float> get_f32(const std::string& name, const std::vector<int64_t>& expected) const;
  std::vector<double> get_f64(const std::string& name) const;
  std::vector<int32_t> get_i32(const std::string& name) const;  // accepts I32/I64 (range-checked)
  const uint8_t* raw(const std::string& name) const;

 private:
  std::string path_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  std::vector<uint8_t> data_;
};

class SafeTensorsWriter {
 public:
  // Copies the data. Names must be unique.
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data);
  void add_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data);
  void add_i32(const std::string& name, const std::vector<int64_t>& shape, const int32_t* data);
  void set_metadata(const std::string& key, const std::string& value);
  // Writes PATH.tmp, fsyncs it, renames it over PATH: a crash never leaves a torn file.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// bf16 / fp16 <-> fp32 conversions (round to nearest even).
float bf16_to_f32(uint16_t x);
uint16_t f32_to_bf16(float x);
float f16_to_f32(uint16_t x);
uint16_t f32_to_f16(float x);

}  // namespace gdn
