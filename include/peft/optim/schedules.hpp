// Learning-rate schedules as transformers' get_scheduler computes them. A schedule maps the
// optimizer step about to be taken (0-based) to a multiplier of the peak learning rate:
//   warmup:   step / warmup                      for step < warmup (so step 0 trains at lr 0)
//   constant: 1
//   linear:   (total - step) / (total - warmup), floored at 0
//   cosine:   0.5 (1 + cos(pi * (step - warmup) / (total - warmup)))
// Warmup from --warmup_ratio is ceil(ratio * total_steps), as HF's get_warmup_steps.
#pragma once
#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <numbers>
#include <string>
#include <string_view>

#include "peft/core/error.hpp"

namespace peft {

template <class S>
concept LrSchedule = requires(const S s, std::int64_t step, std::int64_t warmup, std::int64_t total) {
  { s.factor(step, warmup, total) } -> std::convertible_to<double>;
};

namespace detail {
inline double warmup_factor(std::int64_t step, std::int64_t warmup) {
  return static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup));
}
}  // namespace detail

struct ConstantWithWarmup {
  static constexpr std::string_view name = "constant";
  double factor(std::int64_t step, std::int64_t warmup, std::int64_t) const {
    return step < warmup ? detail::warmup_factor(step, warmup) : 1.0;
  }
};

struct LinearWithWarmup {
  static constexpr std::string_view name = "linear";
  double factor(std::int64_t step, std::int64_t warmup, std::int64_t total) const {
    if (step < warmup) return detail::warmup_factor(step, warmup);
    return std::max(0.0, static_cast<double>(total - step) / static_cast<double>(std::max<std::int64_t>(1, total - warmup)));
  }
};

struct CosineWithWarmup {
  static constexpr std::string_view name = "cosine";
  double factor(std::int64_t step, std::int64_t warmup, std::int64_t total) const {
    if (step < warmup) return detail::warmup_factor(step, warmup);
    const double progress =
        static_cast<double>(step - warmup) / static_cast<double>(std::max<std::int64_t>(1, total - warmup));
    return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
  }
};

// The run-time choice behind --lr_scheduler_type, itself a schedule policy.
struct NamedSchedule {
  std::string name = "linear";
  explicit NamedSchedule(std::string n = "linear") : name(std::move(n)) {
    require(name == "constant" || name == "linear" || name == "cosine",
            "--lr_scheduler_type '{}' is not supported (valid: constant, linear, cosine)", name);
  }
  double factor(std::int64_t step, std::int64_t warmup, std::int64_t total) const {
    if (name == "constant") return ConstantWithWarmup{}.factor(step, warmup, total);
    if (name == "cosine") return CosineWithWarmup{}.factor(step, warmup, total);
    return LinearWithWarmup{}.factor(step, warmup, total);
  }
};

inline std::int64_t warmup_steps(std::int64_t total_steps, double warmup_ratio, std::int64_t warmup_steps_flag) {
  if (warmup_steps_flag > 0) return warmup_steps_flag;
  return static_cast<std::int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
}

}  // namespace peft
