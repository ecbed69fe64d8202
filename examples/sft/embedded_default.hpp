// The embedded default model (models/embedded_default.hpp) as the programs use it: what
// `identity_finetune` trains when no --model is given, with the shipped assets it reads (the real
// Qwen2.5 tokenizer, the identity data) found here.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <string>
#include <string_view>

#include "peft/models/embedded_default.hpp"

namespace peft::examples {

// The model itself is the library's (models/embedded_default.hpp); the programs name it here.
using peft::embedded_default_config;
using peft::kEmbeddedModelName;
using peft::kEmbeddedWeightSeed;

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
