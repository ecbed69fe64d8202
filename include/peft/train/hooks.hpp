// Trainer hooks are small policy types passed as Trainer<..., Hooks...>. A hook implements any
// subset of these members; the trainer calls those that exist, in the order the hooks are listed:
//   void on_step_end(const TrainResult&)        after every optimizer step
//   void on_log(nlohmann::json& entry)          may add fields to a logging.jsonl entry
//   void on_evaluate(nlohmann::json& entry)     after an evaluation; may add metrics
//   void on_train_end(const TrainResult&)
// Hooks hold their own state (and references to what they observe); the trainer owns copies.
#pragma once

namespace peft {

// The empty hook: documents the concept and is what Trainer<Model, Opt, Sched> uses.
struct NoHook {};

}  // namespace peft
