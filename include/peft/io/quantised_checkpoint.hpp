// Checkpoints that are already quantised (GPTQ, AWQ, bitsandbytes-serialised, ...) hold packed
// integer tensors we do not read; without this check they would fail later on a missing
// `.weight` or an unknown dtype, or worse, load partly. We refuse them up front, naming the
// format, and point at what we do read: the ordinary bf16/fp32 checkpoint, which
// `--quant_method bnb --quant_bits 4` quantises to NF4 on load (docs/qlora.md).
#pragma once
#include <array>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "peft/core/error.hpp"

namespace peft {

// config.json's `quantization_config` (transformers writes it for every quantised checkpoint).
inline void reject_quantization_config(const nlohmann::json& config, std::string_view source) {
  if (!config.is_object() || !config.contains("quantization_config")) return;
  const auto& q = config["quantization_config"];
  std::string method = "unknown";
  if (q.is_object() && q.contains("quant_method") && q["quant_method"].is_string())
    method = q["quant_method"].get<std::string>();
  fail("{}: this checkpoint is already quantised (quantization_config.quant_method = '{}'); pre-quantised "
       "checkpoints are not read here: give the original bf16 model, and --quant_method bnb --quant_bits 4 to "
       "train QLoRA on an NF4 base quantised on load", source, method);
}

// A tensor name that only a quantised checkpoint has; returns the format, or empty.
inline std::string_view quantised_tensor_format(std::string_view name) {
  auto ends_with = [&](std::string_view s) { return name.size() >= s.size() && name.substr(name.size() - s.size()) == s; };
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 8> kSuffixes = {{
      {".qweight", "GPTQ/AWQ"}, {".qzeros", "GPTQ/AWQ"}, {".g_idx", "GPTQ"},
      {".absmax", "bitsandbytes"}, {".quant_map", "bitsandbytes"}, {".nested_absmax", "bitsandbytes"},
      {".quant_state.bitsandbytes__nf4", "bitsandbytes"}, {".SCB", "bitsandbytes 8-bit"}}};
  for (const auto& [suffix, format] : kSuffixes)
    if (ends_with(suffix)) return format;
  return {};
}

template <class Names>
void reject_quantised_tensors(const Names& names, std::string_view source) {
  for (const auto& name : names)
    if (const auto format = quantised_tensor_format(name); !format.empty())
      fail("{}: tensor '{}' is {}-quantised; pre-quantised checkpoints are not read here: give the original bf16 "
           "model, and --quant_method bnb --quant_bits 4 to train QLoRA on an NF4 base quantised on load",
           source, name, format);
}

}  // namespace peft
