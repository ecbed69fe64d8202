// `export --check true`: the one question a user has after exporting — does the deployed model
// answer as the adapter did? The held-out identity questions are answered greedily by each form:
//   unmerged  the base model with the adapter applied (what training evaluated),
//   merged    the merged HF folder, loaded as a plain model,
//   gguf      the exported GGUF in llama.cpp (node-llama-cpp, tools/llama_check/greedy.mjs), with
//             the chat template stored in the GGUF rendering the prompt,
// and every difference is printed: the prompt tokens, the first differing answer token, and the
// largest gap between our log-softmax and llama.cpp's over its 5 most likely first tokens. Where
// llama.cpp's greedy answer parts from ours, our answer is scored in llama.cpp token by token: if
// each of our tokens is within the GGUF type's tolerance of llama.cpp's own best choice, the two
// parted at a near-tie that rounded weights flip (said so), else they differ. Our
// forms run in fp32, or in bf16 when the GGUF is bf16, so the GGUF meets the arithmetic it stores.
// llama.cpp is skipped (with a note) where node-llama-cpp is not installed, and where the GGUF has no
// chat template (a model folder without tokenizer_config.json): the check is of what a client does, and
// a client has no prompt format to use then (export warns when it writes such a GGUF).
#pragma once
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include <fmt/format.h>

#include "model_source.hpp"
#include "stop_request.hpp"
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
  std::optional<std::int32_t> stop_id;                    // the stop token the answer ended at
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
    const Generation r = gen.generate(p, g, [](std::int32_t) { stop_if_signalled(); });
    for (auto id : r.tokens)
      if (std::find(stop_ids.begin(), stop_ids.end(), id) == stop_ids.end())
        a.tokens.push_back(id);
      else
        a.stop_id = id;
    out.push_back(std::move(a));
  }
  return out;
}

// The tokens a form is scored on: its answer, and the stop token it ended at.
inline std::vector<std::int32_t> answer_and_stop(const FormAnswer& a) {
  std::vector<std::int32_t> t = a.tokens;
  if (a.stop_id) t.push_back(*a.stop_id);
  return t;
}

// Two greedy decoders that part at a near-tie answer differently from there on, so where one
// form's answer differs from another's, the first's answer is scored in the second token by
// token (teacher forcing): the largest gap, over every position, between the second's best
// log-probability and that of the first's token (0: the second would have chosen each of them).
struct ForcedGap {
  double gap = 0;
  std::size_t at = 0;
  void take(double g, std::size_t p) {
    if (g > gap) *this = {g, p};
  }
};

// `answer` scored in our model.
template <class Model>
ForcedGap forced_gap(Model& model, const FormAnswer& answer) {
  const std::vector<std::int32_t> forced = answer_and_stop(answer);
  std::vector<std::int32_t> ids = answer.prompt;
  ids.insert(ids.end(), forced.begin(), forced.end());
  auto cache = model.make_kv_cache();
  const Matrix logits = model.forward_cached(ids, cache, true);
  ForcedGap g;
  for (std::size_t p = 0; p < forced.size(); ++p) {
    const auto row = logits.row(static_cast<Eigen::Index>(answer.prompt.size() - 1 + p));
    g.take(static_cast<double>(row.maxCoeff()) - static_cast<double>(row(forced[p])), p);
  }
  return g;
}

// Runs tools/llama_check/greedy.mjs on `request`; nullopt (and a note) where node-llama-cpp is not
// installed. The request and answer files live beside the GGUF and are removed.
inline std::optional<nlohmann::json> run_llama_cpp(const std::filesystem::path& gguf, const nlohmann::json& request) {
  namespace fs = std::filesystem;
  const fs::path dir = llama_check_dir();
  if (!fs::exists(dir / "node_modules" / "node-llama-cpp") || std::system("node --version > /dev/null 2>&1") != 0) {
    fmt::print("[check] gguf: not checked in llama.cpp: node or {} is missing (run tools/install_deps.sh)\n",
               (dir / "node_modules" / "node-llama-cpp").string());
    return std::nullopt;
  }
  const fs::path req = gguf.parent_path() / (".check-requests-" + peft::detail::unique_suffix() + ".json");
  const fs::path res = fs::path(req).replace_extension(".out"), err = fs::path(req).replace_extension(".err");
  std::ofstream(req) << request.dump();
  const std::string cmd = fmt::format("node '{}' '{}' '{}' > '{}' 2> '{}'", (dir / "greedy.mjs").string(),
                                      gguf.string(), req.string(), res.string(), err.string());
  const int rc = std::system(cmd.c_str());
  std::error_code ignored;
  fs::remove(req, ignored);
  if (stop_signal() != 0)
    for (const auto& p : {res, err}) fs::remove(p, ignored);
  stop_if_signalled();  // a SIGTERM that reached node too is a stop, not llama.cpp failing
  if (rc != 0) {  // node's first "Error: ..." line says why; its stack trace is of no use to a user
    std::ifstream in(err);
    std::string line, why;
    while (std::getline(in, line))
      if (why.empty() && !line.empty()) why = line;
      else if (line.starts_with("Error")) { why = line; break; }
    for (const auto& p : {res, err}) fs::remove(p, ignored);
    fail("llama.cpp could not run {}: {} (exit status {} of greedy.mjs)", gguf.string(), why.empty() ? "no message" : why,
         rc);
  }
  fs::remove(err, ignored);
  nlohmann::json j = read_json_file(res);
  fs::remove(res, ignored);
  return j;
}

