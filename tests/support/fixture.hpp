// Test support: the reference fixtures under tests/fixtures/<name>/ (made by
// tools/reference/make_fixtures.py with HF transformers + PEFT), shared by the Catch2 tests and
// the CUDA test programs (tests/cuda). No test-framework macros here: a missing or broken fixture
// throws peft::Error (peft::require), which both harnesses report as a failure.
// The fixtures root is $PEFT_FIXTURES_DIR when set (binaries built on one machine and run on
// another), else the PEFT_FIXTURES path the build defines.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/data/sample.hpp"
#include "peft/io/json_file.hpp"
#include "peft/io/model_config.hpp"
#include "peft/train/training_arguments.hpp"

#ifndef PEFT_FIXTURES
#error "PEFT_FIXTURES (the tests/fixtures path) must be defined by the build"
#endif

namespace peft::test {

inline std::filesystem::path fixtures_root() {
  if (const char* e = std::getenv("PEFT_FIXTURES_DIR"); e != nullptr && *e != '\0') return e;
  return PEFT_FIXTURES;
}

inline std::filesystem::path fixture(const std::string& name) { return fixtures_root() / name; }

// The fixture's pre-tokenized rows ({"input_ids", "labels"} per line).
inline std::vector<Sample> fixture_samples(const std::string& name) {
  const auto file = fixture(name) / "tokens.jsonl";
  std::ifstream in(file);
  require(static_cast<bool>(in), "cannot open fixture file {}", file.string());
  std::vector<Sample> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    out.push_back({j["input_ids"].get<std::vector<std::int32_t>>(), j["labels"].get<std::vector<std::int32_t>>()});
  }
  require(!out.empty(), "fixture file {} holds no samples", file.string());
  return out;
}

inline nlohmann::json fixture_golden(const std::string& name) { return read_json_file(fixture(name) / "golden.json"); }

// The TrainingArguments of the fixture's HF golden run (golden.json): HF's AdamW betas
// 0.9 / 0.999 and eps 1e-8 (not ms-swift's beta2 0.95), no shuffling, no logging.
inline TrainingArguments golden_args(const nlohmann::json& g) {
  TrainingArguments a;
  a.learning_rate = g["lr"];
  a.num_train_epochs = g["epochs"];
  a.max_grad_norm = g["max_grad_norm"];
  a.gradient_accumulation_steps = g.value("gradient_accumulation_steps", 1);
  a.per_device_train_batch_size = g.value("per_device_train_batch_size", 1);
  a.lr_scheduler_type = g.value("lr_scheduler_type", std::string("constant"));
  a.warmup_ratio = g.value("warmup_ratio", 0.0);
  a.weight_decay = g.value("weight_decay", 0.0);
  a.adam_beta1 = 0.9;
  a.adam_beta2 = 0.999;
  a.adam_epsilon = 1e-8;
  a.train_dataloader_shuffle = false;
  a.logging_steps = 1000;
  return a;
}

// The CUDA tests' small random shape: hidden 128 in heads of `head_dim`, `kv_heads` kv heads,
// 2 layers, vocab 320 (their model and decode tests compare it against the CPU backend).
inline ModelConfig tiny_test_config(int head_dim, bool tied, int kv_heads, std::int64_t max_positions = 32768) {
  ModelConfig c;
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 128 / head_dim;
  c.num_key_value_heads = kv_heads;
  c.head_dim = head_dim;
  c.vocab_size = 320;
  c.tie_word_embeddings = tied;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = max_positions;
  return c;
}

}  // namespace peft::test
