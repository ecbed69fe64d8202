// The Optimizer concept: what a trainer needs of an optimizer policy on the host. init() sizes
// the state for the trainable parameters; step() applies one update at a learning rate. Its
// checkpoint state goes through save/load_optimizer_state, and a device backend's versions of all
// four are its hooks (train/backend_hooks.hpp's TrainerBackend). AdamW and Sgd are the two.
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
