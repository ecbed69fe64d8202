// GeneralRetention: how much general ability a fine-tune costs, measured as the loss on a held-out
// general set (e.g. alpaca-style instructions) against the same model's loss before training.
// Logged per evaluation: eval_general_loss, and eval_general_retention = exp(base - loss), the
// ratio of perplexities base/current: 1.0 = nothing lost, 0.5 = perplexity doubled. The base loss
// is measured once at train begin and kept in the checkpoint, so a resumed run compares with the
// base model rather than with the half-trained one it restarts from.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "peft/data/sample.hpp"
#include "peft/train/evaluate.hpp"

namespace peft {

template <class Model>
struct GeneralRetention {
  Model* model = nullptr;
  const std::vector<Sample>* data = nullptr;  // empty or null: the hook is off
  std::int64_t batch_size = 1;
  double base_loss = std::numeric_limits<double>::quiet_NaN();

  bool evaluates() const { return data && !data->empty(); }
  double loss() const { return evaluate_loss(*model, *data, batch_size).mean(); }

  void on_train_begin() {
    if (evaluates() && std::isnan(base_loss)) base_loss = loss();
  }
  void on_evaluate(nlohmann::json& entry) {
    if (!evaluates()) return;
    const double l = loss();
    entry["eval_general_loss"] = l;
    entry["eval_general_loss_base"] = base_loss;
    entry["eval_general_retention"] = std::exp(base_loss - l);
  }
  nlohmann::json state() const { return {{"base_loss", std::isnan(base_loss) ? nlohmann::json() : nlohmann::json(base_loss)}}; }
  void load_state(const nlohmann::json& s) {
    if (!s.at("base_loss").is_null()) base_loss = s["base_loss"].get<double>();
  }
};

}  // namespace peft
