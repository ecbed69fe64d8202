// Merging a PEFT LoRA adapter into its base model, as PEFT's merge_and_unload() and ms-swift's
// `swift export --merge_lora` do: every adapted projection's weight becomes
//   W' = W + (B @ A) * (lora_alpha / r), or lora_alpha / sqrt(r) for an adapter with use_rslora
// computed in fp32 (PEFT adds the fp32 delta to the weight in place, so torch computes the sum
// in fp32 and rounds once) and stored back in the base tensor's own dtype (BF16, F16 or F32).
// Tensors of modules the adapter lists in modules_to_save (fully trained modules, e.g. the last
// layers of LastLayers<N, Full, Lora<r>>) replace the base's, as merge_and_unload() keeps the
// trained copy of such a module; they are stored in the base tensor's dtype.
// With `store_as` (export's --torch_dtype, as ms-swift loads the model in that dtype before it
// merges and saves), every floating tensor is stored in that dtype instead, each value rounded
// once from the original (the merged ones from the fp32 sum), and config.json's torch_dtype and
// the index's total_size say so. A value the dtype cannot hold (past f16's 65504) is refused with
// the tensor named, never written as inf.
// Everything else is copied unchanged: the other tensors byte for byte, the same shard files
// with their names, metadata and model.safetensors.index.json, and every other file of the model
// folder (config.json, generation_config.json, tokenizer files), so transformers and vLLM load
// the result as they load the base model. With `max_shard_size` (export's --max_shard_size) the
// tensors, in that same order, are cut into new files as transformers' save_pretrained cuts them
// (shard_plan.hpp), each carrying its base shards' safetensors metadata, with a new index (the
// base index's other metadata kept) or, for one file, none: the base's index would be stale.
// The output folder appears atomically (built in a staging folder beside it, then renamed into
// place).
//
// The output folder is the user's: an existing non-empty one is replaced only with `overwrite`,
// and only when it holds nothing but what a merge writes there (the base folder's file names, and
// the model.gguf and Modelfile export adds, and the shard files and index of any --max_shard_size:
// a re-run with another size replaces them), so a merged model is replaced but a user's notes or a
// subfolder are never deleted: they are named and the merge refuses. Never either when the folder
// is, or holds, the base model or the adapter (merging would delete its own inputs, or a training
// run with them).
//
// The inputs are checked before anything is written: the base as training and chat check it
// (config.json against the weights' shapes, checkpoint_shapes.hpp), every adapter tensor must be
// a LoRA A or B of a module the base has, with matching shapes and the rank adapter_config.json
// states; every tensor read (base and adapter) and every merged weight must be finite, so no
// NaN/Inf model is ever written. An error names the file and the tensor.
#pragma once
#include <algorithm>
#include <bit>
#include <filesystem>
#include <functional>
#include <cmath>
#include <map>
#include <optional>
#include <span>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "peft/core/dtype.hpp"
#include "peft/core/error.hpp"
#include "peft/core/finite.hpp"
#include "peft/core/parallel_map.hpp"
#include "peft/core/tensor.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/checkpoint_shapes.hpp"
#include "peft/io/json_file.hpp"
#include "peft/io/model_config.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/io/shard_plan.hpp"

