// PEFT's on-disk LoRA format, so adapters move freely between peft, HF PEFT, ms-swift and vLLM:
//   adapter_config.json        peft_type LORA, r, lora_alpha, lora_dropout, target_modules, ...
//   adapter_model.safetensors  "base_model.model.<module>.lora_A.weight" [r, in],
//                              "base_model.model.<module>.lora_B.weight" [out, r]
// (PEFT drops the adapter name "default" from the keys when it saves.) Loading checks every
// tensor the model expects is present with its shape, and that the file holds nothing else.
// A model that also fully trains some modules (e.g. LastLayers<2, Full, Lora<8>>) saves them as
// PEFT's modules_to_save do: their whole tensors "base_model.model.<module>.weight" (and .bias)
// in the same adapter_model.safetensors, the modules listed in "modules_to_save", and the LoRA
// restricted to its layers by "layers_to_transform", so PeftModel.from_pretrained rebuilds the
// same model and merge_and_unload() (or our merge_lora) yields the trained weights.
#pragma once
#include <algorithm>
#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/finite.hpp"
#include "peft/core/parameter.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/json_file.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/io/lora_config.hpp"

namespace peft {

inline constexpr std::string_view kPeftKeyPrefix = "base_model.model.";

// The modules an adapter actually covers, as PEFT lists them after resolving "all-linear".
inline std::vector<std::string> targeted_module_names(const LoraConfig& lora) {
  std::vector<std::string> out;
  for (auto m : kQwen2Projections)
    if (lora.targets(m)) out.emplace_back(m);
  return out;
}

inline bool is_lora_tensor_name(std::string_view name) { return name.find(".lora_") != std::string_view::npos; }

// The module a tensor belongs to: "model.layers.3.mlp.up_proj.weight" -> "model.layers.3.mlp.up_proj".
inline std::string module_of(std::string_view tensor) {
  const auto dot = tensor.rfind('.');
  return std::string(dot == std::string_view::npos ? tensor : tensor.substr(0, dot));
}

// The tensor's shape in HF files: biases and norm weights are 1-D.
inline std::vector<std::int64_t> file_shape(const Parameter& p) {
  std::vector<std::int64_t> shape = shape_of(*p.value);
  if (p.is_vector) shape.erase(shape.begin());
  return shape;
}

// PEFT's fields for a partly fully-trained model (empty: null, a plain LoRA adapter).
struct AdapterExtras {
  std::vector<std::string> modules_to_save;  // fully trained modules, whole tensors in the adapter
  std::vector<int> layers_to_transform;      // decoder layers that carry LoRA, when not all do
};

// From the trainable parameters: every non-LoRA tensor's module is a module to save; the layers
// whose names carry a LoRA tensor are listed when they are not all `num_hidden_layers` (0: unknown).
inline AdapterExtras adapter_extras(const ParameterList& params, int num_hidden_layers) {
  AdapterExtras x;
  std::set<int> lora_layers;
  for (const auto& p : params) {
    if (!is_lora_tensor_name(p.name)) {
      std::string m = module_of(p.name);
      if (std::find(x.modules_to_save.begin(), x.modules_to_save.end(), m) == x.modules_to_save.end())
        x.modules_to_save.push_back(std::move(m));
    } else if (p.name.starts_with("model.layers.")) {
      lora_layers.insert(std::stoi(p.name.substr(std::string_view("model.layers.").size())));
    }
  }
  if (num_hidden_layers > 0 && !lora_layers.empty() && static_cast<int>(lora_layers.size()) < num_hidden_layers)
    x.layers_to_transform.assign(lora_layers.begin(), lora_layers.end());
  return x;
}

inline nlohmann::json adapter_config_json(const LoraConfig& lora, const std::string& base_model,
                                          const AdapterExtras& extras = {}) {
  nlohmann::json j;
  j["alpha_pattern"] = nlohmann::json::object();
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = base_model.empty() ? nlohmann::json(nullptr) : nlohmann::json(base_model);
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] =
      extras.layers_to_transform.empty() ? nlohmann::json(nullptr) : nlohmann::json(extras.layers_to_transform);
  j["lora_alpha"] = lora.lora_alpha;
  j["lora_dropout"] = lora.lora_dropout;
  j["modules_to_save"] =
      extras.modules_to_save.empty() ? nlohmann::json(nullptr) : nlohmann::json(extras.modules_to_save);
  j["peft_type"] = "LORA";
  j["r"] = lora.r;
  j["rank_pattern"] = nlohmann::json::object();
  j["revision"] = nullptr;
  j["target_modules"] = targeted_module_names(lora);
  j["task_type"] = "CAUSAL_LM";
  j["use_dora"] = false;
  j["use_rslora"] = lora.use_rslora;
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
  flag_off("fan_in_fan_out");
  if (const auto* b = find_field(j, "bias"); b && !b->is_null())
    require(*b == "none", "{}: bias {} is not supported (only \"none\")", src, b->dump());
  if (const auto* rp = find_field(j, "rank_pattern"); rp && rp->is_object())
    require(rp->empty(), "{}: rank_pattern is not supported", src);
  if (const auto* ap = find_field(j, "alpha_pattern"); ap && ap->is_object())
    require(ap->empty(), "{}: alpha_pattern is not supported", src);

