// Reading safetensors: one file, or a model folder sharded with model.safetensors.index.json.
// Files are memory-mapped read-only, so opening a 15 GB model costs no copy and tensors are read
// (and converted to float) only when a layer asks for them. The header is untrusted input: every
// offset, size and shape is checked before any pointer into the mapping is formed, and every error
// names the file and the tensor.
//
// Format: u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data region; offsets are relative to its start.
#pragma once
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fmt/ranges.h>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "peft/core/dtype.hpp"
#include "peft/core/error.hpp"
#include "peft/io/json_file.hpp"

namespace peft {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

// Headers larger than this are rejected before parsing (the reference implementation's cap).
inline constexpr std::uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// One tensor inside a mapped file. `data` points into the mapping and is not aligned in general
// (the format does not promise it): read it with memcpy or the read_f32 helpers.
struct StoredTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  const std::byte* data = nullptr;
  std::size_t nbytes = 0;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }
};

// "[512, 64]", the way shapes appear in every message.
inline std::string format_shape(std::span<const std::int64_t> shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

namespace detail {

// A read-only mapping of a whole file, unmapped on destruction. Neither copied nor moved: owners
// hold it by pointer, so pointers into the mapping stay valid while the owner moves.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      fail("{}: cannot stat: {}", path.string(), std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail("{}: not a regular file", path.string());
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        fail("{}: cannot memory-map {} bytes: {}", path.string(), size_, std::strerror(err));
      }
      data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);  // the mapping keeps the file alive
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
  }

  const std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

inline std::uint64_t header_offset(const nlohmann::json& v, const std::string& where) {
  require(v.is_number_unsigned() || (v.is_number_integer() && v.get<std::int64_t>() >= 0),
          "{}: data_offsets must be two non-negative integers, got {}", where, v.dump());
  return v.get<std::uint64_t>();
}

// Parses and checks one header entry; `data_size` is the size of the data region.
inline StoredTensor parse_tensor_entry(const std::string& name, const nlohmann::json& entry,
                                       const std::byte* data_region, std::uint64_t data_size,
                                       const std::string& file) {
  const std::string where = fmt::format("{}: tensor '{}'", file, name);
  require(entry.is_object(), "{}: header entry must be an object, got {}", where, json_type_name(entry));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    require(entry.contains(key), "{}: missing '{}'", where, key);

  StoredTensor t;
  t.name = name;
  const auto& dtype = entry["dtype"];
  require(dtype.is_string(), "{}: dtype must be a string, got {}", where, dtype.dump());
  if (!parse_dtype(dtype.get<std::string>(), t.dtype))
    fail("{}: unknown dtype '{}' (supported: F32, BF16, F16, I64, I32)", where, dtype.get<std::string>());

  const auto& shape = entry["shape"];
  require(shape.is_array(), "{}: shape must be an array, got {}", where, shape.dump());
  std::uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : shape) {
    require(d.is_number_integer(), "{}: shape must hold integers, got {}", where, shape.dump());
    require(!d.is_number_unsigned() || d.get<std::uint64_t>() <= static_cast<std::uint64_t>(INT64_MAX),
            "{}: dimension {} is too large", where, d.dump());
    const std::int64_t dim = d.get<std::int64_t>();
    require(dim >= 0, "{}: negative dimension {} in shape {}", where, dim, shape.dump());
    t.shape.push_back(dim);
    overflow = overflow || __builtin_mul_overflow(numel, static_cast<std::uint64_t>(dim), &numel);
  }
  std::uint64_t expected_bytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, dtype_size(t.dtype), &expected_bytes);
  require(!overflow, "{}: shape {} is too large", where, shape.dump());

  const auto& offsets = entry["data_offsets"];
  require(offsets.is_array() && offsets.size() == 2, "{}: data_offsets must be [begin, end], got {}", where,
          offsets.dump());
  const std::uint64_t begin = header_offset(offsets[0], where);
  const std::uint64_t end = header_offset(offsets[1], where);
  require(begin <= end, "{}: data_offsets [{}, {}] have begin > end", where, begin, end);
  require(end <= data_size, "{}: data_offsets [{}, {}] lie outside the data region of {} bytes", where, begin,
          end, data_size);
  require(end - begin == expected_bytes, "{}: holds {} bytes but shape {} of {} needs {} bytes", where,
          end - begin, format_shape(t.shape), dtype_name(t.dtype), expected_bytes);
  t.data = data_region + begin;
  t.nbytes = static_cast<std::size_t>(end - begin);
  return t;
}

// The header's JSON, refusing a tensor name given twice: a JSON parser keeps one of the two
// entries silently, and which one depends on the parser, so torch and we could read different
// weights from the same file.
inline nlohmann::json parse_header_json(std::string_view text, const std::string& file) {
  std::set<std::string> names;
  auto unique_names = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key && !names.insert(parsed.get<std::string>()).second)
      fail("{}: the header names '{}' twice", file, parsed.get<std::string>());
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), unique_names);
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number like 1e400
    fail("{} (header): invalid JSON: {}", file, strip_json_exception_prefix(e.what()));
  }
}