// llama.cpp's answers; nullopt where it is not installed. The ids of `stop_ids` llama.cpp does
// not end generation at are appended to `not_eog`.
inline std::optional<std::vector<FormAnswer>> answer_in_llama_cpp(const std::filesystem::path& gguf,
                                                                  const nlohmann::json& messages_per_case,
                                                                  std::int64_t max_new_tokens,
                                                                  const std::vector<std::int32_t>& stop_ids,
                                                                  std::vector<std::int32_t>& not_eog) {
  nlohmann::json r{{"max_tokens", max_new_tokens}, {"top_logprobs", 5}, {"eog_probe", stop_ids},
                   {"cases", nlohmann::json::array()}};
  for (const auto& m : messages_per_case) r["cases"].push_back({{"messages", m}});
  const auto j = run_llama_cpp(gguf, r);
  if (!j) return std::nullopt;
  const auto eog = j->at("eog").get<std::vector<std::int32_t>>();
  for (auto id : stop_ids)
    if (std::find(eog.begin(), eog.end(), id) == eog.end()) not_eog.push_back(id);
  std::vector<FormAnswer> out;
  for (const auto& c : j->at("cases")) {
    FormAnswer a;
    a.prompt = c.at("prompt").get<std::vector<std::int32_t>>();
    a.tokens = c.at("tokens").get<std::vector<std::int32_t>>();
    if (const auto& st = c.value("stop_token", nlohmann::json()); st.is_number_integer())
      a.stop_id = st.get<std::int32_t>();
    for (const auto& lp : c.at("logprobs")) a.logprobs.emplace_back(lp[0].get<std::int32_t>(), lp[1].get<double>());
    out.push_back(std::move(a));
  }
  return out;
}

// `answer` scored in llama.cpp.
inline ForcedGap forced_gap_in_llama_cpp(const std::filesystem::path& gguf, const FormAnswer& answer) {
  const nlohmann::json r{{"max_tokens", 0}, {"top_logprobs", 0},
                         {"cases", {{{"tokens", answer.prompt}, {"forced", answer_and_stop(answer)}}}}};
  ForcedGap g;
  const auto j = run_llama_cpp(gguf, r);
  if (!j) return g;
  const auto& scores = j->at("cases").at(0).at("scores");
  for (std::size_t p = 0; p < scores.size(); ++p) g.take(scores[p][1].get<double>() - scores[p][2].get<double>(), p);
  return g;
}

inline std::string ended_at(const std::optional<std::int32_t>& stop) {
  return stop ? fmt::format("end at stop token {}", *stop) : std::string("run on to the token limit");
}

inline std::string first_difference(const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b) {
  std::size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  if (i == a.size() && i == b.size()) return "";
  auto at = [&](const std::vector<std::int32_t>& v) { return i < v.size() ? std::to_string(v[i]) : "(end)"; };
  return fmt::format("token {}: {} vs {}", i, at(a), at(b));
}

