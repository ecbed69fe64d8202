// A Qwen2 model folder (config.json, safetensors, tokenizer) written as one GGUF file that
// llama.cpp (and Ollama, LM Studio...) loads as a `qwen2` model. The names and metadata follow
// what llama.cpp's convert_hf_to_gguf.py writes for Qwen2ForCausalLM, since that is what
// llama.cpp's loader expects:
//   tensors  model.embed_tokens -> token_embd, layers.N.{input_layernorm -> attn_norm,
//            self_attn.{q,k,v}_proj (weight and bias) -> attn_{q,k,v}, o_proj -> attn_output,
//            post_attention_layernorm -> ffn_norm, mlp.{gate,up,down}_proj -> ffn_{gate,up,down}},
//            model.norm -> output_norm, lm_head -> output (absent when the embeddings are tied:
//            llama.cpp then reuses token_embd). No permutation: Qwen2's q/k are stored as HF has them.
//            1-D tensors (norms, biases) stay f32, as convert does; a matrix whose rows are not
//            whole q8_0 blocks falls back to f16, as convert does.
//   tokenizer  byte-level BPE ("gpt2") with the "qwen2" pre-tokenizer; every id below vocab_size
//            gets a token (ids the tokenizer leaves free become "[PAD<id>]", type unused); added
//            special tokens are control tokens. eos is tokenizer_config.json's eos_token (else the
//            first of generation_config.json's eos_token_id list); a second listed id becomes the
//            eot token, so llama.cpp's end-of-generation set holds both (it also adds <|im_end|>
//            and <|endoftext|> by their text).
// A folder without tokenizer.json (test models) gets a placeholder vocabulary of the model's
// size: the 256 byte tokens of byte-level BPE (so llama.cpp's loader finds every byte, the newline
// included), then "[PAD<id>]". Token ids mean the same; text does not.
// The model folder is checked as training and chat check it before loading (every tensor
// config.json implies, with its shape: checkpoint_shapes.hpp; tensors it does not imply are
// warned about and left out), and every tensor is checked finite as it is read: a broken base
// would otherwise give a GGUF that llama.cpp refuses or that answers garbage. The file is written
// atomically, so a refusal leaves nothing.
#pragma once
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "peft/core/finite.hpp"
#include "peft/io/checkpoint_shapes.hpp"
#include "peft/io/generation_defaults.hpp"
#include "peft/io/gguf_writer.hpp"
#include "peft/io/json_file.hpp"
#include "peft/io/model_config.hpp"
#include "peft/io/quantised_checkpoint.hpp"
#include "peft/io/safetensors.hpp"

namespace peft::gguf {

// llama.cpp's token types (llama_token_type).
enum TokenType : std::int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct Vocabulary {
  std::vector<std::string> tokens, merges;
  std::vector<std::int32_t> types;
  bool placeholder = false;
};

struct Qwen2GgufSummary {
  std::size_t tensors = 0;
  std::vector<std::string> f16_fallbacks;  // matrices that could not be q8_0
  bool placeholder_vocab = false;
  std::optional<std::int32_t> eos, eot;
  std::vector<std::int32_t> stops_left_out;  // generation_config eos ids beyond the two GGUF keys (eos, eot)
  bool chat_template = false;  // tokenizer.chat_template written
};

namespace detail {

// GPT-2's byte-level alphabet: printable bytes stand for themselves, the others map to U+0100
// upwards in byte order (the table every byte-level BPE vocabulary is written in).
inline std::vector<std::string> byte_level_alphabet() {
  std::vector<std::string> out(256);
  auto printable = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; };
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const int cp = printable(b) ? b : next++;
    std::string s;
    if (cp < 0x80) s += static_cast<char>(cp);
    else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    out[b] = s;
  }
  return out;
}

inline Vocabulary placeholder_vocabulary(std::int64_t vocab_size) {
  Vocabulary v;
  const auto bytes = byte_level_alphabet();
  for (std::int64_t i = 0; i < vocab_size; ++i) {
    v.tokens.push_back(i < 256 ? bytes[i] : fmt::format("[PAD{}]", i));
    v.types.push_back(kNormal);
  }
  v.placeholder = true;
  return v;
}

