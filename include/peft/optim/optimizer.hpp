// The Optimizer concept: what a trainer needs of an optimizer policy. init() sizes the state
// for the trainable parameters; step() applies one update at a learning rate; the state is
// public so checkpoints can save and restore it exactly.
#pragma once
#include <concepts>

#include "peft/core/parameter.hpp"
#include "peft/optim/adamw.hpp"

namespace peft {

template <class O>
concept Optimizer = requires(O o, const ParameterList& p, double lr) {
  o.init(p);
  o.step(p, lr);
  { o.step_count } -> std::convertible_to<std::int64_t>;
};

}  // namespace peft