template <class P>
// logprob_tolerance: the GGUF type's (llama.cpp against our merged model); ours_tolerance: our
// unmerged against our merged model, both in P (fp32: summation order only; bf16: the merge's
// rounding of W + s B A).
bool check_forms(const ExportForms& f, std::int64_t max_new_tokens, double logprob_tolerance, double ours_tolerance) {
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
  if (!f.gguf.empty() && !gguf::GgufFile::open(f.gguf).contains("tokenizer.chat_template"))
    fmt::print("[check] gguf: not checked in llama.cpp: {} holds no tokenizer.chat_template (the model folder has no "
               "chat_template.jinja and no chat_template in tokenizer_config.json), so llama.cpp cannot build "
               "the prompts a client sends\n",
               f.gguf.string());
  else if (!f.gguf.empty())
    gguf = answer_in_llama_cpp(f.gguf, messages, max_new_tokens, stops, not_eog);

  bool same = true;
  double worst_logprob_gap = 0;
  std::size_t tied_answers = 0;
  for (std::size_t i = 0; i < questions.size(); ++i) {
    std::vector<std::string> diffs, ties;
    // A parting is a near-tie when the scored answer stays within the tolerance everywhere.
    auto parting = [&](const std::string& forms, const std::string& d, const ForcedGap& g, double tol) {
      if (g.gap > tol)
        diffs.push_back(fmt::format("{} at {}; scored token by token, token {} is {:.2e} below the best choice "
                                    "(BEYOND the tolerance {:.0e})", forms, d, g.at, g.gap, tol));
      else
        ties.push_back(fmt::format("{} part at a near-tie, {}: every answer token is the other's greedy choice "
                                   "within {:.2e}", forms, d, g.gap));
    };
    // The same tokens, then one form ends and the other runs on (or ends at another stop token).
    auto ended_apart = [&](const char* x_name, const FormAnswer& x, const char* y_name, const FormAnswer& y) {
      if (x.stop_id != y.stop_id)
        diffs.push_back(fmt::format("after the same {} tokens {} {} and {} {}", x.tokens.size(), x_name,
                                    ended_at(x.stop_id), y_name, ended_at(y.stop_id)));
    };
    if (unmerged) {
      if (const auto d = first_difference((*unmerged)[i].tokens, merged[i].tokens); !d.empty())
        parting("unmerged vs merged", d, forced_gap(*merged_model, (*unmerged)[i]), ours_tolerance);
      else
        ended_apart("unmerged", (*unmerged)[i], "merged", merged[i]);
    }
    if (gguf) {
      const FormAnswer& g = (*gguf)[i];
      if (g.prompt != merged[i].prompt)
        diffs.push_back("the prompt tokens differ (llama.cpp's template or tokenizer) at " +
                        first_difference(merged[i].prompt, g.prompt));
      else if (const auto d = first_difference(merged[i].tokens, g.tokens); !d.empty())
        parting("merged vs gguf", d, forced_gap_in_llama_cpp(f.gguf, merged[i]), logprob_tolerance);
      else
        ended_apart("ours", merged[i], "llama.cpp", g);
      for (const auto& [id, lp] : g.logprobs)
        worst_logprob_gap = std::max(worst_logprob_gap, std::fabs(lp - merged[i].first_logsoftmax[id]));
    }
    const std::string forms = fmt::format("{}merged{}", unmerged ? "unmerged, " : "", gguf ? ", gguf" : "");
    // Where the answers agree to the end, how they ended: at a stop token (llama.cpp's too where it
    // ran) or at --check_max_new_tokens.
    const std::string ending = merged[i].stop_id ? fmt::format(", then stop token {}{}", *merged[i].stop_id,
                                                               gguf ? " in each" : "")
                                                 : ", no stop within the limit";
    if (diffs.empty())
      fmt::print("[check] {} {}: {} agree ({} tokens{}{}{})\n", i + 1, questions[i], forms, merged[i].tokens.size(),
                 ties.empty() ? ending : "", ties.empty() ? "" : "; ", fmt::join(ties, "; "));
    else
      fmt::print("[check] {} {}: DIFFERENT: {}\n", i + 1, questions[i], fmt::join(diffs, "; "));
    same = same && diffs.empty();
    tied_answers += diffs.empty() && !ties.empty();
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
  if (!same)
    fmt::print("[check] the forms differ (see above)\n");
  else if (tied_answers > 0)
    fmt::print("[check] all forms agree (up to near-ties of the tolerance {:.0e} in {} of {} answers, see above)\n",
               logprob_tolerance, tied_answers, questions.size());
  else
    fmt::print("[check] all forms agree\n");
  return same;
}

}  // namespace detail

// The log-softmax tolerance per GGUF type: f32 differs from our fp32 only in summation order; f16
// and bf16 round every weight (bf16 is checked against our bf16 model, which rounds the same
// weights but not llama.cpp's bf16 activations); q8_0 keeps 8 bits per weight. Our bf16 model's
// logits are bf16, as HF's, so its gaps come in bf16 steps of the logit: 1/16 between 8 and 16, 1/8
// between 16 and 32. bf16's tolerance is two steps of a logit below 16 (one of 16-32): a near-tie
// parted by one step at a logit of 8-16 (6.25e-2, seen on an AMD EPYC on 2026-12-07) is a near-tie.
inline double logprob_tolerance(gguf::TensorType t) {
  switch (t) {
    case gguf::TensorType::F32: return 1e-3;
    case gguf::TensorType::F16: return 2e-2;
    case gguf::TensorType::BF16: return 1.25e-1;
    case gguf::TensorType::Q8_0: return 1e-1;
  }
  return 0;
}

// bf16 GGUFs are answered by our bf16 model, the others by fp32.
inline bool check_export_forms(const ExportForms& f, std::int64_t max_new_tokens, gguf::TensorType type) {
  const double tol = logprob_tolerance(type);
  const double bf16_tol = logprob_tolerance(gguf::TensorType::BF16), f32_tol = logprob_tolerance(gguf::TensorType::F32);
  return type == gguf::TensorType::BF16 ? detail::check_forms<Bf16Mixed>(f, max_new_tokens, tol, bf16_tol)
                                        : detail::check_forms<Fp32>(f, max_new_tokens, tol, f32_tol);
}

}  // namespace peft::examples
