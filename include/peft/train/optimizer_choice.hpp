// The one place an optimizer is built from TrainingArguments (--optim and its hyper-parameters).
// The optimizer is a compile-time policy of the Trainer while --optim is a run-time flag, so
// with_optimizer hands the chosen one to a generic callable, which instantiates its Trainer for
// that type: with_optimizer(args, [&](auto opt) { Trainer<Model, decltype(opt)> t(...); ... }).
#pragma once
#include <utility>

#include "peft/optim/adamw.hpp"
#include "peft/optim/sgd.hpp"
#include "peft/train/training_arguments.hpp"

namespace peft {

inline AdamW adamw_from(const TrainingArguments& t) {
  return AdamW({t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay});
}
inline Sgd sgd_from(const TrainingArguments& t) { return Sgd({t.sgd_momentum, t.weight_decay}); }

// f(AdamW) or f(Sgd), as --optim says; both calls must return the same type.
template <class F>
decltype(auto) with_optimizer(const TrainingArguments& t, F&& f) {
  if (t.optim == "sgd") return std::forward<F>(f)(sgd_from(t));
  require(t.optim == "adamw_torch", "--optim {}: not available here (valid: adamw_torch, sgd)", t.optim);
  return std::forward<F>(f)(adamw_from(t));
}

}  // namespace peft
