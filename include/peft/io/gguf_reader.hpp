// Reads a GGUF v3 file back, checking every length and offset against the file's size: the
// check that what we export is a well-formed file (export validates its own output through it)
// and the way tests and `export --check` look at metadata and tensors. Only the tensor types we
// write are decoded (f32, f16, bf16, q8_0); others are reported by name.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "peft/io/gguf_format.hpp"
#include "peft/io/safetensors_reader.hpp"  // detail::MappedFile, format_shape

namespace peft::gguf {

// A metadata value: integers widen to int64 (u64 to uint64), floats to double; arrays keep their
// element type and hold numbers or strings.
struct Value {
  ValueType type = ValueType::U8;
  ValueType element = ValueType::U8;  // for arrays
  std::variant<std::int64_t, std::uint64_t, double, bool, std::string> scalar;
  std::vector<double> numbers;
  std::vector<std::string> strings;
};

struct TensorInfo {
  std::string name;
  std::vector<std::int64_t> shape;  // PyTorch order (outermost first)
  TensorType type = TensorType::F32;
  std::uint64_t offset = 0;         // from the start of the file
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

class GgufFile {
 public:
  static GgufFile open(const std::filesystem::path& path) {
    GgufFile f;
    f.path_ = path;
    f.file_ = std::make_shared<peft::detail::MappedFile>(path);
    f.parse();
    return f;
  }

