// config.json of a Qwen2 model: the run-time shapes every layer is built from. Reading follows HF's
// Qwen2Config defaults for fields a file may omit, and accepts both spellings transformers has
// used (rope_theta at top level in 4.x, rope_parameters.rope_theta in 5.x; torch_dtype / dtype).
// Features this library does not implement (other RoPE types, sliding window, other activations)
// are rejected here with the file and field, rather than giving silently different numbers.
#pragma once
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>

#include "peft/core/error.hpp"
#include "peft/io/json_file.hpp"
#include "peft/io/quantised_checkpoint.hpp"

namespace peft {

struct ModelConfig {
  static constexpr std::int64_t kMaxModelDimension = std::int64_t{1} << 30;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t vocab_size = 0;
  std::int64_t max_position_embeddings = 32768;  // Qwen2Config's default
  std::int64_t head_dim = 0;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  std::string model_type = "qwen2";
  std::string torch_dtype = "float32";

  static ModelConfig from_file(const std::filesystem::path& config_json) {
    return from_json(read_json_file(config_json), config_json.string());
  }

  // `source` names the file in errors. The result is validated.
  static ModelConfig from_json(const nlohmann::json& j, std::string_view source) {
    require(j.is_object(), "{}: config must be a JSON object", source);
    reject_quantization_config(j, source);
    ModelConfig c;
    c.hidden_size = required_field<std::int64_t>(j, "hidden_size", source);
    c.intermediate_size = required_field<std::int64_t>(j, "intermediate_size", source);
    c.num_hidden_layers = required_field<std::int64_t>(j, "num_hidden_layers", source);
    c.num_attention_heads = required_field<std::int64_t>(j, "num_attention_heads", source);
    c.vocab_size = required_field<std::int64_t>(j, "vocab_size", source);
    c.num_key_value_heads = optional_field<std::int64_t>(j, "num_key_value_heads", source, c.num_attention_heads);
    c.max_position_embeddings =
        optional_field<std::int64_t>(j, "max_position_embeddings", source, c.max_position_embeddings);
    require(c.num_attention_heads > 0, "{}: field 'num_attention_heads' must be positive, got {}", source,
            c.num_attention_heads);
    c.head_dim = optional_field<std::int64_t>(j, "head_dim", source, c.hidden_size / c.num_attention_heads);
    c.rms_norm_eps = optional_field<double>(j, "rms_norm_eps", source, c.rms_norm_eps);
    c.tie_word_embeddings = optional_field<bool>(j, "tie_word_embeddings", source, c.tie_word_embeddings);
    c.model_type = optional_field<std::string>(j, "model_type", source, c.model_type);
    // Another architecture's config often parses as Qwen2's (llama has the same fields) and would
    // load into the wrong network without a word.
    require(c.model_type == "qwen2", "{}: model_type '{}' is not supported (this library implements Qwen2/Qwen2.5: "
            "model_type 'qwen2')", source, c.model_type);
    c.torch_dtype = optional_field<std::string>(j, "torch_dtype", source,
                                                optional_field<std::string>(j, "dtype", source, c.torch_dtype));

    // RoPE: transformers 5 writes rope_parameters {rope_theta, rope_type}; 4.x wrote rope_theta and
    // an optional rope_scaling {type | rope_type}.
    std::string rope_type = "default";
    c.rope_theta = optional_field<double>(j, "rope_theta", source, c.rope_theta);
    if (const nlohmann::json* rp = find_field(j, "rope_parameters")) {
      require(rp->is_object(), "{}: field 'rope_parameters' must be an object", source);
      const double theta = optional_field<double>(*rp, "rope_theta", source, c.rope_theta);
      require(!find_field(j, "rope_theta") || theta == c.rope_theta,
              "{}: rope_theta {} and rope_parameters.rope_theta {} disagree", source, c.rope_theta, theta);
      c.rope_theta = theta;
      rope_type = optional_field<std::string>(*rp, "rope_type", source, rope_type);
    }
    if (const nlohmann::json* rs = find_field(j, "rope_scaling")) {
      require(rs->is_object(), "{}: field 'rope_scaling' must be an object or null", source);
      rope_type = optional_field<std::string>(*rs, "rope_type", source,
                                              optional_field<std::string>(*rs, "type", source, rope_type));
    }
    require(rope_type == "default", "{}: rope_type '{}' is not supported (only default RoPE is implemented)", source,
            rope_type);

    const std::string act = optional_field<std::string>(j, "hidden_act", source, "silu");
    require(act == "silu", "{}: hidden_act '{}' is not supported (Qwen2 uses 'silu')", source, act);
    require(!optional_field<bool>(j, "use_sliding_window", source, false),
            "{}: use_sliding_window true is not supported (full causal attention only)", source);
    const double attention_dropout = optional_field<double>(j, "attention_dropout", source, 0.0);
    require(attention_dropout == 0.0, "{}: attention_dropout {} is not supported (must be 0)", source,
            attention_dropout);

    c.validate(source);
    return c;
  }

