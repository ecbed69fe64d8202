// The numerical guard: one bad batch (an overflow, a corrupt sample) must not write NaN into every
// weight through AdamW's moments, so a step whose loss or global gradient norm is NaN/Inf takes
// no optimizer update (its gradients are dropped) and is counted. The data and the schedule still
// advance, as a step that happened. Non-finite steps in a row mean the run itself has diverged
// (weights already non-finite, lr far too high): after `max_in_a_row` of them the run stops with
// an error instead of burning the remaining steps.
#pragma once
#include <cmath>
#include <cstdint>
#include <fmt/format.h>

#include "peft/core/error.hpp"

namespace peft {

struct NonFiniteGuard {
  std::int64_t max_in_a_row = 5;
  std::int64_t in_a_row = 0;
  std::int64_t total = 0;

  static bool finite(double loss, double grad_norm) { return std::isfinite(loss) && std::isfinite(grad_norm); }

  // True when the step must be skipped; throws once too many were skipped in a row.
  bool skip(std::int64_t global_step, double loss, double grad_norm) {
    if (finite(loss, grad_norm)) {
      in_a_row = 0;
      return false;
    }
    ++total;
    ++in_a_row;
    fmt::print(stderr, "[guard] step {}: loss {} grad_norm {}: update skipped ({} in a row, {} in all)\n", global_step,
               loss, grad_norm, in_a_row, total);
    require(in_a_row < max_in_a_row,
            "training diverged: {} optimizer steps in a row (up to step {}) had a NaN/Inf loss or gradient norm; "
            "lower --learning_rate or check the data (--max_consecutive_nonfinite_steps sets the limit)",
            in_a_row, global_step);
    return true;
  }
};

}  // namespace peft
