// The embedded default model's shape and weight seed: what `identity_finetune` trains when no
// --model is given, so the recipe runs on any machine with no download. A tiny Qwen2.5
// architecture with the real Qwen2.5 vocabulary and RANDOM weights from a fixed seed: it shows
// the mechanics (loss falling, answers changing to the trained identity), not a useful assistant.
// In the library (not only the programs) because the benchmarks time the same shape.
#pragma once
#include <cstdint>
#include <string_view>

#include "peft/io/model_config.hpp"

namespace peft {

inline constexpr std::uint64_t kEmbeddedWeightSeed = 20250101;
// What identity_finetune records as base_model_name_or_path for this model; chat and merge_lora
// read it back (examples/infer/model_source.hpp) as "the embedded default again".
inline constexpr std::string_view kEmbeddedModelName = "peft-embedded-default";

inline ModelConfig embedded_default_config() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 192;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 151936;  // Qwen2.5-0.5B..3B's embedding rows (the tokenizer uses 151665 of them)
  c.max_position_embeddings = 32768;
  c.rope_theta = 1e6;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = true;
  c.torch_dtype = "float32";
  return c;
}

}  // namespace peft
