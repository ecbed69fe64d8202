// Which evaluation is "better", shared by best-checkpoint tracking and early stopping so the two
// never disagree. HF's rules: the best checkpoint improves on any strict gain
// (Trainer._determine_best_metric); early stopping wants a gain larger than a threshold
// (EarlyStoppingCallback's early_stopping_threshold, our --early_stop_min_delta).
#pragma once
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

#include "peft/core/error.hpp"

namespace peft {

inline bool is_improvement(double value, double best, bool greater_is_better, double min_delta = 0.0) {
  if (!std::isfinite(value)) return false;
  if (std::isnan(best)) return true;
  return greater_is_better ? value - best > min_delta : best - value > min_delta;
}

// The metric `name` of an evaluation entry, or a clear error listing what the entry has.
inline double eval_metric(const nlohmann::json& entry, const std::string& name, const char* flag) {
  if (entry.contains(name) && entry[name].is_number()) return entry[name].get<double>();
  std::string have;
  for (const auto& [k, v] : entry.items())
    if (k.rfind("eval_", 0) == 0) have += (have.empty() ? "" : ", ") + k;
  fail("--{} {}: the evaluation at step {} did not produce it (it has: {}){}", flag, name,
       entry.value("step", std::int64_t{0}), have.empty() ? "nothing" : have,
       have.empty() ? "; give a validation split (--split_dataset_ratio) or an evaluation dataset" : "");
}

}  // namespace peft
