// What every layer of one forward pass shares: the packed batch's sample boundaries, the rotary
// table for its positions, and the dropout generator (null in evaluation).
#pragma once
#include <cstdint>
#include <span>

#include "peft/kernels/cpu/rope.hpp"
#include "peft/core/rng.hpp"

namespace peft {

struct ForwardContext {
  std::span<const std::int64_t> cu_seqlens;  // sample s is rows [cu[s], cu[s+1])
  cpu::RopeTable rope;
  Rng* dropout = nullptr;
};

}  // namespace peft