namespace peft {

struct MergeOptions {
  bool overwrite = false;  // replace a merged model in output_dir (see the top of this file)
  // Adds files to the merged folder before it appears (export's GGUF and Modelfile), so the folder
  // appears with all of them or not at all.
  std::function<void(const std::filesystem::path&)> also_write;
  std::optional<DType> store_as;                // every floating tensor in this dtype (--torch_dtype)
  std::optional<std::int64_t> max_shard_size;  // bytes; save_pretrained's shards (--max_shard_size)
};

struct MergeSummary {
  std::size_t merged_modules = 0;  // projections that received B @ A
  std::size_t saved_tensors = 0;   // modules_to_save tensors that replaced the base's
  std::size_t tensors = 0;         // tensors written
  std::vector<std::string> shards, copied_files;
};

inline constexpr std::string_view kRefuseBrokenAdapter = "refusing to merge a broken adapter";

namespace detail {

struct LoraPair {
  const StoredTensor* a = nullptr;
  const StoredTensor* b = nullptr;
};

// module path -> its A and B, from "base_model.model.<module>.lora_{A,B}.weight"; the tensors of
// modules_to_save go to `saved` (base tensor name -> adapter tensor).
inline std::map<std::string, LoraPair> adapter_pairs(const SafetensorsFile& st, int rank,
                                                     const std::vector<std::string>& modules_to_save,
                                                     std::map<std::string, const StoredTensor*>& saved) {
  const std::string file = st.path().string();
  std::map<std::string, LoraPair> pairs;
  for (const auto& name : st.names()) {
    std::string_view key = name;
    const bool is_a = key.ends_with(".lora_A.weight"), is_b = key.ends_with(".lora_B.weight");
    if (key.starts_with(kPeftKeyPrefix) && !is_a && !is_b) {
      key.remove_prefix(kPeftKeyPrefix.size());
      const std::string module = module_of(key);
      require(std::find(modules_to_save.begin(), modules_to_save.end(), module) != modules_to_save.end(),
              "{}: tensor '{}' is not a LoRA A or B weight and its module '{}' is not in adapter_config.json's "
              "modules_to_save", file, name, module);
      saved[std::string(key)] = &st.tensor(name);
      continue;
    }
    require(key.starts_with(kPeftKeyPrefix) && (is_a || is_b),
            "{}: tensor '{}' is not a LoRA A or B weight (only LoRA adapters, with modules_to_save, can be merged)",
            file, name);
    key.remove_prefix(kPeftKeyPrefix.size());
    key.remove_suffix(std::string_view(".lora_A.weight").size());
    const StoredTensor& t = st.tensor(name);
    require(t.shape.size() == 2 && t.shape[is_a ? 0 : 1] == rank,
            "{}: tensor '{}' has shape {}, but r = {} in adapter_config.json", file, name, format_shape(t.shape), rank);
    (is_a ? pairs[std::string(key)].a : pairs[std::string(key)].b) = &t;
  }
  require(!pairs.empty() || !saved.empty(), "{}: the adapter holds no tensors", file);
  for (const auto& [module, p] : pairs)
    require(p.a && p.b, "{}: module '{}' has a lora_{} but no lora_{}", file, module, p.a ? "A" : "B", p.a ? "B" : "A");
  return pairs;
}

}  // namespace detail

namespace detail {
// Is `inner` the folder `outer` or somewhere inside it (symlinks and `..` resolved)?
inline bool folder_within(const std::filesystem::path& inner, const std::filesystem::path& outer) {
  std::error_code ec;
  const auto in = std::filesystem::weakly_canonical(std::filesystem::absolute(inner), ec);
  const auto out = std::filesystem::weakly_canonical(std::filesystem::absolute(outer), ec);
  auto i = in.begin();
  for (auto o = out.begin(); o != out.end(); ++o, ++i) {
    if (o->empty()) continue;  // the trailing "" of a path ending in '/'
    if (i == in.end() || *i != *o) return false;
  }
  return true;
}
// A base tensor copied unchanged, checked finite a bounded slice at a time (a 7B's embedding
// would otherwise need a 2 GB float copy); only a tensor found broken is read whole, for
// require_finite's message (how many, which first).
inline void require_finite_copied(const SafetensorsFile& in, const StoredTensor& t, const std::string& where) {
  constexpr std::size_t kSlice = std::size_t{1} << 20;
  const std::size_t n = static_cast<std::size_t>(t.numel()), width = dtype_size(t.dtype);
  std::vector<float> v;
  for (std::size_t at = 0; at < n; at += kSlice) {
    const std::size_t len = std::min(kSlice, n - at);
    const StoredTensor part{t.name, t.dtype, {static_cast<std::int64_t>(len)}, t.data + at * width, len * width};
    v.resize(len);
    peft::detail::convert_to_f32(part, v.data(), in.path().string());
    if (first_non_finite(v) != len) require_finite(in.read_f32(t.name, t.shape), where, kBrokenBaseCheckpoint);
  }
}
inline bool is_floating(DType t) { return torch_dtype_name(t)[0] != '\0'; }

// The smallest magnitude that rounds to inf when stored as `dtype` (F16 or BF16): f16's 65520, and
// bf16's halfway point past its largest finite value (0x7f7f8000).
inline float rounds_to_inf_from(DType dtype) {
  return dtype == DType::F16 ? 65520.0f : std::bit_cast<float>(0x7f7f8000u);
}

// Stored as `dtype`, is every value still finite? The scan is one branch-free pass, as cheap as
// reading the values; the index is looked for only on a failure.
inline void require_representable(std::span<const float> v, DType dtype, const std::string& where) {
  if (dtype == DType::F32) return;
  const float limit = rounds_to_inf_from(dtype);
  bool past = false;
  for (const float x : v) past |= std::fabs(x) >= limit;
  if (!past) return;
  const std::size_t i = static_cast<std::size_t>(
      std::find_if(v.begin(), v.end(), [&](float x) { return std::fabs(x) >= limit; }) - v.begin());
  fail("{}: value {} at index {} does not fit {} (it would be stored as inf); refusing to write a broken model: keep "
       "the base's dtype (drop --torch_dtype) or use bfloat16 / float32", where, v[i], i, dtype_name(dtype));
}

// config.json naming `dtype` in the field it has (transformers 5's `dtype`, 4's `torch_dtype`, or
// both); one without either gets `torch_dtype`, which both versions read.
inline std::string config_with_dtype(const std::filesystem::path& config, DType dtype) {
  nlohmann::json j = read_json_file(config);
  const char* name = torch_dtype_name(dtype);
  if (j.contains("dtype")) j["dtype"] = name;
  if (j.contains("torch_dtype") || !j.contains("dtype")) j["torch_dtype"] = name;
  return j.dump(2) + "\n";
}

// w += (B @ A) * scaling, PEFT's get_delta_weight added, for w holding the rows of B's `b_rows`.
// Each delta is summed over the rank in double, where the products of two floats are exact, then
// scaled and rounded to float: so its bits depend neither on how the rows are blocked nor on
// whether the compiler fuses a multiply and an add (-march=native with FMA), as a float GEMM's do.
inline void add_lora_delta(Matrix& w, const Matrix& b_rows, const Matrix& a, float scaling) {
  std::vector<double> d(static_cast<std::size_t>(w.cols()));
  for (Eigen::Index i = 0; i < w.rows(); ++i) {
    std::fill(d.begin(), d.end(), 0.0);
    for (Eigen::Index k = 0; k < a.rows(); ++k) {
      const double bik = b_rows(i, k);
      const float* ak = a.data() + k * a.cols();
      for (std::size_t j = 0; j < d.size(); ++j) d[j] += bik * static_cast<double>(ak[j]);
    }
    float* wi = w.data() + i * w.cols();
    for (std::size_t j = 0; j < d.size(); ++j) wi[j] += static_cast<float>(d[j] * static_cast<double>(scaling));
  }
}

// A merged model's tensor made ready for the writer: bytes of its own, or a base tensor's mapped bytes.
struct MergedTensor {
  DType dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> owned;
  std::span<const std::byte> borrowed;
  bool merged = false, saved = false;
};

// W + (B @ A) * scaling written as `dtype` into `out`, a block of rows at a time (an fp32 copy of the
// whole weight is 4 bytes a parameter of fresh memory; a block is a few MB, reused). False, with
// `out` unspecified, where a base value is not finite or a merged one is not finite or does not fit
// `dtype`: the caller redoes the tensor whole for the error message.
inline bool merge_rows(const SafetensorsFile& in, const StoredTensor& t, const Matrix& a, const Matrix& b,
                       float scaling, DType dtype, std::vector<std::byte>& out) {
  const std::int64_t rows = t.shape[0], cols = t.shape[1];
  const std::size_t width = dtype_size(t.dtype), out_width = dtype_size(dtype);
  const std::int64_t block = std::max<std::int64_t>(1, (std::int64_t{1} << 20) / std::max<std::int64_t>(cols, 1));
  out.resize(static_cast<std::size_t>(rows * cols) * out_width);
  const float limit = rounds_to_inf_from(dtype);
  Matrix w;
  for (std::int64_t r0 = 0; r0 < rows; r0 += block) {
    const std::int64_t n = std::min(block, rows - r0);
    const auto count = static_cast<std::size_t>(n * cols);
    const StoredTensor part{t.name, t.dtype, {n * cols}, t.data + static_cast<std::size_t>(r0 * cols) * width,
                            count * width};
    w.resize(n, cols);
    peft::detail::convert_to_f32(part, w.data(), in.path().string());
    const std::span<const float> v(w.data(), count);
    if (first_non_finite(v) != count) return false;
    add_lora_delta(w, b.middleRows(r0, n), a, scaling);
    bool bad = false;
    for (const float x : v) bad |= !std::isfinite(x) || (dtype != DType::F32 && std::fabs(x) >= limit);
    if (bad) return false;
    encode_floats(v, dtype, out.data() + static_cast<std::size_t>(r0 * cols) * out_width);
  }
  return true;
}

}  // namespace detail

// Files export writes beside a merged model in the same folder (examples/export.cpp).
inline const std::set<std::string>& export_file_names() {
  static const std::set<std::string> names = {"model.gguf", "Modelfile"};
  return names;
}

// Refuses an output folder whose replacement would lose something (see the top of this file).
// `model_dir` empty: the base is not on disk yet (export's embedded default model); only the
// checks that do not need it are made, and merge_lora() makes them all once it is.
inline void check_merge_output(const std::filesystem::path& model_dir, const std::filesystem::path& adapter_dir,
                               const std::filesystem::path& output_dir, bool overwrite) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& [input, what] : {std::pair{model_dir, "the base model"}, std::pair{adapter_dir, "the adapter"}})
    require(input.empty() || !detail::folder_within(input, output_dir),
            "--output_dir {} is an input folder ({} {}) or one of its parents; merging there would delete it",
            output_dir.string(), what, input.string());
  if (!fs::exists(fs::symlink_status(output_dir, ec))) return;
  require(fs::is_directory(fs::symlink_status(output_dir, ec)), "--output_dir {}: exists and is not a folder",
          output_dir.string());
  require(overwrite || fs::directory_iterator(output_dir, ec) == fs::directory_iterator(),
          "--output_dir {}: the folder exists and is not empty; pass --overwrite true to replace it, or pick another "
          "folder", output_dir.string());
  if (model_dir.empty()) return;
  std::set<std::string> ours = export_file_names();  // what a merge (and export) writes there
  for (const auto& entry : fs::directory_iterator(model_dir))
    if (entry.is_regular_file()) ours.insert(entry.path().filename().string());
  std::vector<std::string> foreign;
  for (const auto& entry : fs::directory_iterator(output_dir)) {
    const std::string name = entry.path().filename().string();
    const bool merge_written = ours.count(name) || is_shard_output_name(name);
    if (!merge_written || !entry.is_regular_file()) foreign.push_back(entry.is_directory() ? name + "/" : name);
  }
  std::sort(foreign.begin(), foreign.end());
  require(foreign.empty(),
          "--output_dir {}: holds {} that a merge does not write ({}); --overwrite true replaces only a merged model "
          "folder, never other files: move them away, or pick another folder", output_dir.string(),
          foreign.size() == 1 ? "an entry" : fmt::format("{} entries", foreign.size()), fmt::join(foreign, ", "));
}

