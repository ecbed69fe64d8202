// `export --check true`: the one question a user has after exporting — does the deployed model
// answer as the adapter did? The held-out identity questions are answered greedily by each form:
//   unmerged  the base model with the adapter applied (what training evaluated),
//   merged    the merged HF folder, loaded as a plain model,
//   gguf      the exported GGUF in llama.cpp (node-llama-cpp, tools/llama_check/greedy.mjs), with
//             the chat template stored in the GGUF rendering the prompt,
// and every difference is printed: the prompt tokens, the first differing answer token, and the
// largest gap between our log-softmax and llama.cpp's over its 5 most likely first tokens. Our
// forms run in fp32, or in bf16 when the GGUF is bf16, so the GGUF meets the arithmetic it stores.
// llama.cpp is skipped (with a note) where node-llama-cpp is not installed.
#pragma once
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include <fmt/format.h>

#include "model_source.hpp"
#include "peft/data/chat_template.hpp"
#include "peft/data/dataset_file.hpp"
#include "peft/generate/generator.hpp"
#include "peft/io/gguf_reader.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/models/qwen2.hpp"
#include "peft/text/tokenizer.hpp"
#include "../sft/embedded_default.hpp"

namespace peft::examples {

struct ExportForms {
  std::filesystem::path base;
  std::string adapters;
  std::filesystem::path merged, gguf;  // gguf empty: not exported
  ModelSource source;
};

// Where greedy.mjs and its node_modules live: $PEFT_LLAMA_CHECK, else the source tree's copy.
inline std::filesystem::path llama_check_dir() {
  if (const char* env = std::getenv("PEFT_LLAMA_CHECK")) return env;
  return PEFT_LLAMA_CHECK_DIR;
}

struct FormAnswer {
  std::vector<std::int32_t> prompt, tokens;
  std::vector<std::pair<std::int32_t, double>> logprobs;  // llama.cpp's top first tokens
  std::vector<double> first_logsoftmax;                   // ours, over the whole vocabulary
};

namespace detail {

template <class Model>
std::vector<FormAnswer> answer_greedy(Model& model, const std::vector<std::vector<std::int32_t>>& prompts,
                                      const std::vector<std::int32_t>& stop_ids, std::int64_t max_new_tokens) {
  std::vector<FormAnswer> out;
  for (const auto& p : prompts) {
    FormAnswer a;
    a.prompt = p;
    auto cache = model.make_kv_cache();
    const Matrix logits = model.forward_cached(p, cache);
    const double mx = logits.maxCoeff();
    const double lse = mx + std::log((logits.array() - static_cast<float>(mx)).exp().template cast<double>().sum());
    for (Eigen::Index i = 0; i < logits.cols(); ++i) a.first_logsoftmax.push_back(logits(0, i) - lse);
    Generator<Model> gen(model);
    GenerationConfig g;
    g.sampling.temperature = 0;
    g.max_new_tokens = max_new_tokens;
    g.stop_ids = stop_ids;
    const Generation r = gen.generate(p, g, [](std::int32_t) {});
    for (auto id : r.tokens)
      if (std::find(stop_ids.begin(), stop_ids.end(), id) == stop_ids.end()) a.tokens.push_back(id);
    out.push_back(std::move(a));
  }
  return out;
}

// llama.cpp's answers through the node script; nullopt (and a note) where it is not installed.
// The ids of `stop_ids` llama.cpp does not end generation at are appended to `not_eog`.
inline std::optional<std::vector<FormAnswer>> answer_in_llama_cpp(const std::filesystem::path& gguf,
                                                                  const nlohmann::json& messages_per_case,
                                                                  std::int64_t max_new_tokens,
                                                                  const std::vector<std::int32_t>& stop_ids,
                                                                  std::vector<std::int32_t>& not_eog) {
  namespace fs = std::filesystem;
  const fs::path dir = llama_check_dir();
  if (!fs::exists(dir / "node_modules" / "node-llama-cpp") || std::system("node --version > /dev/null 2>&1") != 0) {
    fmt::print("[check] gguf: not checked in llama.cpp: node or {} is missing (run tools/install_deps.sh)\n",
               (dir / "node_modules" / "node-llama-cpp").string());
    return std::nullopt;
  }
  const fs::path req = gguf.parent_path() / (".check-requests-" + peft::detail::unique_suffix() + ".json");
  const fs::path res = fs::path(req).replace_extension(".out");
  nlohmann::json r{{"max_tokens", max_new_tokens}, {"top_logprobs", 5}, {"eog_probe", stop_ids},
                   {"cases", nlohmann::json::array()}};
  for (const auto& m : messages_per_case) r["cases"].push_back({{"messages", m}});
  std::ofstream(req) << r.dump();
  const std::string cmd = fmt::format("node '{}' '{}' '{}' > '{}'", (dir / "greedy.mjs").string(), gguf.string(),
                                      req.string(), res.string());
  const int rc = std::system(cmd.c_str());
  std::error_code ignored;
  fs::remove(req, ignored);
  if (rc != 0) {
    fs::remove(res, ignored);
    fail("llama.cpp could not run {} (exit status {} of: {})", gguf.string(), rc, cmd);
  }
  const nlohmann::json j = read_json_file(res);
  fs::remove(res, ignored);
  const auto eog = j.at("eog").get<std::vector<std::int32_t>>();
  for (auto id : stop_ids)
    if (std::find(eog.begin(), eog.end(), id) == eog.end()) not_eog.push_back(id);
  std::vector<FormAnswer> out;
  for (const auto& c : j.at("cases")) {
    FormAnswer a;
    a.prompt = c.at("prompt").get<std::vector<std::int32_t>>();
    a.tokens = c.at("tokens").get<std::vector<std::int32_t>>();
    for (const auto& lp : c.at("logprobs")) a.logprobs.emplace_back(lp[0].get<std::int32_t>(), lp[1].get<double>());
    out.push_back(std::move(a));
  }
  return out;
}

inline std::string first_difference(const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b) {
  std::size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  if (i == a.size() && i == b.size()) return "";
  auto at = [&](const std::vector<std::int32_t>& v) { return i < v.size() ? std::to_string(v[i]) : "(end)"; };
  return fmt::format("token {}: {} vs {}", i, at(a), at(b));
}

template <class P>
bool check_forms(const ExportForms& f, std::int64_t max_new_tokens, double logprob_tolerance) {
  namespace fs = std::filesystem;
  const fs::path tok_path = f.merged / "tokenizer.json";
  require(fs::exists(tok_path), "--check: {} is missing; the identity questions need the model's tokenizer",
          tok_path.string());
  const text::Tokenizer tok = text::Tokenizer::from_file(tok_path);
  const std::string system = f.source.system.value_or(std::string(data::kQwen25DefaultSystem));
  std::vector<std::string> questions;
  for (const auto& row : data::read_dataset_file(default_identity_questions(), ModelConfig::from_file(f.merged / "config.json").vocab_size))
    for (const auto& m : row.messages)
      if (m.role == data::Role::User) questions.push_back(m.content);
  std::vector<std::vector<std::int32_t>> prompts;
  nlohmann::json messages = nlohmann::json::array();
  for (const auto& q : questions) {
    const std::vector<data::ChatMessage> h{{data::Role::User, q}};
    prompts.push_back(data::encode_prompt(tok, h, system));
    messages.push_back({{{"role", "system"}, {"content", system}}, {{"role", "user"}, {"content", q}}});
  }
  std::vector<std::int32_t> stops = GenerationDefaults::from_model_dir(f.merged).eos_token_ids;
  for (const char* s : {"<|im_end|>", "<|endoftext|>"})
    if (const auto id = tok.token_to_id(s)) stops.push_back(*id);

  std::optional<std::vector<FormAnswer>> unmerged;
  if (!f.adapters.empty()) {
    LoraConfig lora = read_adapter_config(f.adapters);
    lora.lora_dropout = 0;
    auto m = Qwen2<Lora<>, P, Cpu>::from_pretrained(f.base, lora, 0);
    load_adapter_weights(f.adapters, m->trainable_parameters());
    unmerged = answer_greedy(*m, prompts, stops, max_new_tokens);
  }
  const LoraConfig no_adapter;
  auto merged_model = Qwen2<Frozen, P, Cpu>::from_pretrained(f.merged, no_adapter, 0);
  const auto merged = answer_greedy(*merged_model, prompts, stops, max_new_tokens);
  std::optional<std::vector<FormAnswer>> gguf;
  std::vector<std::int32_t> not_eog;
  if (!f.gguf.empty()) gguf = answer_in_llama_cpp(f.gguf, messages, max_new_tokens, stops, not_eog);

  bool same = true;
  double worst_logprob_gap = 0;
  for (std::size_t i = 0; i < questions.size(); ++i) {
    std::vector<std::string> diffs;
    if (unmerged) {
      const auto d = first_difference((*unmerged)[i].tokens, merged[i].tokens);
      if (!d.empty()) diffs.push_back("unmerged vs merged at " + d);
    }
    if (gguf) {
      const FormAnswer& g = (*gguf)[i];
      if (g.prompt != merged[i].prompt)
        diffs.push_back("the prompt tokens differ (llama.cpp's template or tokenizer) at " +
                        first_difference(merged[i].prompt, g.prompt));
      else if (const auto d = first_difference(merged[i].tokens, g.tokens); !d.empty())
        diffs.push_back("merged vs gguf at " + d);
      for (const auto& [id, lp] : g.logprobs)
        worst_logprob_gap = std::max(worst_logprob_gap, std::fabs(lp - merged[i].first_logsoftmax[id]));
    }
    const std::string forms = fmt::format("{}merged{}", unmerged ? "unmerged, " : "", gguf ? ", gguf" : "");
    if (diffs.empty())
      fmt::print("[check] {} {}: {} agree ({} tokens)\n", i + 1, questions[i], forms, merged[i].tokens.size());
    else
      fmt::print("[check] {} {}: DIFFERENT: {}\n", i + 1, questions[i], fmt::join(diffs, "; "));
    same = same && diffs.empty();
  }
  if (gguf) {
    if (not_eog.empty())
      fmt::print("[check] llama.cpp ends generation at every token we stop at ({})\n", fmt::join(stops, ", "));
    else
      fmt::print("[check] DIFFERENT: llama.cpp does not end generation at {} (we stop there)\n", fmt::join(not_eog, ", "));
    same = same && not_eog.empty();
    const bool close = worst_logprob_gap <= logprob_tolerance;
    fmt::print("[check] llama.cpp vs merged: largest |log-softmax gap| over llama.cpp's top 5 first tokens: {:.2e} "
               "({} the tolerance {:.0e} for this GGUF type)\n", worst_logprob_gap, close ? "within" : "BEYOND",
               logprob_tolerance);
    same = same && close;
  }
  fmt::print("[check] {}\n", same ? "all forms agree" : "the forms differ (see above)");
  return same;
}

}  // namespace detail

// The log-softmax tolerance per GGUF type: f32 differs from our fp32 only in summation order; f16
// and bf16 round every weight (bf16 is checked against our bf16 model, which rounds the same
// weights but not llama.cpp's bf16 activations); q8_0 keeps 8 bits per weight.
inline double logprob_tolerance(gguf::TensorType t) {
  switch (t) {
    case gguf::TensorType::F32: return 1e-3;
    case gguf::TensorType::F16: return 2e-2;
    case gguf::TensorType::BF16: return 5e-2;
    case gguf::TensorType::Q8_0: return 1e-1;
  }
  return 0;
}

// bf16 GGUFs are answered by our bf16 model, the others by fp32.
inline bool check_export_forms(const ExportForms& f, std::int64_t max_new_tokens, gguf::TensorType type) {
  const double tol = logprob_tolerance(type);
  return type == gguf::TensorType::BF16 ? detail::check_forms<Bf16Mixed>(f, max_new_tokens, tol)
                                        : detail::check_forms<Fp32>(f, max_new_tokens, tol);
}

}  // namespace peft::examples
