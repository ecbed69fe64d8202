// Repetition: the "parroting" an over-trained identity fine-tune shows (the same phrase again and
// again) as a number: the share of repeated token n-grams in the probe's greedy answers,
//   sum over answers (n-grams - distinct n-grams) / sum over answers (n-grams).
// 0 = no n-gram occurs twice within an answer; near 1 = an answer is one n-gram looped. Logged as
// eval_repetition. n = 3 tokens by default: short enough to catch "movements movements movements",
// long enough that ordinary text (repeated function words) scores near 0.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "peft/train/hooks/identity_accuracy.hpp"

namespace peft {

inline double repeated_ngram_share(const std::vector<std::vector<std::int32_t>>& texts, std::size_t n) {
  std::size_t total = 0, repeated = 0;
  for (const auto& t : texts) {
    if (t.size() < n) continue;
    std::set<std::vector<std::int32_t>> seen;
    for (std::size_t i = 0; i + n <= t.size(); ++i) {
      ++total;
      if (!seen.emplace(t.begin() + static_cast<std::ptrdiff_t>(i), t.begin() + static_cast<std::ptrdiff_t>(i + n)).second)
        ++repeated;
    }
  }
  return total ? static_cast<double>(repeated) / static_cast<double>(total) : 0.0;
}

template <class Model>
struct Repetition {
  IdentityProbe<Model>* probe = nullptr;
  std::size_t n = 3;

  bool evaluates() const { return probe && !probe->questions.empty(); }
  void on_evaluate(nlohmann::json& entry) {
    if (!evaluates()) return;
    std::vector<std::vector<std::int32_t>> texts;
    for (const auto& a : probe->answers(entry.at("step").get<std::int64_t>())) texts.push_back(a.ids);
    entry["eval_repetition"] = repeated_ngram_share(texts, n);
  }
};

}  // namespace peft
