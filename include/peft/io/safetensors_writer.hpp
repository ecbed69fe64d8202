// Writing safetensors that torch, HF transformers and PEFT load. The layout is the reference
// implementation's, byte for byte: "__metadata__" first (only when there is any), then tensors by
// descending dtype (I64, F32, I32, BF16, F16: wider elements first, so every tensor's data is
// aligned to its element size) and by name within a dtype, data contiguous in the same order, and
// the header padded with spaces to a multiple of 8 bytes. The file appears atomically
// (atomic_file.hpp).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "peft/core/dtype.hpp"
#include "peft/core/error.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/safetensors_reader.hpp"

namespace peft {

// `values` as `dtype` (F32, or BF16 / F16 rounded to nearest even, as torch does) into `out`, which
// holds values.size() elements of it.
inline void encode_floats(std::span<const float> values, DType dtype, std::byte* out) {
  require(dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16,
          "safetensors writer: floats are stored as F32, BF16 or F16, not {}", dtype_name(dtype));
  if (dtype == DType::F32) {
    std::memcpy(out, values.data(), values.size_bytes());
    return;
  }
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::uint16_t h = dtype == DType::BF16 ? float_to_bf16(values[i]) : float_to_f16(values[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

class SafetensorsWriter {
 public:
  // Copies `bytes`, which must hold exactly product(shape) elements of `dtype`.
  void add(std::string name, DType dtype, std::vector<std::int64_t> shape, std::span<const std::byte> bytes) {
    emplace_owned(std::move(name), dtype, std::move(shape), std::vector<std::byte>(bytes.begin(), bytes.end()));
  }

  // Takes `bytes` (exactly product(shape) elements of `dtype`) without copying them.
  void add_owned(std::string name, DType dtype, std::vector<std::int64_t> shape, std::vector<std::byte> bytes) {
    emplace_owned(std::move(name), dtype, std::move(shape), std::move(bytes));
  }

  // As add, but no copy: write() reads `bytes` where they are (a mapped input file's tensor), so
  // they must stay alive and unchanged until then.
  void add_borrowed(std::string name, DType dtype, std::vector<std::int64_t> shape, std::span<const std::byte> bytes) {
    check_entry(name, dtype, shape, bytes.size());
    tensors_.emplace(std::move(name), Entry{dtype, std::move(shape), {}, bytes});
  }

  // As add_f32, but stored as F32 it makes no copy: write() reads `values` where they are, so they
  // must stay alive and unchanged until then. For the checkpoint writers, whose hundreds of MB of
  // fp32 tensors (an adapter, its optimizer moments) already sit in memory: the copy doubled the
  // cost of a save (fresh pages faulted in, zeroed, filled) before the kernel's own copy into the
  // page cache. Rounded to BF16 / F16 it converts into a buffer of its own, as add_f32.
  void add_f32_borrowed(std::string name, std::vector<std::int64_t> shape, std::span<const float> values,
                        DType stored_as = DType::F32) {
    if (stored_as != DType::F32) {
      add_f32(std::move(name), std::move(shape), values, stored_as);
      return;
    }
    add_borrowed(std::move(name), DType::F32, std::move(shape), std::as_bytes(values));
  }

  // Stores float values as F32, or rounded to BF16 / F16 (round to nearest even, as torch does).
  void add_f32(std::string name, std::vector<std::int64_t> shape, std::span<const float> values,
               DType stored_as = DType::F32) {
    if (stored_as == DType::F32) {
      add(std::move(name), stored_as, std::move(shape), std::as_bytes(values));
      return;
    }
    require(stored_as == DType::BF16 || stored_as == DType::F16,
            "safetensors writer: tensor '{}': add_f32 stores F32, BF16 or F16, not {}", name, dtype_name(stored_as));
    std::vector<std::byte> bytes(values.size() * dtype_size(stored_as));
    encode_floats(values, stored_as, bytes.data());
    emplace_owned(std::move(name), stored_as, std::move(shape), std::move(bytes));
  }

  void set_metadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }

  bool empty() const { return tensors_.empty(); }

  // The header exactly as written: JSON padded with spaces to a multiple of 8 bytes.
  std::string header() const {
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    if (!metadata_.empty()) h["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const auto& [name, e] : in_file_order()) {
      const std::uint64_t end = offset + e->bytes.size();
      h[*name] = {{"dtype", dtype_name(e->dtype)}, {"shape", e->shape}, {"data_offsets", {offset, end}}};
      offset = end;
    }
    std::string text = h.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    return text;
  }

  void write(const std::filesystem::path& path) const {
    std::string text;
    try {
      text = header();
    } catch (const nlohmann::json::exception& e) {  // e.g. a name that is not valid UTF-8
      fail("{}: cannot write safetensors header: {}", path.string(), detail::strip_json_exception_prefix(e.what()));
    }
    const std::uint64_t header_len = text.size();
    AtomicFileWriter out(path);
    out.write(std::as_bytes(std::span<const std::uint64_t>(&header_len, 1)));
    out.write(text);
    for (const auto& [name, e] : in_file_order()) out.write(e->bytes);
    out.commit();
  }

 private:
  struct Entry {
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> owned;    // the copy add() made (empty for a borrowed tensor)
    std::span<const std::byte> bytes;  // what write() writes: `owned`, or the caller's memory
  };

  // The reference's Dtype enum order, descending: I64 > F32 > I32 > BF16 > F16.
  static int reference_rank(DType t) {
    switch (t) {
      case DType::I64: return 5;
      case DType::F32: return 4;
      case DType::I32: return 3;
      case DType::BF16: return 2;
      case DType::F16: return 1;
    }
    return 0;
  }

  std::vector<std::pair<const std::string*, const Entry*>> in_file_order() const {
    std::vector<std::pair<const std::string*, const Entry*>> order;
    for (const auto& [name, e] : tensors_) order.emplace_back(&name, &e);  // already by name
    std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
      return reference_rank(a.second->dtype) > reference_rank(b.second->dtype);
    });
    return order;
  }

  void emplace_owned(std::string name, DType dtype, std::vector<std::int64_t> shape, std::vector<std::byte> bytes) {
    check_entry(name, dtype, shape, bytes.size());
    Entry& e = tensors_.emplace(std::move(name), Entry{dtype, std::move(shape), std::move(bytes), {}}).first->second;
    e.bytes = e.owned;
  }

  void check_entry(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape,
                   std::size_t size) const {
    check_new_name(name);
    std::size_t numel = 1;
    for (std::int64_t d : shape) {
      require(d >= 0, "safetensors writer: tensor '{}' has negative dimension in shape {}", name, format_shape(shape));
      numel *= static_cast<std::size_t>(d);
    }
    require(size == numel * dtype_size(dtype), "safetensors writer: tensor '{}' has {} bytes but shape {} of {} needs {}",
            name, size, format_shape(shape), dtype_name(dtype), numel * dtype_size(dtype));
  }

  void check_new_name(const std::string& name) const {
    require(!name.empty(), "safetensors writer: empty tensor name");
    require(name != "__metadata__", "safetensors writer: '__metadata__' is reserved, not a tensor name");
    require(!tensors_.contains(name), "safetensors writer: tensor '{}' added twice", name);
  }

  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace peft
