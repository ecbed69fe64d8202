// Trainer hooks are small policy types passed as Trainer<..., Hooks...>. A hook implements any
// subset of these members; the trainer calls those that exist, in the order the hooks are listed:
//   void on_train_begin()                       before the first step (after a resume's restore)
//   void on_step_end(const TrainResult&)        after every optimizer step
//   void on_log(nlohmann::json& entry)          may add fields to a logging.jsonl entry
//   bool evaluates() const                      true: the trainer evaluates at eval steps even
//                                               without a validation set (the hook measures)
//   void on_evaluate(nlohmann::json& entry)     after an evaluation; adds its metrics as eval_<name>
//   bool should_stop() const                    checked after each evaluation (early stopping)
//   nlohmann::json state() const                saved in checkpoints (peft_state.json) ...
//   void load_state(const nlohmann::json&)      ... and handed back on resume
//   void on_train_end(const TrainResult&)
// Hooks hold their own state (and references to what they observe); the trainer owns copies.
// The hooks themselves live one per file under train/hooks/.
#pragma once

namespace peft {

// The empty hook: documents the concept and is what Trainer<Model, Opt, Sched> uses.
struct NoHook {};

}  // namespace peft

#include "peft/train/hooks/early_stopping.hpp"
#include "peft/train/hooks/general_retention.hpp"
#include "peft/train/hooks/identity_accuracy.hpp"
#include "peft/train/hooks/repetition.hpp"
