// What a run knows besides its weights and optimizer moments, and how trainer_state.json holds it.
// The file is HF's trainer_state.json (global_step, epoch, log_history, best_metric,
// best_model_checkpoint, ...) plus a "resume" object with everything else an exact resume needs:
// the dropout generator's state, the partial logging interval (so the next logged loss averages
// the same steps), the non-finite-step counters, the last evaluation and the hooks' own state.
// Doubles go through nlohmann's shortest round-trip formatting, so they come back bit for bit;
// NaN/Inf (a skipped step's loss) are written as null and read back as NaN.
#pragma once
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft/io/json_file.hpp"

namespace peft {

struct TrainResult {
  std::int64_t global_step = 0;
  std::vector<double> step_losses, step_grad_norms, step_lrs;
  double train_loss = 0;  // mean of the finite step losses
  double seconds = 0;
  std::int64_t tokens = 0;
  std::int64_t skipped_steps = 0;  // steps skipped by the numerical guard
  bool stopped_early = false;      // a hook (early stopping) ended the run before its last step
  std::filesystem::path last_checkpoint;
  std::filesystem::path best_model_checkpoint;  // empty unless a best-model metric is configured
  double best_metric = std::numeric_limits<double>::quiet_NaN();
};

struct TrainerState {
  TrainResult res;
  double interval_loss = 0;  // finite losses since the last log
  std::int64_t interval_steps = 0, interval_tokens = 0;
  // token_acc over the interval: argmax hits (< 0: the model does not count them) and label tokens.
  double interval_correct = 0;
  std::int64_t interval_label_tokens = 0;
  std::int64_t nonfinite_in_a_row = 0;
  std::string dropout_rng;
  nlohmann::json last_eval = nlohmann::json::object();
  nlohmann::json hooks = nlohmann::json::array();        // one entry per hook, in order
  nlohmann::json log_history = nlohmann::json::array();  // every logging.jsonl entry so far
};

namespace detail {
inline nlohmann::json finite_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }
inline nlohmann::json doubles_json(const std::vector<double>& v) {
  nlohmann::json a = nlohmann::json::array();
  for (double x : v) a.push_back(finite_or_null(x));
  return a;
}
inline std::vector<double> json_doubles(const nlohmann::json& a) {
  std::vector<double> v;
  for (const auto& x : a) v.push_back(x.is_null() ? std::numeric_limits<double>::quiet_NaN() : x.get<double>());
  return v;
}
}  // namespace detail

inline nlohmann::json trainer_state_json(const TrainerState& s, double epoch, const nlohmann::json& args,
                                         std::int64_t max_steps) {
  const TrainResult& r = s.res;
  return {{"global_step", r.global_step},
          {"epoch", epoch},
          {"max_steps", max_steps},
          {"num_input_tokens_seen", r.tokens},
          {"best_metric", detail::finite_or_null(r.best_metric)},
          {"best_model_checkpoint",
           r.best_model_checkpoint.empty() ? nlohmann::json() : nlohmann::json(r.best_model_checkpoint.string())},
          {"log_history", s.log_history},
          {"train_loss_per_step", detail::doubles_json(r.step_losses)},
          {"grad_norm_per_step", detail::doubles_json(r.step_grad_norms)},
          {"learning_rate_per_step", detail::doubles_json(r.step_lrs)},
          {"args", args},
          {"resume",
           {{"dropout_rng", s.dropout_rng},
            {"interval_loss", s.interval_loss},
            {"interval_steps", s.interval_steps},
            {"interval_tokens", s.interval_tokens},
            {"interval_correct", s.interval_correct},
            {"interval_label_tokens", s.interval_label_tokens},
            {"skipped_steps", r.skipped_steps},
            {"nonfinite_in_a_row", s.nonfinite_in_a_row},
            {"last_eval", s.last_eval},
            {"hooks", s.hooks}}}};
}

// Reads what trainer_state_json wrote; errors name the file and the missing field.
inline TrainerState read_trainer_state(const std::filesystem::path& file) {
  const nlohmann::json j = read_json_file(file);
  require(j.contains("resume") && j["resume"].is_object(),
          "{}: no \"resume\" section (written by another program or an older peft): cannot resume exactly",
          file.string());
  TrainerState s;
  try {
    const auto& z = j["resume"];
    s.res.global_step = j.at("global_step").get<std::int64_t>();
    s.res.tokens = j.at("num_input_tokens_seen").get<std::int64_t>();
    s.res.step_losses = detail::json_doubles(j.at("train_loss_per_step"));
    s.res.step_grad_norms = detail::json_doubles(j.at("grad_norm_per_step"));
    s.res.step_lrs = detail::json_doubles(j.at("learning_rate_per_step"));
    if (!j.at("best_metric").is_null()) s.res.best_metric = j["best_metric"].get<double>();
    if (!j.at("best_model_checkpoint").is_null())
      s.res.best_model_checkpoint = j["best_model_checkpoint"].get<std::string>();
    s.log_history = j.at("log_history");
    s.dropout_rng = z.at("dropout_rng").get<std::string>();
    s.interval_loss = z.at("interval_loss").get<double>();
    s.interval_steps = z.at("interval_steps").get<std::int64_t>();
    s.interval_tokens = z.at("interval_tokens").get<std::int64_t>();
    s.interval_correct = z.value("interval_correct", 0.0);  // absent in checkpoints from before token_acc
    s.interval_label_tokens = z.value("interval_label_tokens", std::int64_t{0});
    s.res.skipped_steps = z.at("skipped_steps").get<std::int64_t>();
    s.nonfinite_in_a_row = z.at("nonfinite_in_a_row").get<std::int64_t>();
    s.last_eval = z.at("last_eval");
    s.hooks = z.at("hooks");
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", file.string(), detail::strip_json_exception_prefix(e.what()));
  }
  require(static_cast<std::int64_t>(s.res.step_losses.size()) == s.res.global_step,
          "{}: global_step {} but {} step losses", file.string(), s.res.global_step, s.res.step_losses.size());
  return s;
}

}  // namespace peft