// Converts F32/BF16/F16 storage to float; the source may be unaligned.
inline void convert_to_f32(const StoredTensor& t, float* out, std::string_view file) {
  const std::size_t n = static_cast<std::size_t>(t.numel());
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out, t.data, n * sizeof(float));
      return;
    case DType::BF16:
    case DType::F16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = t.dtype == DType::BF16 ? bf16_to_float(h) : f16_to_float(h);
      }
      return;
    default:
      fail("{}: tensor '{}' has dtype {}, expected a floating type (F32, BF16 or F16)", file, t.name,
           dtype_name(t.dtype));
  }
}

}  // namespace detail

// One .safetensors file, mapped for as long as this object lives.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path) {
    SafetensorsFile f;
    f.path_ = path;
    f.map_ = std::make_unique<detail::MappedFile>(path);
    f.parse_header();
    return f;
  }

  bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

  const StoredTensor& tensor(std::string_view name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) fail("{}: no tensor '{}' ({} tensors in the file)", path_.string(), name, tensors_.size());
    return it->second;
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& [name, t] : tensors_) out.push_back(name);
    return out;
  }

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }

  // Converts an F32/BF16/F16 tensor to float after checking its shape.
  void read_f32(std::string_view name, std::span<const std::int64_t> expected_shape, float* out) const {
    const StoredTensor& t = tensor(name);
    if (!std::equal(t.shape.begin(), t.shape.end(), expected_shape.begin(), expected_shape.end()))
      fail("{}: tensor '{}' has shape {}, expected {}", path_.string(), t.name, format_shape(t.shape),
           format_shape(expected_shape));
    detail::convert_to_f32(t, out, path_.string());
  }
  std::vector<float> read_f32(std::string_view name, std::span<const std::int64_t> expected_shape) const {
    std::vector<float> out(static_cast<std::size_t>(tensor(name).numel()));
    read_f32(name, expected_shape, out.data());
    return out;
  }
  void read_f32(std::string_view name, std::initializer_list<std::int64_t> expected_shape, float* out) const {
    read_f32(name, std::span<const std::int64_t>(expected_shape.begin(), expected_shape.size()), out);
  }
  std::vector<float> read_f32(std::string_view name, std::initializer_list<std::int64_t> expected_shape) const {
    return read_f32(name, std::span<const std::int64_t>(expected_shape.begin(), expected_shape.size()));
  }

 private:
  SafetensorsFile() = default;

  void parse_header() {
    const std::string file = path_.string();
    const std::size_t size = map_->size();
    require(size >= 8, "{}: file too small for safetensors ({} bytes; the header length alone takes 8)", file, size);
    std::uint64_t header_len = 0;
    std::memcpy(&header_len, map_->data(), 8);
    require(header_len <= kSafetensorsMaxHeaderBytes, "{}: header length {} exceeds the limit of {} bytes", file,
            header_len, kSafetensorsMaxHeaderBytes);
    require(header_len <= size - 8, "{}: header length {} runs past the end of the file ({} bytes)", file,
            header_len, size);

    const auto* header_begin = reinterpret_cast<const char*>(map_->data() + 8);
    const nlohmann::json header = detail::parse_header_json(std::string_view(header_begin, header_len), file);
    require(header.is_object(), "{}: header must be a JSON object, got {}", file, detail::json_type_name(header));

    const std::byte* data_region = map_->data() + 8 + header_len;
    const std::uint64_t data_size = size - 8 - header_len;
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        require(entry.is_object(), "{}: __metadata__ must be an object of strings", file);
        for (const auto& [key, value] : entry.items()) {
          require(value.is_string(), "{}: __metadata__ value for '{}' must be a string, got {}", file, key,
                  value.dump());
          metadata_[key] = value.get<std::string>();
        }
        continue;
      }
      tensors_.emplace(name, detail::parse_tensor_entry(name, entry, data_region, data_size, file));
    }
    check_no_overlap();
  }

  void check_no_overlap() const {
    std::vector<const StoredTensor*> by_offset;
    for (const auto& [name, t] : tensors_)
      if (t.nbytes > 0) by_offset.push_back(&t);  // empty tensors occupy no bytes
    std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->data < b->data; });
    for (std::size_t i = 1; i < by_offset.size(); ++i) {
      const StoredTensor& prev = *by_offset[i - 1];
      const StoredTensor& cur = *by_offset[i];
      require(prev.data + prev.nbytes <= cur.data, "{}: tensors '{}' and '{}' overlap in the data region",
              path_.string(), prev.name, cur.name);
    }
  }

  std::filesystem::path path_;
  std::unique_ptr<detail::MappedFile> map_;
  std::map<std::string, StoredTensor, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A model's weights: a folder with model.safetensors or model.safetensors.index.json (sharded),
