// Compile-time shape presets for the Qwen2.5 family. Shapes stay run-time values (config.json),
// but a program written for one size names its preset and check_preset() rejects a checkpoint of
// another shape before any weight is read, naming the field that differs.
#pragma once
#include <cstdint>
#include <string_view>

#include "peft/core/error.hpp"
#include "peft/io/model_config.hpp"

namespace peft {

template <class P>
concept ModelPreset = requires {
  { P::name } -> std::convertible_to<std::string_view>;
  { P::hidden_size } -> std::convertible_to<std::int64_t>;
};

#define PEFT_QWEN25_PRESET(Type, Name, H, I, L, NH, KV, V, TIE)                            \
  struct Type {                                                                            \
    static constexpr std::string_view name = Name;                                         \
    static constexpr std::int64_t hidden_size = H, intermediate_size = I,                  \
                                  num_hidden_layers = L, num_attention_heads = NH,         \
                                  num_key_value_heads = KV, vocab_size = V;                \
    static constexpr bool tie_word_embeddings = TIE;                                       \
    static constexpr double rope_theta = 1e6, rms_norm_eps = 1e-6;                         \
  };

PEFT_QWEN25_PRESET(Qwen25_0_5B, "Qwen2.5-0.5B", 896, 4864, 24, 14, 2, 151936, true)
PEFT_QWEN25_PRESET(Qwen25_1_5B, "Qwen2.5-1.5B", 1536, 8960, 28, 12, 2, 151936, true)
PEFT_QWEN25_PRESET(Qwen25_3B, "Qwen2.5-3B", 2048, 11008, 36, 16, 2, 151936, true)
PEFT_QWEN25_PRESET(Qwen25_7B, "Qwen2.5-7B", 3584, 18944, 28, 28, 4, 152064, false)
PEFT_QWEN25_PRESET(Qwen25_14B, "Qwen2.5-14B", 5120, 13824, 48, 40, 8, 152064, false)
PEFT_QWEN25_PRESET(Qwen25_32B, "Qwen2.5-32B", 5120, 27648, 64, 40, 8, 152064, false)
#undef PEFT_QWEN25_PRESET

template <ModelPreset P>
ModelConfig preset_config() {
  ModelConfig c;
  c.hidden_size = P::hidden_size;
  c.intermediate_size = P::intermediate_size;
  c.num_hidden_layers = P::num_hidden_layers;
  c.num_attention_heads = P::num_attention_heads;
  c.num_key_value_heads = P::num_key_value_heads;
  c.vocab_size = P::vocab_size;
  c.head_dim = P::hidden_size / P::num_attention_heads;
  c.tie_word_embeddings = P::tie_word_embeddings;
  c.rope_theta = P::rope_theta;
  c.rms_norm_eps = P::rms_norm_eps;
  c.torch_dtype = "bfloat16";
  return c;
}

// Throws if `c` (read from `source`) is not the preset's architecture.
template <ModelPreset P>
void check_preset(const ModelConfig& c, std::string_view source) {
  const ModelConfig want = preset_config<P>();
  auto same = [&](std::string_view field, auto got, auto expected) {
    require(got == expected, "{}: {} is {} but this program is built for {} ({} = {})", source, field, got, P::name,
            field, expected);
  };
  same("hidden_size", c.hidden_size, want.hidden_size);
  same("intermediate_size", c.intermediate_size, want.intermediate_size);
  same("num_hidden_layers", c.num_hidden_layers, want.num_hidden_layers);
  same("num_attention_heads", c.num_attention_heads, want.num_attention_heads);
  same("num_key_value_heads", c.num_key_value_heads, want.num_key_value_heads);
  same("vocab_size", c.vocab_size, want.vocab_size);
  same("tie_word_embeddings", c.tie_word_embeddings, want.tie_word_embeddings);
}

}  // namespace peft
