// The embedded default model: what `identity_finetune` trains when no --model is given, so the
// recipe runs on any machine with no download. It is a tiny Qwen2.5 architecture with the real
// Qwen2.5 tokenizer and vocabulary and RANDOM weights from a fixed seed: it shows the mechanics
// (loss falling, answers changing to the trained identity), not a useful assistant.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <string>
#include <string_view>

#include "peft/io/model_config.hpp"

namespace peft::examples {

inline constexpr std::uint64_t kEmbeddedWeightSeed = 20250101;
// What identity_finetune records as base_model_name_or_path for this model; chat and merge_lora
// read it back (infer/model_source.hpp) as "the embedded default again".
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

// Where the shipped assets (identity data, tokenizer) are: $PEFT_ASSETS when set; else beside an
// installed binary (<prefix>/bin/../share/peft/assets: PEFT_INSTALLED_ASSETS, relative to the
// binary's folder, exists); else the source tree the binary was built from (an in-tree build).
inline std::filesystem::path assets_dir() {
  if (const char* env = std::getenv("PEFT_ASSETS"); env != nullptr && *env != '\0') return env;
#ifdef PEFT_INSTALLED_ASSETS
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto installed = (exe.parent_path() / PEFT_INSTALLED_ASSETS).lexically_normal();
    if (std::filesystem::is_directory(installed, ec)) return installed;
  }
#endif
  return PEFT_DEFAULT_ASSETS;
}
inline std::filesystem::path default_tokenizer() { return assets_dir() / "tokenizer" / "qwen2.5" / "tokenizer.json"; }
inline std::filesystem::path default_identity_dataset() { return assets_dir() / "data" / "self_cognition.jsonl"; }
inline std::filesystem::path default_identity_questions() { return assets_dir() / "data" / "identity_eval.jsonl"; }
inline std::filesystem::path default_general_eval() { return assets_dir() / "data" / "general_eval.jsonl"; }

}  // namespace peft::examples