// or a path to either file directly. Tensor names are looked up across all shards.
class SafetensorsModel {
 public:
  static SafetensorsModel open(const std::filesystem::path& dir_or_file) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::exists(dir_or_file, ec)) fail("{}: no such file or directory", dir_or_file.string());
    SafetensorsModel m;
    if (fs::is_directory(dir_or_file, ec)) {
      // transformers' order: model.safetensors when it exists, else the sharded index (a folder
      // holding both is usually a re-saved model with a stale index beside it).
      const fs::path index = dir_or_file / "model.safetensors.index.json";
      const fs::path single = dir_or_file / "model.safetensors";
      if (fs::exists(single, ec)) m.open_single(single);
      else if (fs::exists(index, ec)) m.open_index(index);
      else fail("{}: no model.safetensors or model.safetensors.index.json in this directory", dir_or_file.string());
    } else if (dir_or_file.extension() == ".json") {
      m.open_index(dir_or_file);
    } else {
      m.open_single(dir_or_file);
    }
    return m;
  }

  bool contains(std::string_view name) const { return shard_of_.find(name) != shard_of_.end(); }

  const StoredTensor& tensor(std::string_view name) const { return file_of(name).tensor(name); }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(shard_of_.size());
    for (const auto& [name, shard] : shard_of_) out.push_back(name);
    return out;
  }

  // The file that holds `name`; errors name the model source.
  const SafetensorsFile& file_of(std::string_view name) const {
    auto it = shard_of_.find(name);
    if (it == shard_of_.end()) fail("{}: no tensor '{}' in the model", source_.string(), name);
    return shards_[it->second];
  }

  // The path the model was opened from (the single file or the index).
  const std::filesystem::path& source() const { return source_; }

  void read_f32(std::string_view name, std::span<const std::int64_t> expected_shape, float* out) const {
    file_of(name).read_f32(name, expected_shape, out);
  }
  std::vector<float> read_f32(std::string_view name, std::span<const std::int64_t> expected_shape) const {
    return file_of(name).read_f32(name, expected_shape);
  }
  void read_f32(std::string_view name, std::initializer_list<std::int64_t> expected_shape, float* out) const {
    file_of(name).read_f32(name, expected_shape, out);
  }
  std::vector<float> read_f32(std::string_view name, std::initializer_list<std::int64_t> expected_shape) const {
    return file_of(name).read_f32(name, expected_shape);
  }

 private:
  SafetensorsModel() = default;

  void open_single(const std::filesystem::path& file) {
    source_ = file;
    shards_.push_back(SafetensorsFile::open(file));
    for (const std::string& name : shards_.back().names()) shard_of_.emplace(name, 0);
  }

  // {"metadata": {...}, "weight_map": {"tensor": "model-00001-of-00002.safetensors", ...}}
  void open_index(const std::filesystem::path& index) {
    source_ = index;
    const std::string where = index.string();
    const nlohmann::json j = read_json_file(index);
    require(j.is_object(), "{}: index must be a JSON object", where);
    const nlohmann::json* map = find_field(j, "weight_map");
    require(map != nullptr, "{}: missing required field 'weight_map'", where);
    require(map->is_object(), "{}: 'weight_map' must be an object of tensor name -> shard file", where);

    std::map<std::string, std::size_t> shard_index;  // shard file name -> position in shards_
    for (const auto& [name, shard_json] : map->items()) {
      require(shard_json.is_string(), "{}: weight_map entry for tensor '{}' must be a file name, got {}", where,
              name, shard_json.dump());
      const std::string shard = shard_json.get<std::string>();
      auto it = shard_index.find(shard);
      if (it == shard_index.end()) {
        // A shard is a file beside the index: "../x" or "/x" would read weights from elsewhere.
        const std::filesystem::path rel(shard);
        require(!shard.empty() && rel.is_relative() && rel.has_filename() &&
                    std::none_of(rel.begin(), rel.end(), [](const auto& part) { return part == ".."; }),
                "{}: shard '{}' (listed for tensor '{}') is not a file name inside the model folder", where, shard,
                name);
        const std::filesystem::path shard_path = index.parent_path() / shard;
        std::error_code ec;
        require(std::filesystem::is_regular_file(shard_path, ec),
                "{}: shard '{}' (listed for tensor '{}') does not exist at {}", where, shard, name,
                shard_path.string());
        shards_.push_back(SafetensorsFile::open(shard_path));
        it = shard_index.emplace(shard, shards_.size() - 1).first;
      }
      require(shards_[it->second].contains(name), "{}: tensor '{}' is mapped to shard '{}', which has no such tensor",
              where, name, shard);
      shard_of_.emplace(name, it->second);
    }
    // A tensor stored in two shards: the index picks one, other loaders may pick the other.
    std::map<std::string, std::size_t> holder;
    for (std::size_t i = 0; i < shards_.size(); ++i)
      for (const std::string& name : shards_[i].names()) {
        const auto [it, fresh] = holder.emplace(name, i);
        require(fresh, "{}: tensor '{}' is stored in two shards, {} and {}", where, name,
                shards_[it->second].path().string(), shards_[i].path().string());
      }
  }

  std::filesystem::path source_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, std::size_t, std::less<>> shard_of_;
};

}  // namespace peft
