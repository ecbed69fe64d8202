// IdentityAccuracy: does the fine-tuned model say who it is? Held-out identity questions (e.g.
// assets/data/identity_eval.jsonl, rows {"query", "response"} whose reference response holds
// {{NAME}} and/or {{AUTHOR}}) are answered greedily; an answer is correct when it contains every
// identity the reference names, each in either its Chinese or its English spelling (a model that
// answers a Chinese question "I'm Xiao Pai" knows who it is). Logged as eval_identity_accuracy,
// the fraction of correct answers. The answers are generated once per evaluation by an
// IdentityProbe that other hooks (Repetition) share, so they cost one generation pass.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft/data/chat_template.hpp"
#include "peft/data/dataset_file.hpp"
#include "peft/data/self_cognition.hpp"
#include "peft/generate/greedy.hpp"

namespace peft {

struct IdentityQuestion {
  std::string question;
  std::vector<std::int32_t> prompt;
  std::vector<std::vector<std::string>> required;  // each group: accepted spellings of one identity
};

struct IdentityAnswer {
  std::string text;
  std::vector<std::int32_t> ids;  // without the stop token
  bool correct = false;
};

// Reads identity questions; names/authors as --model_name/--model_author give them ([both] or [zh, en]).
template <class Tok>
std::vector<IdentityQuestion> read_identity_questions(const std::filesystem::path& file, const Tok& tok,
                                                      std::int64_t vocab, const std::vector<std::string>& names,
                                                      const std::vector<std::string>& authors,
                                                      const std::string& system = {}) {
  require(!names.empty() || !authors.empty(),
          "{}: identity accuracy needs --model_name and/or --model_author to know what a correct answer says",
          file.string());
  std::vector<IdentityQuestion> out;
  for (const auto& row : data::read_dataset_file(file, vocab)) {
    require(row.is_text(), "{}: identity questions must be text rows, not token ids", file.string());
    IdentityQuestion q;
    std::vector<data::ChatMessage> chat;
    std::string reference;
    for (const auto& m : row.messages) {
      if (m.role == data::Role::Assistant) reference = m.content;
      else if (m.role == data::Role::User && q.question.empty()) q.question = m.content, chat.push_back(m);
    }
    require(!q.question.empty(), "{}: a row without a user question", file.string());
    auto needs = [&](const char* placeholder, const std::vector<std::string>& values) {
      if (reference.find(placeholder) != std::string::npos && !values.empty()) q.required.push_back(values);
    };
    needs("{{NAME}}", names);
    needs("{{AUTHOR}}", authors);
    if (q.required.empty()) continue;  // the reference names no configured identity: nothing to check
    q.prompt = system.empty() ? data::encode_prompt(tok, chat) : data::encode_prompt(tok, chat, system);
    out.push_back(std::move(q));
  }
  require(!out.empty(), "{}: no question whose reference response holds {{{{NAME}}}} or {{{{AUTHOR}}}}", file.string());
  return out;
}

// The rule: every identity the reference names appears, in one of its spellings.
inline bool names_identity(const std::string& answer, const std::vector<std::vector<std::string>>& required) {
  return std::all_of(required.begin(), required.end(), [&](const auto& spellings) {
    return std::any_of(spellings.begin(), spellings.end(),
                       [&](const std::string& s) { return answer.find(s) != std::string::npos; });
  });
}

// Generates the answers to the questions at most once per global step.
template <class Model>
struct IdentityProbe {
  Model* model = nullptr;
  std::vector<IdentityQuestion> questions;
  GreedyConfig generation;
  std::function<std::string(const std::vector<std::int32_t>&)> decode;

  const std::vector<IdentityAnswer>& answers(std::int64_t step) {
    if (step == cached_step_) return cached_;
    cached_.clear();
    for (const auto& q : questions) {
      IdentityAnswer a;
      a.ids = generate_greedy(*model, q.prompt, generation, [](std::int32_t) {});
      if (!a.ids.empty() && std::find(generation.stop_ids.begin(), generation.stop_ids.end(), a.ids.back()) !=
                                generation.stop_ids.end())
        a.ids.pop_back();
      a.text = decode(a.ids);
      a.correct = names_identity(a.text, q.required);
      cached_.push_back(std::move(a));
    }
    cached_step_ = step;
    return cached_;
  }

  std::int64_t cached_step_ = -1;  // the cache, public only so the probe stays an aggregate
  std::vector<IdentityAnswer> cached_;
};

template <class Model>
struct IdentityAccuracy {
  IdentityProbe<Model>* probe = nullptr;  // null or no questions: the hook is off

  bool evaluates() const { return probe && !probe->questions.empty(); }
  void on_evaluate(nlohmann::json& entry) {
    if (!evaluates()) return;
    const auto& answers = probe->answers(entry.at("step").get<std::int64_t>());
    const auto correct = std::count_if(answers.begin(), answers.end(), [](const auto& a) { return a.correct; });
    entry["eval_identity_accuracy"] = static_cast<double>(correct) / static_cast<double>(answers.size());
    entry["eval_identity_sample"] = answers.front().text;  // one answer, to read the log by eye
  }
};

}  // namespace peft
