// A training sample as the model sees it: token ids and labels aligned with them (HF's
// convention: labels[t] is the token at position t, the model shifts them itself; -100 marks a
// position that carries no loss). Every dataset format ends as a vector of these.
#pragma once
#include <cstdint>
#include <vector>

namespace peft {

inline constexpr std::int32_t kIgnoreIndex = -100;

struct Sample {
  std::vector<std::int32_t> input_ids;
  std::vector<std::int32_t> labels;  // same length as input_ids

  std::size_t size() const { return input_ids.size(); }
  // Positions that carry loss after HF's shift: labels[1..] that are not -100.
  std::size_t label_tokens() const {
    std::size_t n = 0;
    for (std::size_t t = 1; t < labels.size(); ++t) n += labels[t] != kIgnoreIndex;
    return n;
  }
};

}  // namespace peft
