// What happens to a sample longer than --max_length, with ms-swift 3's --truncation_strategy
// names and default: 'delete' drops it (the default), 'left' keeps its last max_length tokens,
// 'right' its first max_length tokens. Labels are cut with the ids, so they stay aligned.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "peft/core/error.hpp"
#include "peft/data/sample.hpp"

namespace peft::data {

enum class TruncationStrategy { Delete, Left, Right };

inline TruncationStrategy parse_truncation_strategy(std::string_view name) {
  if (name == "delete") return TruncationStrategy::Delete;
  if (name == "left") return TruncationStrategy::Left;
  if (name == "right") return TruncationStrategy::Right;
  fail("--truncation_strategy '{}' is not supported; valid values: delete, left, right", name);
}

enum class LengthOutcome { Kept, Truncated, Dropped };

// Applies the strategy in place; a dropped sample is left as it was.
inline LengthOutcome fit_to_max_length(Sample& sample, std::int64_t max_length, TruncationStrategy strategy) {
  require(max_length > 0, "--max_length must be positive, got {}", max_length);
  const auto limit = static_cast<std::size_t>(max_length);
  if (sample.input_ids.size() <= limit) return LengthOutcome::Kept;
  switch (strategy) {
    case TruncationStrategy::Delete:
      return LengthOutcome::Dropped;
    case TruncationStrategy::Left:
      sample.input_ids.erase(sample.input_ids.begin(), sample.input_ids.end() - static_cast<std::ptrdiff_t>(limit));
      sample.labels.erase(sample.labels.begin(), sample.labels.end() - static_cast<std::ptrdiff_t>(limit));
      break;
    case TruncationStrategy::Right:
      sample.input_ids.resize(limit);
      sample.labels.resize(limit);
      break;
  }
  return LengthOutcome::Truncated;
}

}  // namespace peft::data