  // A config.json that transformers (4.x and 5.x) loads as Qwen2ForCausalLM.
  nlohmann::json to_json() const {
    nlohmann::json j;
    j["architectures"] = {"Qwen2ForCausalLM"};
    j["attention_dropout"] = 0.0;
    j["dtype"] = torch_dtype;
    j["head_dim"] = head_dim;
    j["hidden_act"] = "silu";
    j["hidden_size"] = hidden_size;
    j["initializer_range"] = 0.02;
    j["intermediate_size"] = intermediate_size;
    j["max_position_embeddings"] = max_position_embeddings;
    j["max_window_layers"] = num_hidden_layers;
    j["model_type"] = "qwen2";
    j["num_attention_heads"] = num_attention_heads;
    j["num_hidden_layers"] = num_hidden_layers;
    j["num_key_value_heads"] = num_key_value_heads;
    j["rms_norm_eps"] = rms_norm_eps;
    j["rope_parameters"] = {{"rope_theta", rope_theta}, {"rope_type", "default"}};
    j["rope_theta"] = rope_theta;
    j["sliding_window"] = nullptr;
    j["tie_word_embeddings"] = tie_word_embeddings;
    j["torch_dtype"] = torch_dtype;
    j["use_cache"] = true;
    j["use_sliding_window"] = false;
    j["vocab_size"] = vocab_size;
    return j;
  }

  void validate(std::string_view source) const {
    auto positive = [&](std::int64_t v, std::string_view field) {
      require(v > 0, "{}: field '{}' must be positive, got {}", source, field, v);
    };
    positive(hidden_size, "hidden_size");
    positive(intermediate_size, "intermediate_size");
    positive(num_hidden_layers, "num_hidden_layers");
    positive(num_attention_heads, "num_attention_heads");
    positive(num_key_value_heads, "num_key_value_heads");
    positive(vocab_size, "vocab_size");
    positive(max_position_embeddings, "max_position_embeddings");
    positive(head_dim, "head_dim");
    // Sizes beyond this fit no memory; refusing them here keeps every product of two of them
    // inside int64 and every later allocation named, instead of a bare std::bad_alloc.
    for (const auto& [v, field] : {std::pair{hidden_size, "hidden_size"}, {intermediate_size, "intermediate_size"},
                                   {num_hidden_layers, "num_hidden_layers"}, {num_attention_heads, "num_attention_heads"},
                                   {num_key_value_heads, "num_key_value_heads"}, {vocab_size, "vocab_size"},
                                   {max_position_embeddings, "max_position_embeddings"}, {head_dim, "head_dim"}})
      require(v <= kMaxModelDimension, "{}: field '{}' = {} is too large (at most {})", source, field, v,
              kMaxModelDimension);
    require(hidden_size % num_attention_heads == 0,
            "{}: hidden_size {} is not divisible by num_attention_heads {}", source, hidden_size, num_attention_heads);
    require(num_attention_heads % num_key_value_heads == 0,
            "{}: num_attention_heads {} is not divisible by num_key_value_heads {}", source, num_attention_heads,
            num_key_value_heads);
    require(head_dim % 2 == 0, "{}: head_dim {} must be even for RoPE", source, head_dim);
    require(std::isfinite(rope_theta) && rope_theta > 0, "{}: rope_theta must be positive, got {}", source,
            rope_theta);
    require(std::isfinite(rms_norm_eps) && rms_norm_eps > 0, "{}: rms_norm_eps must be positive, got {}", source,
            rms_norm_eps);
  }
};

}  // namespace peft
