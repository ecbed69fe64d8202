// config.json against the checkpoint, before anything is allocated. A model is sized from
// config.json, so a config that disagrees with its weights (intermediate_size 5000000 in a tiny
// model, num_hidden_layers 100000) would allocate gigabytes, or fail with a bare std::bad_alloc,
// before the first tensor read noticed. The safetensors headers already hold every tensor's
// shape, and reading them costs a memory map, so every tensor the config implies is checked
// against them first; an error names the tensor, both shapes and the config fields involved.
// Tensors the config does not imply (a second layer under num_hidden_layers = 1, a stray
// "model.layers.7.mlp.bogus.weight") are not an error: as transformers ("Some weights of the model
// checkpoint ... were not used"), every loader and export warns, names a few, and leaves them out.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/io/model_config.hpp"
#include "peft/io/safetensors_reader.hpp"

namespace peft {

struct ExpectedTensor {
  std::string name;
  std::vector<std::int64_t> shape;  // as stored by HF: 1-D for biases and norms
  const char* fields;               // the config.json fields the shape comes from
};

// f(ExpectedTensor) for every tensor HF's Qwen2ForCausalLM keeps for `cfg`, in checkpoint order;
// a visit rather than a list, so a config with a billion layers stops at the first missing one.
template <class F>
void for_each_expected_qwen2_tensor(const ModelConfig& cfg, F&& out_f) {
  const std::int64_t h = cfg.hidden_size, q = cfg.num_attention_heads * cfg.head_dim,
                     kv = cfg.num_key_value_heads * cfg.head_dim, inter = cfg.intermediate_size;
  struct {
    F& f;
    void push_back(const ExpectedTensor& e) { f(e); }
  } out{out_f};
  out.push_back({"model.embed_tokens.weight", {cfg.vocab_size, h}, "vocab_size, hidden_size"});
  for (std::int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    out.push_back({l + "input_layernorm.weight", {h}, "hidden_size"});
    out.push_back({l + "self_attn.q_proj.weight", {q, h}, "num_attention_heads x head_dim, hidden_size"});
    out.push_back({l + "self_attn.q_proj.bias", {q}, "num_attention_heads x head_dim"});
    out.push_back({l + "self_attn.k_proj.weight", {kv, h}, "num_key_value_heads x head_dim, hidden_size"});
    out.push_back({l + "self_attn.k_proj.bias", {kv}, "num_key_value_heads x head_dim"});
    out.push_back({l + "self_attn.v_proj.weight", {kv, h}, "num_key_value_heads x head_dim, hidden_size"});
    out.push_back({l + "self_attn.v_proj.bias", {kv}, "num_key_value_heads x head_dim"});
    out.push_back({l + "self_attn.o_proj.weight", {h, q}, "hidden_size, num_attention_heads x head_dim"});
    out.push_back({l + "post_attention_layernorm.weight", {h}, "hidden_size"});
    out.push_back({l + "mlp.gate_proj.weight", {inter, h}, "intermediate_size, hidden_size"});
    out.push_back({l + "mlp.up_proj.weight", {inter, h}, "intermediate_size, hidden_size"});
    out.push_back({l + "mlp.down_proj.weight", {h, inter}, "hidden_size, intermediate_size"});
  }
  out.push_back({"model.norm.weight", {h}, "hidden_size"});
  if (!cfg.tie_word_embeddings) out.push_back({"lm_head.weight", {cfg.vocab_size, h}, "vocab_size, hidden_size"});
}

// The tensors of `weights` that `cfg` does not imply, in name order. lm_head.weight of a model with
// tied embeddings counts as used: transformers ties it to the embeddings without a word.
inline std::vector<std::string> unused_checkpoint_tensors(const ModelConfig& cfg, const SafetensorsModel& weights) {
  std::set<std::string> expected;
  for_each_expected_qwen2_tensor(cfg, [&](const ExpectedTensor& e) { expected.insert(e.name); });
  std::vector<std::string> unused;
  for (const auto& name : weights.names())
    if (!expected.count(name) && !(cfg.tie_word_embeddings && name == "lm_head.weight")) unused.push_back(name);
  return unused;
}

// Checks that `weights` holds every tensor `cfg` implies, with the implied shape, and warns (on
// stderr) about the tensors it holds beyond them.
inline void check_config_matches_checkpoint(const ModelConfig& cfg, const SafetensorsModel& weights,
                                            const std::filesystem::path& config_json) {
  for_each_expected_qwen2_tensor(cfg, [&](const ExpectedTensor& e) {
    require(weights.contains(e.name),
            "{}: no tensor '{}', which {} implies (num_hidden_layers = {}, tie_word_embeddings = {}): config.json and "
            "the weights describe different models", weights.source().string(), e.name, config_json.string(),
            cfg.num_hidden_layers, cfg.tie_word_embeddings);
    const StoredTensor& t = weights.tensor(e.name);
    require(t.shape == e.shape,
            "{}: tensor '{}' has shape {}, but {} implies {} (from {}): config.json and the weights describe "
            "different models", weights.file_of(e.name).path().string(), e.name, format_shape(t.shape),
            config_json.string(), format_shape(e.shape), e.fields);
  });
  // Only now: every implied tensor exists, so listing them is bounded by the checkpoint's size (a
  // config with num_hidden_layers = 1e9 failed above at the first missing layer).
  if (const auto unused = unused_checkpoint_tensors(cfg, weights); !unused.empty()) {
    constexpr std::size_t kNamed = 5;
    const std::vector<std::string> named(unused.begin(), unused.begin() + std::min(unused.size(), kNamed));
    fmt::print(stderr, "warning: {}: {} tensor{} of the checkpoint {} not used by the model {} describes "
               "(num_hidden_layers = {}) and {} left out: {}{}\n", weights.source().string(), unused.size(),
               unused.size() == 1 ? "" : "s", unused.size() == 1 ? "is" : "are", config_json.string(),
               cfg.num_hidden_layers, unused.size() == 1 ? "is" : "are", fmt::join(named, ", "),
               unused.size() > kNamed ? fmt::format(" and {} more", unused.size() - kNamed) : "");
  }
}

// config.json of a model folder, checked against the folder's safetensors headers.
inline ModelConfig read_checked_model_config(const std::filesystem::path& dir) {
  const auto config_json = dir / "config.json";
  const ModelConfig cfg = ModelConfig::from_file(config_json);
  check_config_matches_checkpoint(cfg, SafetensorsModel::open(dir), config_json);
  return cfg;
}

}  // namespace peft
