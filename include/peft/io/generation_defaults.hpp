// What a model folder's generation_config.json says about generation (sampling defaults and the
// eos list). It lives in io/ because both generation (the defaults a flag falls back to) and the
// GGUF writer (the eos/eot ids llama.cpp stops at) read it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "peft/io/json_file.hpp"

namespace peft {

// The fields of generation_config.json that generation reads; absent ones stay empty.
struct GenerationDefaults {
  std::optional<bool> do_sample;
  std::optional<double> temperature, top_p, repetition_penalty;
  std::optional<std::int64_t> top_k, max_new_tokens;
  std::vector<std::int32_t> eos_token_ids;

  static GenerationDefaults from_model_dir(const std::filesystem::path& dir) {
    const auto path = dir / "generation_config.json";
    if (!std::filesystem::exists(path)) return {};
    return from_json(read_json_file(path), path.string());
  }

  static GenerationDefaults from_json(const nlohmann::json& j, const std::string& source) {
    require(j.is_object(), "{}: must be a JSON object", source);
    GenerationDefaults d;
    auto opt = [&]<class T>(const char* key, std::optional<T>& out) {
      if (find_field(j, key)) out = json_value_as<T>(*find_field(j, key), source, key);
    };
    opt("do_sample", d.do_sample);
    opt("temperature", d.temperature);
    opt("top_p", d.top_p);
    opt("repetition_penalty", d.repetition_penalty);
    opt("top_k", d.top_k);
    opt("max_new_tokens", d.max_new_tokens);
    if (const auto* eos = find_field(j, "eos_token_id")) {  // an id or a list of ids
      if (eos->is_array())
        for (const auto& e : *eos) d.eos_token_ids.push_back(json_value_as<std::int32_t>(e, source, "eos_token_id"));
      else
        d.eos_token_ids.push_back(json_value_as<std::int32_t>(*eos, source, "eos_token_id"));
    }
    return d;
  }
};

}  // namespace peft