  // Typed reads name the file and the field (a string lora_alpha is an error, an integer one is
  // PEFT's usual spelling), never nlohmann's own text.
  LoraConfig c;
  c.r = json_value_as<int>(get("r"), src, "r");
  c.lora_alpha = json_value_as<double>(get("lora_alpha"), src, "lora_alpha");
  c.lora_dropout = optional_field<double>(j, "lora_dropout", src, c.lora_dropout);
  if (const auto* v = find_field(j, "use_rslora"); v && !v->is_null()) {
    require(v->is_boolean(), "{}: field 'use_rslora' must be true or false, got {}", src, v->dump());
    c.use_rslora = v->get<bool>();
  }
  const auto& t = get("target_modules");
  const bool names = t.is_string() || (t.is_array() && std::all_of(t.begin(), t.end(), [](const auto& v) {
                                         return v.is_string();
                                       }));
  require(names, "{}: field 'target_modules' must be a module name or a list of them, got {}", src, t.dump());
  c.target_modules = t.is_string() ? std::vector<std::string>{t.get<std::string>()} : t.get<std::vector<std::string>>();
  try {
    c.validate();
  } catch (const Error& e) {
    fail("{}: {}", src, e.what());
  }
  return c;
}

// Why a save stops at a NaN/Inf weight: a diverged run must not leave an adapter that looks usable.
inline constexpr std::string_view kRefuseToSaveNonFinite =
    "refusing to save it: the training diverged (check --learning_rate, --adam_beta1/--adam_beta2, --adam_epsilon "
    "and the base model's weights)";

// Writes every tensor of `params` (LoRA A/B, and fully trained ones as modules_to_save, all fp32)
// into `dir` atomically file by file; callers that need the whole folder atomic wrap this in
// write_directory_atomic. `num_hidden_layers` lets layers_to_transform name the LoRA layers.
inline void save_adapter(const std::filesystem::path& dir, const ParameterList& params, const LoraConfig& lora,
                         const std::string& base_model, int num_hidden_layers = 0) {
  SafetensorsWriter w;
  for (const auto& p : params) {
    const std::span<const float> values(p.value->data(), static_cast<std::size_t>(p.value->size()));
    require_finite(values, fmt::format("{}: tensor '{}'", dir.string(), p.name), kRefuseToSaveNonFinite);
    w.add_f32_borrowed(std::string(kPeftKeyPrefix) + p.name, file_shape(p), values);
  }
  std::filesystem::create_directories(dir);
  w.set_metadata("format", "pt");
  w.write(dir / "adapter_model.safetensors");
  write_text_atomic(dir / "adapter_config.json",
                    adapter_config_json(lora, base_model, adapter_extras(params, num_hidden_layers)).dump(2) + "\n");
}

// "modules_to_save" of an adapter folder's adapter_config.json (empty when null or absent).
inline std::vector<std::string> read_modules_to_save(const std::filesystem::path& adapter_dir) {
  const auto path = adapter_dir / "adapter_config.json";
  const nlohmann::json j = read_json_file(path);
  const auto* v = find_field(j, "modules_to_save");
  if (v == nullptr || v->is_null()) return {};
  try {
    return v->get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: 'modules_to_save' is not a list of module names: {}", path.string(), e.what());
  }
}

// vLLM (and other LoRA servers) refuse an adapter with modules_to_save (what LastLayers layouts
// save), the most common "my adapter won't load" report: the warning a program prints when it saves
// one, or nothing for a plain LoRA adapter (or a folder that is not an adapter).
inline std::optional<std::string> modules_to_save_warning(const std::filesystem::path& adapter_dir) {
  if (!std::filesystem::exists(adapter_dir / "adapter_config.json")) return std::nullopt;
  const auto saved = read_modules_to_save(adapter_dir);
  if (saved.empty()) return std::nullopt;
  return fmt::format("{} has modules_to_save ({} modules: {}...): vLLM refuses such LoRA adapters; to serve it, "
                     "merge it first: export --adapters {} --merge_lora true", adapter_dir.string(), saved.size(),
                     saved.front(), adapter_dir.string());
}

// Fills every parameter of `params` (LoRA A/B and any modules_to_save tensors) from a PEFT
// adapter folder.
inline void load_adapter_weights(const std::filesystem::path& dir, const ParameterList& params) {
  const auto file = dir / "adapter_model.safetensors";
  require(std::filesystem::exists(file), "{}: no adapter_model.safetensors in the adapter folder", file.string());
  const auto st = SafetensorsFile::open(file);
  std::set<std::string> expected;
  for (const auto& p : params) {
    const std::string key = std::string(kPeftKeyPrefix) + p.name;
    require(st.contains(key), "{}: tensor '{}' is missing (the adapter does not cover this {})", file.string(),
            key, is_lora_tensor_name(p.name) ? "module" : "fully trained module: no modules_to_save entry");
    st.read_f32(key, file_shape(p), p.value->data());
    require_finite(std::span<const float>(p.value->data(), static_cast<std::size_t>(p.value->size())),
                   fmt::format("{}: tensor '{}'", file.string(), key), "refusing to load a broken adapter");
    expected.insert(key);
  }
  for (const auto& name : st.names())
    require(expected.count(name) != 0, "{}: tensor '{}' does not belong to this model and adapter configuration",
            file.string(), name);
}

}  // namespace peft