namespace detail {
// One file of the merged folder: its name and its tensors, in the order they are merged.
struct OutputShard {
  std::string file;
  std::vector<std::string> names;
};

// The base's own files (names as they are), or with `max_shard_size` save_pretrained's. Both walk
// the tensors in one order: the base's shard files by name, each file's tensors by name.
// `bytes(name)`: the tensor's size as written (after any conversion).
inline std::vector<OutputShard> output_layout(const SafetensorsModel& base, std::optional<std::int64_t> max_shard_size,
                                              const std::function<std::int64_t(const std::string&)>& bytes) {
  std::map<std::string, std::vector<std::string>> by_shard;  // shard file name -> its tensors
  for (const auto& name : base.names()) by_shard[base.file_of(name).path().filename().string()].push_back(name);
  std::vector<OutputShard> layout;
  if (!max_shard_size) {
    for (auto& [file, names] : by_shard) layout.push_back({file, std::move(names)});
    return layout;
  }
  std::vector<std::pair<std::string, std::int64_t>> walk;
  for (const auto& [file, names] : by_shard)
    for (const auto& name : names) walk.emplace_back(name, bytes(name));
  ShardPlan plan = plan_shards(walk, *max_shard_size);
  for (std::size_t i = 0; i < plan.shards.size(); ++i) layout.push_back({plan.file_name(i), std::move(plan.shards[i])});
  return layout;
}

// The index of a re-sharded merge: the base index's metadata (fields other than total_size, e.g.
// transformers' total_parameters, hold for the merged model too) with the new total and files.
inline nlohmann::json resharded_index(const std::filesystem::path& model_dir, const std::vector<OutputShard>& layout,
                                      std::int64_t total_bytes) {
  nlohmann::json index{{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
  std::error_code ec;
  if (const auto base_index = model_dir / "model.safetensors.index.json"; std::filesystem::exists(base_index, ec))
    if (const nlohmann::json j = read_json_file(base_index); j.contains("metadata") && j["metadata"].is_object())
      index["metadata"] = j["metadata"];
  index["metadata"]["total_size"] = total_bytes;
  for (const auto& shard : layout)
    for (const auto& name : shard.names) index["weight_map"][name] = shard.file;
  return index;
}
}  // namespace detail

// See the top of this file for what is written and what is refused; MergeOptions for the choices.
inline MergeSummary merge_lora(const std::filesystem::path& model_dir, const std::filesystem::path& adapter_dir,
                               const std::filesystem::path& output_dir, const MergeOptions& options = {}) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::optional<DType> store_as = options.store_as;
  require(fs::is_directory(model_dir, ec), "{}: the base model folder does not exist", model_dir.string());
  require(fs::is_directory(adapter_dir, ec), "{}: the adapter folder does not exist", adapter_dir.string());
  check_merge_output(model_dir, adapter_dir, output_dir, options.overwrite);
  read_checked_model_config(model_dir);  // a Qwen2 model folder whose weights fit its config.json

  const LoraConfig lora = read_adapter_config(adapter_dir);
  const fs::path adapter_file = adapter_dir / "adapter_model.safetensors";
  require(fs::exists(adapter_file, ec), "{}: no adapter_model.safetensors in the adapter folder",
          adapter_file.string());
  const SafetensorsFile adapter = SafetensorsFile::open(adapter_file);
  std::map<std::string, const StoredTensor*> saved;  // modules_to_save: base tensor name -> trained tensor
  const auto pairs = detail::adapter_pairs(adapter, lora.r, read_modules_to_save(adapter_dir), saved);
  const SafetensorsModel base = SafetensorsModel::open(model_dir);
  for (const auto& [name, t] : saved) {
    require(base.contains(name) && base.tensor(name).shape == t->shape,
            "{}: tensor '{}' {} (modules_to_save) does not match a tensor of the base model {}: is this adapter for "
            "another model?", adapter_file.string(), t->name, format_shape(t->shape), base.source().string());
    require(!pairs.count(module_of(name)), "{}: module '{}' has both LoRA tensors and a fully trained copy",
            adapter_file.string(), module_of(name));
  }

  // Check every module against the base before writing anything.
  for (const auto& [module, p] : pairs) {
    const std::string weight = module + ".weight";
    require(base.contains(weight),
            "{}: tensor '{}' adapts module '{}', but the base model ({}) has no tensor '{}': is this adapter for "
            "another model?", adapter_file.string(), p.a->name, module, base.source().string(), weight);
    const StoredTensor& w = base.tensor(weight);
    require(w.shape.size() == 2 && w.shape[0] == p.b->shape[0] && w.shape[1] == p.a->shape[1],
            "{}: tensors '{}' {} and '{}' {} do not fit the base weight '{}' {} of {}: is this adapter for another "
            "model?", adapter_file.string(), p.b->name, format_shape(p.b->shape), p.a->name, format_shape(p.a->shape),
            weight, format_shape(w.shape), base.source().string());
    require(w.dtype == DType::F32 || w.dtype == DType::BF16 || w.dtype == DType::F16,
            "{}: tensor '{}' is {}, not a floating type; a LoRA update cannot be merged into it",
            base.file_of(weight).path().string(), weight, dtype_name(w.dtype));
  }

  require(!store_as || detail::is_floating(*store_as), "merge: a model is stored as F32, BF16 or F16, not {}",
          store_as ? dtype_name(*store_as) : "");
  const auto stored_dtype = [&](DType t) { return store_as && detail::is_floating(t) ? *store_as : t; };
  const auto written_bytes = [&](const std::string& name) {
    const StoredTensor& t = base.tensor(name);
    return t.numel() * static_cast<std::int64_t>(dtype_size(stored_dtype(t.dtype)));
  };
  const std::vector<detail::OutputShard> layout = detail::output_layout(base, options.max_shard_size, written_bytes);
  std::int64_t total_bytes = 0;  // the index's total_size
  for (const auto& name : base.names()) total_bytes += written_bytes(name);
  const bool resharded = options.max_shard_size.has_value();
  nlohmann::json new_index;  // read before writing: a broken base index is refused with nothing written
  if (resharded && layout.size() > 1) new_index = detail::resharded_index(model_dir, layout, total_bytes);

  MergeSummary summary;
  const auto scaling = static_cast<float>(lora.scaling());
  // One tensor of the merged model, ready to write: the trained copy, W + BA, or the base's
  // (converted, or its own bytes), each checked finite and representable in the dtype written.
  // Read-only over the inputs, so a shard's tensors are made on several threads.
  const auto make_tensor = [&](const std::string& name) {
    const SafetensorsFile& in = base.file_of(name);
    const StoredTensor& t = in.tensor(name);
    detail::MergedTensor m{.dtype = stored_dtype(t.dtype), .shape = t.shape};
    const auto encoded = [&](std::span<const float> v) {
      m.owned.resize(v.size() * dtype_size(m.dtype));
      encode_floats(v, m.dtype, m.owned.data());
      return std::move(m);
    };
    if (const auto s = saved.find(name); s != saved.end()) {  // a module to save: the trained copy
      std::vector<float> v(static_cast<std::size_t>(s->second->numel()));
      adapter.read_f32(s->second->name, s->second->shape, v.data());
      require_finite(v, fmt::format("{}: tensor '{}'", adapter_file.string(), s->second->name), kRefuseBrokenAdapter);
      detail::require_representable(v, m.dtype, fmt::format("{}: tensor '{}'", adapter_file.string(), s->second->name));
      m.saved = true;
      return encoded(v);
    }
    const auto it = name.ends_with(".weight") ? pairs.find(name.substr(0, name.size() - 7)) : pairs.end();
    const std::string where = fmt::format("{}: tensor '{}'", in.path().string(), name);
    if (it == pairs.end()) {
      if (m.dtype != t.dtype) {  // converted: read, checked, rounded once
        const std::vector<float> v = in.read_f32(name, t.shape);
        require_finite(v, where, kBrokenBaseCheckpoint);
        detail::require_representable(v, m.dtype, where);
        return encoded(v);
      }
      if (detail::is_floating(t.dtype)) detail::require_finite_copied(in, t, where);  // copied, but finite
      m.borrowed = std::span<const std::byte>(t.data, t.nbytes);
      return std::move(m);
    }
    const detail::LoraPair& p = it->second;
    Matrix a(p.a->shape[0], p.a->shape[1]), b(p.b->shape[0], p.b->shape[1]);
    adapter.read_f32(p.a->name, p.a->shape, a.data());
    adapter.read_f32(p.b->name, p.b->shape, b.data());
    for (const auto& [x, at] : {std::pair{&a, p.a}, std::pair{&b, p.b}})
      require_finite(std::span<const float>(x->data(), static_cast<std::size_t>(x->size())),
                     fmt::format("{}: tensor '{}'", adapter_file.string(), at->name), kRefuseBrokenAdapter);
    m.merged = true;
    if (detail::merge_rows(in, t, a, b, scaling, m.dtype, m.owned)) return std::move(m);
    // A non-finite or unrepresentable value: the whole tensor again, for the error that names it.
    Matrix w(t.shape[0], t.shape[1]);
    in.read_f32(name, t.shape, w.data());
    require_finite(std::span<const float>(w.data(), static_cast<std::size_t>(w.size())), where, kBrokenBaseCheckpoint);
    detail::add_lora_delta(w, b, a, scaling);
    require_finite(std::span<const float>(w.data(), static_cast<std::size_t>(w.size())),
                   fmt::format("merged tensor '{}' (base {} + adapter {})", name, in.path().string(),
                               adapter_file.string()),
                   "refusing to write a broken model (the base weight or the LoRA product overflows)");
    const std::span<const float> merged(w.data(), static_cast<std::size_t>(w.size()));
    detail::require_representable(merged, m.dtype, fmt::format("merged tensor '{}'", name));
    return encoded(merged);
  };

  write_directory_atomic(output_dir, [&](const fs::path& staging) {
    for (const auto& shard : layout) {
      SafetensorsWriter out;
      std::map<std::string, std::string> metadata;  // its base shards' (the first one's value on a clash)
      for (const auto& name : shard.names) {
        const auto& m = base.file_of(name).metadata();
        metadata.insert(m.begin(), m.end());
      }
      for (const auto& [key, value] : metadata) out.set_metadata(key, value);
      auto made = parallel_map(shard.names.size(), worker_threads(),
                               [&](std::size_t i) { return make_tensor(shard.names[i]); });
      for (std::size_t i = 0; i < made.size(); ++i) {
        detail::MergedTensor& m = made[i];
        summary.merged_modules += m.merged;
        summary.saved_tensors += m.saved;
        if (m.owned.empty() && !m.borrowed.empty())
          out.add_borrowed(shard.names[i], m.dtype, std::move(m.shape), m.borrowed);
        else
          out.add_owned(shard.names[i], m.dtype, std::move(m.shape), std::move(m.owned));
      }
      out.write(staging / shard.file);
      summary.tensors += shard.names.size();
      summary.shards.push_back(shard.file);
    }
    if (!new_index.is_null()) write_text_atomic(staging / "model.safetensors.index.json", new_index.dump(2) + "\n");
    // config.json, generation_config.json, the tokenizer, the index: every other file, as is.
    // With a conversion, config.json names the new dtype and the index its new total size;
    // re-sharded, the base's index does not describe these files and is left out.
    for (const auto& entry : fs::directory_iterator(model_dir)) {
      if (!entry.is_regular_file() || entry.path().extension() == ".safetensors") continue;
      const fs::path file = entry.path().filename();
      if (resharded && file == "model.safetensors.index.json") continue;
      if (store_as && file == "config.json") {
        write_text_atomic(staging / file, detail::config_with_dtype(entry.path(), *store_as));
      } else if (store_as && file == "model.safetensors.index.json") {
        nlohmann::json index = read_json_file(entry.path());
        index["metadata"]["total_size"] = total_bytes;
        write_text_atomic(staging / file, index.dump(2) + "\n");
      } else {
        fs::copy_file(entry.path(), staging / file, fs::copy_options::overwrite_existing);
      }
      summary.copied_files.push_back(file.string());
    }
    if (options.also_write) options.also_write(staging);
  });
  return summary;
}

}  // namespace peft
