// The one check that a block of weights holds only finite numbers. A NaN or Inf in a saved adapter
// or model poisons every later use of it (training, chat, merging) with no error of its own, so
// weights are checked where they cross the disk boundary, in both directions, and the message
// names the tensor and the first bad element.
#pragma once
#include <cmath>
#include <cstddef>
#include <span>
#include <string_view>

#include "peft/core/error.hpp"

namespace peft {

// Why a base model with a NaN/Inf weight is refused, by every program that reads one.
inline constexpr std::string_view kBrokenBaseCheckpoint =
    "the base model's checkpoint is broken (re-download or re-convert it)";

// Index of the first NaN/Inf in `values`, or values.size() when all are finite.
inline std::size_t first_non_finite(std::span<const float> values) {
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i])) return i;
  return values.size();
}

// `where`: "<file>: tensor '<name>'", the subject of the message; `why`: what the caller refuses.
inline void require_finite(std::span<const float> values, std::string_view where, std::string_view why) {
  const std::size_t i = first_non_finite(values);
  if (i == values.size()) return;
  std::size_t bad = 0;
  for (std::size_t j = i; j < values.size(); ++j) bad += std::isfinite(values[j]) ? 0 : 1;
  fail("{} holds non-finite values ({} of {}, the first {} at element {}); {}", where, bad, values.size(),
       std::isnan(values[i]) ? "NaN" : "Inf", i, why);
}

}  // namespace peft