inline Vocabulary read_vocabulary(const std::filesystem::path& tokenizer_json, std::int64_t vocab_size) {
  const std::string file = tokenizer_json.string();
  const nlohmann::json j = read_json_file(tokenizer_json);
  const auto* model = find_field(j, "model");
  require(model && model->is_object() && find_field(*model, "vocab") && find_field(*model, "merges"),
          "{}: no model.vocab and model.merges (a byte-level BPE tokenizer is expected)", file);
  Vocabulary v;
  v.tokens.assign(static_cast<std::size_t>(vocab_size), "");
  v.types.assign(static_cast<std::size_t>(vocab_size), kUnused);
  auto place = [&](std::int64_t id, const std::string& text, std::int32_t type) {
    require(id >= 0 && id < vocab_size, "{}: token '{}' has id {}, outside the model's vocab_size {}", file, text, id,
            vocab_size);
    v.tokens[static_cast<std::size_t>(id)] = text;
    v.types[static_cast<std::size_t>(id)] = type;
  };
  for (const auto& [text, id] : find_field(*model, "vocab")->items())
    place(json_value_as<std::int64_t>(id, file, "model.vocab"), text, kNormal);
  if (const auto* added = find_field(j, "added_tokens"))
    for (const auto& t : *added) {
      const bool special = find_field(t, "special") && t["special"].get<bool>();
      place(json_value_as<std::int64_t>(t["id"], file, "added_tokens.id"),
            json_value_as<std::string>(t["content"], file, "added_tokens.content"), special ? kControl : kUserDefined);
    }
  for (std::int64_t i = 0; i < vocab_size; ++i)
    if (v.types[static_cast<std::size_t>(i)] == kUnused) v.tokens[static_cast<std::size_t>(i)] = fmt::format("[PAD{}]", i);
  for (const auto& m : *find_field(*model, "merges")) {  // "a b" (older files) or ["a", "b"]
    if (m.is_string()) v.merges.push_back(m.get<std::string>());
    else {
      require(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
              "{}: a merge is neither \"a b\" nor [\"a\", \"b\"]", file);
      v.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    }
  }
  return v;
}

// A special token of tokenizer_config.json ("eos_token": "<|im_end|>" or {"content": ...}) as an id.
inline std::optional<std::int32_t> special_token_id(const nlohmann::json& cfg, const char* key, const Vocabulary& v) {
  const auto* f = find_field(cfg, key);
  if (!f || f->is_null()) return std::nullopt;
  const std::string text = f->is_object() ? f->value("content", "") : (f->is_string() ? f->get<std::string>() : "");
  for (std::size_t i = 0; i < v.tokens.size(); ++i)
    if (v.tokens[i] == text) return static_cast<std::int32_t>(i);
  return std::nullopt;
}

inline std::string gguf_tensor_name(const std::string& hf) {
  static const std::vector<std::pair<std::string, std::string>> layer_parts = {
      {"input_layernorm", "attn_norm"}, {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},   {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
      {"mlp.gate_proj", "ffn_gate"},    {"mlp.up_proj", "ffn_up"},       {"mlp.down_proj", "ffn_down"}};
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  if (hf.starts_with(prefix)) {
    const auto dot = hf.find('.', prefix.size());
    const std::string layer = hf.substr(prefix.size(), dot - prefix.size());
    const std::string rest = hf.substr(dot + 1);  // "self_attn.q_proj.weight"
    for (const auto& [from, to] : layer_parts)
      if (rest == from + ".weight" || rest == from + ".bias")
        return fmt::format("blk.{}.{}{}", layer, to, rest.substr(from.size()));
  }
  return "";
}

// The model's chat template, where transformers keeps it: chat_template.jinja beside the tokenizer
// (what transformers >= 4.50 saves, and what it loads in preference to the config's), else
// tokenizer_config.json's "chat_template": a string, or a list of named templates of which llama.cpp
// and Ollama would want the "default" one.
inline std::optional<std::string> chat_template(const std::filesystem::path& model_dir, const nlohmann::json& tok_cfg) {
  const std::filesystem::path jinja = model_dir / "chat_template.jinja";
  if (std::filesystem::exists(jinja)) return read_text_file(jinja);
  const auto* t = find_field(tok_cfg, "chat_template");
  if (t && t->is_string()) return t->get<std::string>();
  if (t && t->is_array())
    for (const auto& named : *t)
      if (named.is_object() && named.value("name", "") == "default" && named.contains("template") &&
          named["template"].is_string())
        return named["template"].get<std::string>();
  return std::nullopt;
}

}  // namespace detail

