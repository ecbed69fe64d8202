// PEFT's on-disk LoRA format, so adapters move freely between peft, HF PEFT, ms-swift and vLLM:
//   adapter_config.json        peft_type LORA, r, lora_alpha, lora_dropout, target_modules, ...
//   adapter_model.safetensors  "base_model.model.<module>.lora_A.weight" [r, in],
//                              "base_model.model.<module>.lora_B.weight" [out, r]
// (PEFT drops the adapter name "default" from the keys when it saves.) Loading checks every
// tensor the model expects is present with its shape, and that the file holds nothing else.
#pragma once
#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "peft/core/error.hpp"
#include "peft/core/parameter.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/json_file.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/layers/lora_config.hpp"

namespace peft {

inline constexpr std::string_view kPeftKeyPrefix = "base_model.model.";

// The modules an adapter actually covers, as PEFT lists them after resolving "all-linear".
inline std::vector<std::string> targeted_module_names(const LoraConfig& lora) {
  std::vector<std::string> out;
  for (auto m : kQwen2Projections)
    if (lora.targets(m)) out.emplace_back(m);
  return out;
}

inline nlohmann::json adapter_config_json(const LoraConfig& lora, const std::string& base_model) {
  nlohmann::json j;
  j["alpha_pattern"] = nlohmann::json::object();
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = base_model.empty() ? nlohmann::json(nullptr) : nlohmann::json(base_model);
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["lora_alpha"] = lora.lora_alpha;
  j["lora_dropout"] = lora.lora_dropout;
  j["modules_to_save"] = nullptr;
  j["peft_type"] = "LORA";
  j["r"] = lora.r;
  j["rank_pattern"] = nlohmann::json::object();
  j["revision"] = nullptr;
  j["target_modules"] = targeted_module_names(lora);
  j["task_type"] = "CAUSAL_LM";
  j["use_dora"] = false;
  j["use_rslora"] = false;
  return j;
}

// Reads adapter_config.json into a LoraConfig; rejects what we would compute differently.
inline LoraConfig read_adapter_config(const std::filesystem::path& adapter_dir) {
  const auto path = adapter_dir / "adapter_config.json";
  const nlohmann::json j = read_json_file(path);
  const std::string src = path.string();
  auto get = [&](const char* key) -> const nlohmann::json& {
    const auto* v = find_field(j, key);
    require(v != nullptr && !v->is_null(), "{}: missing field '{}'", src, key);
    return *v;
  };
  require(get("peft_type") == "LORA", "{}: peft_type is {}, only LORA adapters are supported", src,
          get("peft_type").dump());
  auto flag_off = [&](const char* key) {
    const auto* v = find_field(j, key);
    require(v == nullptr || v->is_null() || *v == false, "{}: '{}' is set; peft does not implement it", src, key);
  };
  flag_off("use_dora");
  flag_off("use_rslora");
  flag_off("fan_in_fan_out");
  if (const auto* b = find_field(j, "bias"); b && !b->is_null())
    require(*b == "none", "{}: bias {} is not supported (only \"none\")", src, b->dump());
  if (const auto* rp = find_field(j, "rank_pattern"); rp && rp->is_object())
    require(rp->empty(), "{}: rank_pattern is not supported", src);
  if (const auto* ap = find_field(j, "alpha_pattern"); ap && ap->is_object())
    require(ap->empty(), "{}: alpha_pattern is not supported", src);

  LoraConfig c;
  try {
    c.r = get("r").get<int>();
    c.lora_alpha = get("lora_alpha").get<double>();
    if (const auto* d = find_field(j, "lora_dropout"); d && !d->is_null()) c.lora_dropout = d->get<double>();
    const auto& t = get("target_modules");
    c.target_modules = t.is_string() ? std::vector<std::string>{t.get<std::string>()} : t.get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: wrong field type: {}", src, e.what());
  }
  try {
    c.validate();
  } catch (const Error& e) {
    fail("{}: {}", src, e.what());
  }
  return c;
}

// Writes the adapter's LoRA tensors (the `.lora_` entries of `params`) into `dir` atomically
// file by file; callers that need the whole folder atomic wrap this in write_directory_atomic.
inline void save_adapter(const std::filesystem::path& dir, const ParameterList& params, const LoraConfig& lora,
                         const std::string& base_model) {
  std::filesystem::create_directories(dir);
  SafetensorsWriter w;
  for (const auto& p : params) {
    if (p.name.find(".lora_") == std::string::npos) continue;
    w.add_f32(std::string(kPeftKeyPrefix) + p.name, shape_of(*p.value),
              std::span<const float>(p.value->data(), static_cast<std::size_t>(p.value->size())));
  }
  w.set_metadata("format", "pt");
  w.write(dir / "adapter_model.safetensors");
  write_text_atomic(dir / "adapter_config.json", adapter_config_json(lora, base_model).dump(2) + "\n");
}

// Fills the model's LoRA parameters from a PEFT adapter folder.
inline void load_adapter_weights(const std::filesystem::path& dir, const ParameterList& params) {
  const auto file = dir / "adapter_model.safetensors";
  require(std::filesystem::exists(file), "{}: no adapter_model.safetensors in the adapter folder", file.string());
  const auto st = SafetensorsFile::open(file);
  std::set<std::string> expected;
  for (const auto& p : params) {
    if (p.name.find(".lora_") == std::string::npos) continue;
    const std::string key = std::string(kPeftKeyPrefix) + p.name;
    require(st.contains(key), "{}: tensor '{}' is missing (the adapter does not cover this module)", file.string(), key);
    st.read_f32(key, shape_of(*p.value), p.value->data());
    expected.insert(key);
  }
  for (const auto& name : st.names())
    require(expected.count(name) != 0, "{}: tensor '{}' does not belong to this model and adapter configuration",
            file.string(), name);
}

}  // namespace peft