  std::uint32_t version() const { return version_; }
  std::uint64_t alignment() const { return alignment_; }
  std::uint64_t data_offset() const { return data_offset_; }
  const std::map<std::string, Value>& metadata() const { return kv_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  const Value& value(const std::string& key) const {
    const auto it = kv_.find(key);
    require(it != kv_.end(), "{}: no metadata key '{}'", path_.string(), key);
    return it->second;
  }
  bool contains(const std::string& key) const { return kv_.count(key) != 0; }
  std::string string(const std::string& key) const {
    const Value& v = value(key);
    require(v.type == ValueType::String, "{}: metadata '{}' is not a string", path_.string(), key);
    return std::get<std::string>(v.scalar);
  }
  // Any integer key as int64 (u64 beyond its range is an error).
  std::int64_t integer(const std::string& key) const {
    const Value& v = value(key);
    if (const auto* i = std::get_if<std::int64_t>(&v.scalar)) return *i;
    if (const auto* u = std::get_if<std::uint64_t>(&v.scalar)) return static_cast<std::int64_t>(*u);
    fail("{}: metadata '{}' is not an integer", path_.string(), key);
  }
  double number(const std::string& key) const {
    const Value& v = value(key);
    if (const auto* d = std::get_if<double>(&v.scalar)) return *d;
    return static_cast<double>(integer(key));
  }

  const TensorInfo& tensor(const std::string& name) const {
    for (const auto& t : tensors_)
      if (t.name == name) return t;
    fail("{}: no tensor '{}'", path_.string(), name);
  }
  bool has_tensor(const std::string& name) const {
    for (const auto& t : tensors_)
      if (t.name == name) return true;
    return false;
  }
  std::vector<float> read_f32(const std::string& name) const {
    const TensorInfo& t = tensor(name);
    std::vector<float> v(static_cast<std::size_t>(t.numel()));
    decode_values(t.type, file_->data() + t.offset, v);
    return v;
  }
  const std::byte* bytes(const TensorInfo& t) const { return file_->data() + t.offset; }

 private:
  const std::byte* need(std::uint64_t n, const char* what) {
    require(n <= file_->size() && pos_ <= file_->size() - n, "{}: truncated at byte {} (reading {})",
            path_.string(), pos_, what);
    const std::byte* p = file_->data() + pos_;
    pos_ += n;
    return p;
  }
  template <class T>
  T get(const char* what) {
    T v;
    std::memcpy(&v, need(sizeof(T), what), sizeof(T));
    return v;
  }
  std::string get_string(const char* what) {
    const auto n = get<std::uint64_t>(what);
    const std::byte* p = need(n, what);
    return std::string(reinterpret_cast<const char*>(p), n);
  }
  // A scalar of `type` as a number (for arrays) or into v.scalar.
  void get_scalar(ValueType type, Value& v, const std::string& key) {
    switch (type) {
      case ValueType::U8: v.scalar = std::int64_t(get<std::uint8_t>("u8")); return;
      case ValueType::I8: v.scalar = std::int64_t(get<std::int8_t>("i8")); return;
      case ValueType::U16: v.scalar = std::int64_t(get<std::uint16_t>("u16")); return;
      case ValueType::I16: v.scalar = std::int64_t(get<std::int16_t>("i16")); return;
      case ValueType::U32: v.scalar = std::int64_t(get<std::uint32_t>("u32")); return;
      case ValueType::I32: v.scalar = std::int64_t(get<std::int32_t>("i32")); return;
      case ValueType::U64: v.scalar = get<std::uint64_t>("u64"); return;
      case ValueType::I64: v.scalar = get<std::int64_t>("i64"); return;
      case ValueType::F32: v.scalar = double(get<float>("f32")); return;
      case ValueType::F64: v.scalar = get<double>("f64"); return;
      case ValueType::Bool: {
        const auto b = get<std::uint8_t>("bool");
        require(b <= 1, "{}: metadata '{}' holds a bool of value {}", path_.string(), key, b);
        v.scalar = b == 1;
        return;
      }
      case ValueType::String: v.scalar = get_string("string"); return;
      default: fail("{}: metadata '{}' has unknown value type {}", path_.string(), key, std::uint32_t(type));
    }
  }

  void parse() {
    const std::string file = path_.string();
    require(get<std::uint32_t>("magic") == kMagic, "{}: not a GGUF file (no 'GGUF' magic)", file);
    version_ = get<std::uint32_t>("version");
    require(version_ == kVersion, "{}: GGUF version {}, expected {}", file, version_, kVersion);
    const auto n_tensors = get<std::uint64_t>("tensor count");
    const auto n_kv = get<std::uint64_t>("metadata count");
    // Each entry takes at least 8 bytes, which bounds honest counts by the file size.
    require(n_tensors <= file_->size() / 8 && n_kv <= file_->size() / 8,
            "{}: header claims {} tensors and {} metadata entries, more than the file can hold", file, n_tensors, n_kv);
    for (std::uint64_t i = 0; i < n_kv; ++i) {
      std::string key = get_string("metadata key");
      Value v;
      v.type = static_cast<ValueType>(get<std::uint32_t>("value type"));
      if (v.type == ValueType::Array) {
        v.element = static_cast<ValueType>(get<std::uint32_t>("array type"));
        const auto n = get<std::uint64_t>("array length");
        require(n <= file_->size() - pos_, "{}: metadata '{}' claims {} elements, more than the file holds", file,
                key, n);
        require(v.element != ValueType::Array, "{}: metadata '{}' nests arrays", file, key);
        for (std::uint64_t j = 0; j < n; ++j) {
          Value e;
          get_scalar(v.element, e, key);
          if (auto* s = std::get_if<std::string>(&e.scalar)) v.strings.push_back(std::move(*s));
          else if (auto* d = std::get_if<double>(&e.scalar)) v.numbers.push_back(*d);
          else if (auto* b = std::get_if<bool>(&e.scalar)) v.numbers.push_back(*b);
          else if (auto* u = std::get_if<std::uint64_t>(&e.scalar)) v.numbers.push_back(double(*u));
          else v.numbers.push_back(double(std::get<std::int64_t>(e.scalar)));
        }
      } else {
        get_scalar(v.type, v, key);
      }
      require(kv_.emplace(key, std::move(v)).second, "{}: metadata key '{}' appears twice", file, key);
    }
    if (contains("general.alignment")) {
      const auto a = integer("general.alignment");
      require(a > 0 && (a & (a - 1)) == 0, "{}: general.alignment {} is not a power of two", file, a);
      alignment_ = static_cast<std::uint64_t>(a);
    }
    std::vector<std::uint64_t> relative;
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
      TensorInfo t;
      t.name = get_string("tensor name");
      const auto dims = get<std::uint32_t>("tensor dimensions");
      require(dims >= 1 && dims <= 4, "{}: tensor '{}' has {} dimensions", file, t.name, dims);
      t.shape.resize(dims);
      for (std::uint32_t d = 0; d < dims; ++d) {
        const auto n = get<std::uint64_t>("tensor dimension");
        require(n >= 1 && n <= (1ull << 40), "{}: tensor '{}' has a dimension {}", file, t.name, n);
        t.shape[dims - 1 - d] = static_cast<std::int64_t>(n);
      }
      const auto type = get<std::uint32_t>("tensor type");
      require(is_known_tensor_type(type), "{}: tensor '{}' has ggml type {}, which we do not read (f32, f16, bf16, "
              "q8_0)", file, t.name, type);
      t.type = static_cast<TensorType>(type);
      require(t.type != TensorType::Q8_0 || t.shape.back() % kQ8_0BlockValues == 0,
              "{}: q8_0 tensor '{}' {} has rows that are not whole blocks of 32", file, t.name, format_shape(t.shape));
      relative.push_back(get<std::uint64_t>("tensor offset"));
      for (const auto& other : tensors_) require(other.name != t.name, "{}: tensor '{}' appears twice", file, t.name);
      tensors_.push_back(std::move(t));
    }
    data_offset_ = (pos_ + alignment_ - 1) / alignment_ * alignment_;
    std::uint64_t end = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      TensorInfo& t = tensors_[i];
      require(relative[i] % alignment_ == 0, "{}: tensor '{}' at offset {} is not aligned to {}", file, t.name,
              relative[i], alignment_);
      require(relative[i] >= end, "{}: tensor '{}' overlaps the tensor before it", file, t.name);
      const std::uint64_t n = tensor_bytes(t.type, t.numel());
      t.offset = data_offset_ + relative[i];
      require(t.offset <= file_->size() && n <= file_->size() - t.offset,
              "{}: tensor '{}' {} ({} bytes at {}) runs past the end of the file ({} bytes)", file, t.name,
              format_shape(t.shape), n, t.offset, file_->size());
      end = relative[i] + n;
    }
  }

  std::filesystem::path path_;
  std::shared_ptr<peft::detail::MappedFile> file_;  // qualified: gguf::detail (gguf_qwen2.hpp) would hide it
  std::size_t pos_ = 0;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = kDefaultAlignment;
  std::uint64_t data_offset_ = 0;
  std::map<std::string, Value> kv_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace peft::gguf
