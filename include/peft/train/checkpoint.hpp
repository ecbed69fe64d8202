// Checkpoints: output_dir/checkpoint-<step>/ holds what the model trained (a PEFT adapter for
// LoRA, HF weights for full fine-tuning), the optimizer moments and trainer_state.json. Each is
// published atomically (written to a staging folder, fsynced, renamed), so a crash mid-save
// leaves the previous checkpoint whole. Rotation keeps the newest `save_total_limit`.
#pragma once
#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "peft/io/atomic_file.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/optim/adamw.hpp"

namespace peft {

// LoRA tensors go to the PEFT adapter files; other trainable tensors (full fine-tuning) are
// written with their HF names to model.safetensors, stored in the run's dtype, with config.json
// when every parameter trained, so transformers loads the folder as a model.
template <class Model>
void save_trained_weights(const std::filesystem::path& dir, Model& model, const std::string& base_model) {
  const ParameterList params = model.trainable_parameters();
  if constexpr (Model::uses_lora()) save_adapter(dir, params, model.lora_config(), base_model);
  SafetensorsWriter w;
  for (const auto& p : params) {
    if (p.name.find(".lora_") != std::string::npos) continue;
    std::vector<std::int64_t> shape = shape_of(*p.value);
    if (p.is_vector) shape.erase(shape.begin());
    w.add_f32(p.name, shape, std::span<const float>(p.value->data(), static_cast<std::size_t>(p.value->size())),
              Model::Precision::storage);
  }
  if (w.empty()) return;
  w.set_metadata("format", "pt");
  if constexpr (std::is_same_v<typename Model::Layout, FullModel>) {
    w.write(dir / "model.safetensors");
    nlohmann::json cfg = model.config().to_json();
    cfg["torch_dtype"] = std::string(Model::Precision::name);
    write_text_atomic(dir / "config.json", cfg.dump(2) + "\n");
  } else {
    w.write(dir / "trainable_weights.safetensors");
  }
}

inline void save_adamw_state(const std::filesystem::path& file, const AdamW& opt, const ParameterList& params) {
  SafetensorsWriter w;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto n = static_cast<std::size_t>(params[i].value->size());
    w.add_f32("exp_avg." + params[i].name, shape_of(opt.exp_avg[i]), std::span<const float>(opt.exp_avg[i].data(), n));
    w.add_f32("exp_avg_sq." + params[i].name, shape_of(opt.exp_avg_sq[i]),
              std::span<const float>(opt.exp_avg_sq[i].data(), n));
  }
  w.set_metadata("step", std::to_string(opt.step_count));
  w.write(file);
}

// checkpoint-<N> folders under `output_dir`, oldest first.
inline std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& output_dir) {
  std::vector<std::pair<long long, std::filesystem::path>> found;
  static const std::regex pattern("checkpoint-([0-9]+)");
  if (!std::filesystem::exists(output_dir)) return {};
  for (const auto& e : std::filesystem::directory_iterator(output_dir)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_directory() && std::regex_match(name, m, pattern)) found.emplace_back(std::stoll(m[1]), e.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::filesystem::path> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

// Deletes the oldest checkpoints beyond `limit` (< 0: keep all), never one listed in `keep`.
inline void rotate_checkpoints(const std::filesystem::path& output_dir, std::int64_t limit,
                               const std::vector<std::filesystem::path>& keep = {}) {
  if (limit < 0) return;
  auto all = list_checkpoints(output_dir);
  std::int64_t excess = static_cast<std::int64_t>(all.size()) - std::max<std::int64_t>(limit, 1);
  for (const auto& c : all) {
    if (excess <= 0) break;
    if (std::find(keep.begin(), keep.end(), c) != keep.end()) continue;
    std::filesystem::remove_all(c);
    --excess;
  }
}

}  // namespace peft
