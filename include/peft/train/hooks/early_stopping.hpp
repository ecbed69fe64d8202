// EarlyStopping: HF's EarlyStoppingCallback as a trainer hook. After each evaluation the metric
// either improves on the best seen by more than min_delta (the counter resets) or it does not
// (the counter grows); at `patience` evaluations without improvement the run stops. The trainer
// then writes a final checkpoint, and --load_best_model_at_end brings back the best one.
// Flags: --early_stop_metric (default: --metric_for_best_model, else eval_loss),
// --early_stop_patience, --early_stop_min_delta.
#pragma once
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "peft/train/best_model.hpp"

namespace peft {

struct EarlyStopping {
  std::string metric = "eval_loss";
  std::int64_t patience = 0;  // 0: never stop (the hook only watches)
  double min_delta = 0.0;
  bool greater_is_better = false;

  double best = std::numeric_limits<double>::quiet_NaN();
  std::int64_t bad_evals = 0;

  void on_evaluate(nlohmann::json& entry) {
    if (patience <= 0) return;
    const double v = eval_metric(entry, metric, "early_stop_metric");
    if (is_improvement(v, best, greater_is_better, min_delta)) {
      best = v;
      bad_evals = 0;
    } else {
      ++bad_evals;
    }
    entry["early_stop_bad_evals"] = bad_evals;
  }
  bool should_stop() const { return patience > 0 && bad_evals >= patience; }

  nlohmann::json state() const {
    return {{"best", std::isfinite(best) ? nlohmann::json(best) : nlohmann::json()}, {"bad_evals", bad_evals}};
  }
  void load_state(const nlohmann::json& s) {
    best = s.at("best").is_null() ? std::numeric_limits<double>::quiet_NaN() : s["best"].get<double>();
    bad_evals = s.at("bad_evals").get<std::int64_t>();
  }
};

}  // namespace peft
