// Which base model an inference command means, decided as ms-swift's `swift infer` / `swift export`
// decide it: --model when given; else, with --adapters, the "model" recorded in the training run's
// args.json (in the checkpoint folder or the run folder above it), else the adapter_config.json's
// base_model_name_or_path. An adapter trained on the embedded default model records the name
// below, which means the embedded default again. A name that is no folder here but a hub id
// (`Qwen/Qwen2.5-7B-Instruct`, as ms-swift records it) is looked up in the local ModelScope and
// HF caches (io/hub_cache.hpp). Also the dtype and system prompt the run
// trained with, which a chat reuses unless told otherwise (ms-swift's load_args_from_ckpt).
#pragma once
#include <filesystem>
#include <optional>
#include <string>

#include "peft/core/error.hpp"
#include "peft/io/hub_cache.hpp"
#include "peft/io/json_file.hpp"
#include "../sft/embedded_default.hpp"

namespace peft::examples {

struct ModelSource {
  std::string model;         // a folder, or empty for the embedded default model
  std::string found_in;      // where the name came from ("--model", a file path)
  std::optional<std::string> torch_dtype, system;  // what the training run used, when recorded
  bool qlora = false;        // args.json records --quant_method bnb --quant_bits 4 (an NF4 base)
};

namespace detail {

inline std::optional<std::filesystem::path> find_args_json(const std::filesystem::path& adapters) {
  for (const auto& dir : {adapters, adapters.parent_path()}) {
    const auto p = dir / "args.json";
    if (!dir.empty() && std::filesystem::exists(p)) return p;
  }
  return std::nullopt;
}

// The model named: a folder here, else a hub id found in the local caches.
inline ModelSource resolve_base_folder(ModelSource s) {
  if (s.model.empty() || std::filesystem::is_directory(s.model)) return s;
  require(io::looks_like_hub_id(s.model),
          "base model '{}' (from {}) is not a folder here; pass --model with the base model's folder", s.model,
          s.found_in);
  try {
    s.model = io::resolve_model_dir(s.model).string();
  } catch (const Error& e) {
    fail("base model (from {}): {}", s.found_in, e.what());
  }
  return s;
}

}  // namespace detail

inline ModelSource resolve_model_source(const std::string& model_flag, const std::string& adapters) {
  ModelSource s;
  if (!model_flag.empty()) {
    s.model = model_flag;
    s.found_in = "--model";
  }
  if (adapters.empty()) return detail::resolve_base_folder(std::move(s));
  const std::filesystem::path dir = adapters;
  require(std::filesystem::is_directory(dir), "--adapters {}: no such folder", adapters);
  if (const auto args = detail::find_args_json(dir)) {
    const auto j = read_json_file(*args);
    if (s.found_in.empty() && find_field(j, "model")) {
      s.model = json_value_as<std::string>(*find_field(j, "model"), args->string(), "model");
      s.found_in = args->string();
    }
    for (auto [key, out] : {std::pair{"torch_dtype", &s.torch_dtype}, std::pair{"system", &s.system}})
      if (find_field(j, key) && !find_field(j, key)->is_null())
        *out = json_value_as<std::string>(*find_field(j, key), args->string(), key);
    if (const auto* bits = find_field(j, "quant_bits"); bits && bits->is_number_integer()) s.qlora = bits->get<int>() == 4;
  }
  if (s.found_in.empty()) {
    const auto cfg_path = dir / "adapter_config.json";
    const auto j = read_json_file(cfg_path);
    const auto* base = find_field(j, "base_model_name_or_path");
    require(base != nullptr,
            "--adapters {}: neither args.json nor adapter_config.json ({}) names the base model; pass --model",
            adapters, cfg_path.string());
    s.model = json_value_as<std::string>(*base, cfg_path.string(), "base_model_name_or_path");
    s.found_in = cfg_path.string();
  }
  if (s.model == kEmbeddedModelName) {
    s.model.clear();
    return s;
  }
  return detail::resolve_base_folder(std::move(s));
}

}  // namespace peft::examples
