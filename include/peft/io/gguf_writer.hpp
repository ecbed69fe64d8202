// Writes a GGUF v3 file (llama.cpp's single-file model format): header, typed metadata, tensor
// infos, then each tensor's bytes at an offset aligned to general.alignment (32). Tensors are
// produced at write() through callbacks, a bounded window of them at a time on several threads, so
// a 7B model is never held twice in memory. The file appears atomically (temp + rename): a failed
// write leaves nothing behind, and an existing file is replaced only when the caller says so.
// Numbers are written in the host's byte order, which GGUF requires to be little-endian (every
// machine we build for).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "peft/core/parallel_map.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/gguf_format.hpp"

namespace peft::gguf {

class GgufWriter {
 public:
  // fill(values): the tensor's values in PyTorch (row-major) order, numel of them. write() calls the
  // fills of several tensors at once, on threads of its own: a fill only reads what it captured.
  using Fill = std::function<void(std::span<float> values)>;

  void set_u32(const std::string& key, std::uint32_t v) { scalar(key, ValueType::U32, &v, 4); }
  void set_i32(const std::string& key, std::int32_t v) { scalar(key, ValueType::I32, &v, 4); }
  void set_f32(const std::string& key, float v) { scalar(key, ValueType::F32, &v, 4); }
  void set_bool(const std::string& key, bool v) {
    const std::uint8_t b = v ? 1 : 0;
    scalar(key, ValueType::Bool, &b, 1);
  }
  void set_string(const std::string& key, std::string_view v) {
    std::string& out = begin_kv(key, ValueType::String);
    put_string(out, v);
  }
  void set_strings(const std::string& key, const std::vector<std::string>& v) {
    std::string& out = begin_kv(key, ValueType::Array);
    put_u32(out, static_cast<std::uint32_t>(ValueType::String));
    put_u64(out, v.size());
    for (const auto& s : v) put_string(out, s);
  }
  void set_i32s(const std::string& key, const std::vector<std::int32_t>& v) {
    std::string& out = begin_kv(key, ValueType::Array);
    put_u32(out, static_cast<std::uint32_t>(ValueType::I32));
    put_u64(out, v.size());
    out.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  }

  // shape: PyTorch order ([rows, cols] for a matrix); written innermost first.
  void add_tensor(const std::string& name, std::vector<std::int64_t> shape, TensorType type, Fill fill) {
    require(names_.insert(name).second, "GGUF: tensor '{}' added twice", name);
    require(!shape.empty() && shape.size() <= 4, "GGUF: tensor '{}' has {} dimensions (1 to 4)", name, shape.size());
    std::int64_t numel = 1;
    for (auto d : shape) {
      require(d > 0, "GGUF: tensor '{}' has a dimension {}", name, d);
      numel *= d;
    }
    require(type != TensorType::Q8_0 || shape.back() % kQ8_0BlockValues == 0,
            "GGUF: tensor '{}' rows of {} values cannot be q8_0 (blocks of 32)", name, shape.back());
    tensors_.push_back({name, std::move(shape), type, numel, std::move(fill)});
  }

  std::size_t tensor_count() const { return tensors_.size(); }

  void write(const std::filesystem::path& path) const {
    std::string head;
    put_u32(head, kMagic);
    put_u32(head, kVersion);
    put_u64(head, tensors_.size());
    put_u64(head, kv_count_);
    head += kvs_;
    std::uint64_t offset = 0;  // relative to the start of the data section
    std::vector<std::uint64_t> offsets;
    for (const auto& t : tensors_) {
      put_string(head, t.name);
      put_u32(head, static_cast<std::uint32_t>(t.shape.size()));
      for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) put_u64(head, static_cast<std::uint64_t>(*it));
      put_u32(head, static_cast<std::uint32_t>(t.type));
      put_u64(head, offset);
      offsets.push_back(offset);
      offset = align(offset + tensor_bytes(t.type, t.numel));
    }
    head.resize(align(head.size()), '\0');

    AtomicFileWriter out(path);
    out.write(head);
    std::uint64_t written = 0;
    // The tensors are made (filled, encoded) a window at a time on several threads, then written in
    // order: a window holds at most kWindowBytes of encoded tensors (or one larger tensor), and each
    // thread one tensor's fp32 values, so a 7B export never holds the model whole.
    const unsigned threads = worker_threads(8);
    const auto bytes_of = [&](std::size_t j) { return tensor_bytes(tensors_[j].type, tensors_[j].numel); };
    for (std::size_t i = 0; i < tensors_.size();) {
      std::size_t end = i + 1;
      for (std::uint64_t held = bytes_of(i);
           end < tensors_.size() && end - i < 2 * threads && held + bytes_of(end) <= kWindowBytes; ++end)
        held += bytes_of(end);
      auto made = parallel_map(end - i, threads, [&](std::size_t k) {
        const Tensor& t = tensors_[i + k];
        std::vector<float> values(static_cast<std::size_t>(t.numel), 0.0f);
        t.fill(std::span<float>(values));
        std::vector<std::byte> bytes(bytes_of(i + k));
        encode_values(t.type, values, bytes.data());
        return bytes;
      });
      for (std::size_t k = 0; k < made.size(); ++k, ++i) {
        if (offsets[i] > written) {
          out.write(std::string(offsets[i] - written, '\0'));
          written = offsets[i];
        }
        out.write(std::span<const std::byte>(made[k]));
        written += made[k].size();
      }
    }
    if (align(written) > written) out.write(std::string(align(written) - written, '\0'));
    out.commit();
  }

 private:
  struct Tensor {
    std::string name;
    std::vector<std::int64_t> shape;
    TensorType type;
    std::int64_t numel;
    Fill fill;
  };

  static constexpr std::uint64_t kWindowBytes = std::uint64_t{2} << 30;

  static std::uint64_t align(std::uint64_t n) { return (n + kDefaultAlignment - 1) / kDefaultAlignment * kDefaultAlignment; }
  static void put_u32(std::string& s, std::uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
  static void put_u64(std::string& s, std::uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
  static void put_string(std::string& s, std::string_view v) {
    put_u64(s, v.size());
    s.append(v);
  }
  std::string& begin_kv(const std::string& key, ValueType type) {
    require(keys_.insert(key).second, "GGUF: metadata key '{}' set twice", key);
    ++kv_count_;
    put_string(kvs_, key);
    put_u32(kvs_, static_cast<std::uint32_t>(type));
    return kvs_;
  }
  void scalar(const std::string& key, ValueType type, const void* v, std::size_t n) {
    begin_kv(key, type).append(static_cast<const char*>(v), n);
  }

  std::string kvs_;
  std::uint64_t kv_count_ = 0;
  std::set<std::string> keys_, names_;
  std::vector<Tensor> tensors_;
};

}  // namespace peft::gguf