// Writes `model_dir` as the GGUF file `out` (atomically); `type` is the matrices' type, `name` general.name.
inline Qwen2GgufSummary write_qwen2_gguf(const std::filesystem::path& model_dir, const std::filesystem::path& out,
                                         TensorType type, const std::string& name) {
  namespace fs = std::filesystem;
  const ModelConfig cfg = ModelConfig::from_file(model_dir / "config.json");
  require(cfg.model_type == "qwen2", "{}: model_type '{}'; GGUF export writes Qwen2 models only",
          (model_dir / "config.json").string(), cfg.model_type);
  const SafetensorsModel st = SafetensorsModel::open(model_dir);
  reject_quantised_tensors(st.names(), model_dir.string());
  check_config_matches_checkpoint(cfg, st, model_dir / "config.json");
  Qwen2GgufSummary summary;
  GgufWriter w;
  const std::uint32_t file_type = type == TensorType::F32 ? 0 : type == TensorType::F16 ? 1 : type == TensorType::Q8_0 ? 7 : 32;
  w.set_string("general.architecture", "qwen2");
  w.set_string("general.type", "model");
  w.set_string("general.name", name);
  w.set_u32("general.file_type", file_type);
  if (type == TensorType::Q8_0) w.set_u32("general.quantization_version", 2);
  const std::int64_t head_dim = cfg.head_dim > 0 ? cfg.head_dim : cfg.hidden_size / cfg.num_attention_heads;
  w.set_u32("qwen2.block_count", static_cast<std::uint32_t>(cfg.num_hidden_layers));
  w.set_u32("qwen2.context_length", static_cast<std::uint32_t>(cfg.max_position_embeddings));
  w.set_u32("qwen2.embedding_length", static_cast<std::uint32_t>(cfg.hidden_size));
  w.set_u32("qwen2.feed_forward_length", static_cast<std::uint32_t>(cfg.intermediate_size));
  w.set_u32("qwen2.attention.head_count", static_cast<std::uint32_t>(cfg.num_attention_heads));
  w.set_u32("qwen2.attention.head_count_kv", static_cast<std::uint32_t>(cfg.num_key_value_heads));
  w.set_u32("qwen2.attention.key_length", static_cast<std::uint32_t>(head_dim));
  w.set_u32("qwen2.attention.value_length", static_cast<std::uint32_t>(head_dim));
  w.set_f32("qwen2.rope.freq_base", static_cast<float>(cfg.rope_theta));
  w.set_f32("qwen2.attention.layer_norm_rms_epsilon", static_cast<float>(cfg.rms_norm_eps));

  const fs::path tok_json = model_dir / "tokenizer.json";
  const Vocabulary vocab = fs::exists(tok_json) ? detail::read_vocabulary(tok_json, cfg.vocab_size)
                                                : detail::placeholder_vocabulary(cfg.vocab_size);
  summary.placeholder_vocab = vocab.placeholder;
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "qwen2");
  w.set_strings("tokenizer.ggml.tokens", vocab.tokens);
  w.set_i32s("tokenizer.ggml.token_type", vocab.types);
  w.set_strings("tokenizer.ggml.merges", vocab.merges);
  const fs::path tok_cfg_path = model_dir / "tokenizer_config.json";
  const nlohmann::json tok_cfg = fs::exists(tok_cfg_path) ? read_json_file(tok_cfg_path) : nlohmann::json::object();
  const nlohmann::json model_cfg = read_json_file(model_dir / "config.json");
  const GenerationDefaults gen = GenerationDefaults::from_model_dir(model_dir);
  std::optional<std::int32_t> bos = detail::special_token_id(tok_cfg, "bos_token", vocab);
  if (!bos && find_field(model_cfg, "bos_token_id") && model_cfg["bos_token_id"].is_number_integer())
    bos = model_cfg["bos_token_id"].get<std::int32_t>();
  summary.eos = detail::special_token_id(tok_cfg, "eos_token", vocab);
  if (!summary.eos && !gen.eos_token_ids.empty()) summary.eos = gen.eos_token_ids.front();
  for (const auto id : gen.eos_token_ids) {
    if (id == summary.eos || id == summary.eot) continue;
    if (!summary.eot) summary.eot = id;
    else summary.stops_left_out.push_back(id);
  }
  const auto pad = detail::special_token_id(tok_cfg, "pad_token", vocab);
  for (const auto& [key, id] : {std::pair{"bos", bos}, std::pair{"eos", summary.eos}, std::pair{"eot", summary.eot},
                                std::pair{"padding", pad}})
    if (id) {
      require(*id >= 0 && *id < cfg.vocab_size, "{}: the {} token id {} is outside vocab_size {}", model_dir.string(),
              key, *id, cfg.vocab_size);
      w.set_u32(fmt::format("tokenizer.ggml.{}_token_id", key), static_cast<std::uint32_t>(*id));
    }
  w.set_bool("tokenizer.ggml.add_bos_token", false);  // Qwen2 prompts start with <|im_start|>, no bos
  if (const auto t = detail::chat_template(model_dir, tok_cfg)) {
    w.set_string("tokenizer.chat_template", *t);
    summary.chat_template = true;
  }

  // The tensors config.json implies (lm_head is absent with tied embeddings: llama.cpp reuses token_embd).
  for_each_expected_qwen2_tensor(cfg, [&](const ExpectedTensor& e) {
    const std::string hf = e.name, g = detail::gguf_tensor_name(hf);
    TensorType t = e.shape.size() == 1 ? TensorType::F32 : type;
    if (t == TensorType::Q8_0 && e.shape.back() % kQ8_0BlockValues != 0) {
      t = TensorType::F16;
      summary.f16_fallbacks.push_back(g);
    }
    w.add_tensor(g, e.shape, t, [&st, hf, shape = e.shape](std::span<float> v) {
      st.read_f32(hf, shape, v.data());
      require_finite(v, fmt::format("{}: tensor '{}'", st.file_of(hf).path().string(), hf), kBrokenBaseCheckpoint);
    });
  });
  summary.tensors = w.tensor_count();
  w.write(out);
  return summary;
}

}  // namespace peft::gguf
