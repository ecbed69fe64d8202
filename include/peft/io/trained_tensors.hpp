// The weights file of a layout without LoRA (full fine-tuning of some or all tensors): the trained
// tensors under their HF names in the run's storage dtype, to model.safetensors with config.json
// when every parameter trained (transformers then loads the folder as a model), else to
// trainable_weights.safetensors. Written once over host tensors, for every backend (a device
// backend passes host copies of its own: models/cuda/checkpoint_hooks.cuh). Exact resume reads
// the fp32 masters the optimizer file carries ("master.<name>", optim/state_file.hpp), since a
// bf16 copy would lose the low bits; only an fp32 run may fall back to the weights file.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "peft/core/dtype.hpp"
#include "peft/core/finite.hpp"
#include "peft/core/parameter.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/model_config.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/policies/linear_policy.hpp"

namespace peft {

// Every parameter trains (FullModel): the weights file is the model itself.
template <class Model>
constexpr bool trains_whole_model() { return std::is_same_v<typename Model::Layout, FullModel>; }

inline std::filesystem::path trained_tensors_file(const std::filesystem::path& dir, bool whole_model) {
  return dir / (whole_model ? "model.safetensors" : "trainable_weights.safetensors");
}

// LoRA tensors in `params` are skipped (a layout with LoRA saves an adapter instead).
inline void save_trained_tensors(const std::filesystem::path& dir, const ParameterList& params, const ModelConfig& config,
                                 bool whole_model, DType storage, std::string_view dtype_name) {
  SafetensorsWriter w;
  for (const auto& p : params) {
    if (is_lora_tensor_name(p.name)) continue;
    const std::span<const float> values(p.value->data(), static_cast<std::size_t>(p.value->size()));
    require_finite(values, fmt::format("{}: tensor '{}'", dir.string(), p.name), kRefuseToSaveNonFinite);
    w.add_f32_borrowed(p.name, file_shape(p), values, storage);
  }
  if (w.empty()) return;
  w.set_metadata("format", "pt");
  w.write(trained_tensors_file(dir, whole_model));
  if (whole_model) {
    nlohmann::json cfg = config.to_json();
    cfg["torch_dtype"] = std::string(dtype_name);
    write_text_atomic(dir / "config.json", cfg.dump(2) + "\n");
  }
}

// A model's trained tensors as files: a layout with LoRA writes one PEFT adapter (fully trained
// modules in it as modules_to_save, so HF PEFT loads the whole result); without LoRA the trained
// tensors go as save_trained_tensors writes them. The writer, writer(dir, host_values), holds
// copies of what it reads from the model, so it can run while the model trains on (a CUDA
// model's values come as host copies: models/cuda/checkpoint_hooks.cuh).
template <class Model>
auto trained_weights_writer(Model& model, std::string base_model) {
  if constexpr (Model::uses_lora())
    return [lora = model.lora_config(), base = std::move(base_model),
            layers = static_cast<int>(model.config().num_hidden_layers)](const std::filesystem::path& dir,
                                                                           const ParameterList& values) {
      save_adapter(dir, values, lora, base, layers);
    };
  else
    return [config = model.config()](const std::filesystem::path& dir, const ParameterList& values) {
      save_trained_tensors(dir, values, config, trains_whole_model<Model>(), Model::Precision::storage,
                           Model::Precision::name);
    };
}

// Restores what save_trained_tensors (and the optimizer state's masters) wrote, bit for bit.
inline void load_trained_tensors(const std::filesystem::path& dir, const ParameterList& params, bool whole_model,
                                 DType storage) {
  const auto masters_file = dir / "optimizer.safetensors";
  std::optional<SafetensorsFile> masters, weights;
  if (std::filesystem::exists(masters_file)) masters = SafetensorsFile::open(masters_file);
  for (const auto& p : params) {
    if (is_lora_tensor_name(p.name)) continue;
    const std::string master = "master." + p.name;
    if (masters && masters->contains(master)) {
      masters->read_f32(master, shape_of(*p.value), p.value->data());
      continue;
    }
    require(storage == DType::F32,
            "{}: no fp32 master of '{}' (checkpoint saved with --save_only_model?): cannot restore it exactly",
            masters_file.string(), p.name);
    if (!weights) weights = SafetensorsFile::open(trained_tensors_file(dir, whole_model));
    weights->read_f32(p.name, file_shape(p), p.value->data());
  }
}

}  // namespace peft
