// What a run knows besides its weights and optimizer moments, and the two files that hold it.
// trainer_state.json is HF's, field for field (every field of HF's TrainerState and no other:
// global_step, epoch, log_history, best_metric, best_model_checkpoint, total_flos, ...), so HF's
// TrainerState.load_from_json, which passes each key to the dataclass, reads it. peft_state.json
// beside it holds what an exact resume needs besides: the per-step losses, gradient norms and
// learning rates, the dropout generator's state, the partial logging interval (so the next logged
// loss averages the same steps), the non-finite-step counters, the last evaluation and the hooks'
// own state; the run's id (checkpoint rotation deletes only its own run's checkpoints) and the
// settings that change the result (a resume with other settings would not be the same run).
// Checkpoints of peft before the split hold all of it in trainer_state.json; they still resume.
// Doubles go through nlohmann's shortest round-trip formatting, so they come back bit for bit;
// NaN/Inf (a skipped step's loss) are written as null and read back as NaN.
#pragma once
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
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
  int stop_signal = 0;             // SIGINT/SIGTERM ended the run after a checkpoint (train/stop_signal.hpp)
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
  std::string run_id;                                     // empty: written by an older peft
  nlohmann::json result_settings;                          // null: written by an older peft
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

// The run's settings and counts that HF's TrainerState holds beside its progress: what HF's own
// readers of trainer_state.json find there. peft's resume reads none of them back.
struct TrainerStateCounts {
  std::int64_t max_steps = 0, num_train_epochs = 0, train_batch_size = 0;
  std::int64_t logging_steps = 0, eval_steps = 0, save_steps = 0;
  double total_flos = 0;        // HF's estimate: 6 x non-embedding parameters x tokens seen
  bool training_stops = false;  // saved at the last step (HF's TrainerControl.should_training_stop)
};

namespace detail {
// "checkpoint-N" -> N (HF's best_global_step); null for any other name.
inline nlohmann::json checkpoint_step_or_null(const std::filesystem::path& dir) {
  const std::string name = dir.filename().string(), prefix = "checkpoint-";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return nullptr;
  std::int64_t n = 0;
  for (char c : name.substr(prefix.size())) {
    if (c < '0' || c > '9') return nullptr;
    n = n * 10 + (c - '0');
  }
  return n;
}
}  // namespace detail

inline constexpr const char* kTrainerStateFile = "trainer_state.json";
inline constexpr const char* kPeftStateFile = "peft_state.json";

// trainer_state.json: HF's TrainerState.
inline nlohmann::json trainer_state_json(const TrainerState& s, double epoch, const TrainerStateCounts& c) {
  const TrainResult& r = s.res;
  const nlohmann::json control = {{"should_epoch_stop", false}, {"should_evaluate", false}, {"should_log", false},
                                  {"should_save", true}, {"should_training_stop", c.training_stops}};
  return {{"global_step", r.global_step},
          {"epoch", epoch},
          {"max_steps", c.max_steps},
          {"num_train_epochs", c.num_train_epochs},
          {"train_batch_size", c.train_batch_size},
          {"logging_steps", c.logging_steps},
          {"eval_steps", c.eval_steps},
          {"save_steps", c.save_steps},
          {"num_input_tokens_seen", r.tokens},
          {"total_flos", c.total_flos},
          {"best_metric", detail::finite_or_null(r.best_metric)},
          {"best_global_step", detail::checkpoint_step_or_null(r.best_model_checkpoint)},
          {"best_model_checkpoint",
           r.best_model_checkpoint.empty() ? nlohmann::json() : nlohmann::json(r.best_model_checkpoint.string())},
          {"is_local_process_zero", true},
          {"is_world_process_zero", true},
          {"is_hyper_param_search", false},
          {"trial_name", nullptr},
          {"trial_params", nullptr},
          {"stateful_callbacks", {{"TrainerControl", {{"args", control}, {"attributes", nlohmann::json::object()}}}}},
          {"log_history", s.log_history}};
}

// peft_state.json: the rest of an exact resume (`args`: the trainer's TrainingArguments, for the reader).
inline nlohmann::json peft_state_json(const TrainerState& s, const nlohmann::json& args) {
  const TrainResult& r = s.res;
  return {{"run_id", s.run_id},
          {"result_settings", s.result_settings},
          {"args", args},
          {"train_loss_per_step", detail::doubles_json(r.step_losses)},
          {"grad_norm_per_step", detail::doubles_json(r.step_grad_norms)},
          {"learning_rate_per_step", detail::doubles_json(r.step_lrs)},
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

// The file of a checkpoint folder that holds peft's part: peft_state.json, else trainer_state.json,
// where checkpoints from before the split kept it (HF's fields alone have none of its keys, so a
// reader finds them missing there).
inline std::filesystem::path peft_state_file(const std::filesystem::path& checkpoint) {
  std::error_code ec;
  const auto own = checkpoint / kPeftStateFile;
  return std::filesystem::is_regular_file(own, ec) ? own : checkpoint / kTrainerStateFile;
}

// Reads what trainer_state_json and peft_state_json wrote into `checkpoint`; errors name the file
// and the field.
inline TrainerState read_trainer_state(const std::filesystem::path& checkpoint) {
  const std::string hf_file = (checkpoint / kTrainerStateFile).string();
  const nlohmann::json j = read_json_file(hf_file);
  require(j.is_object(), "{}: not a JSON object", hf_file);
  const std::string own_file = peft_state_file(checkpoint).string();
  const bool split = own_file != hf_file;
  require(split || j.contains("resume"),
          "{}: no {} beside it (written by another program or an older peft): cannot resume exactly", hf_file,
          kPeftStateFile);
  const nlohmann::json own = split ? read_json_file(own_file) : j;
  require(own.is_object() && own.contains("resume") && own["resume"].is_object(),
          "{}: no \"resume\" section: cannot resume exactly", own_file);
  const auto& z = own["resume"];
  // Field `key` of `o` (in `file`, shown with `section` before its name).
  auto field = [&](const nlohmann::json& o, const char* key, const std::string& file,
                   const char* section = "") -> const nlohmann::json& {
    require(o.contains(key), "{}: field '{}{}' is missing", file, section, key);
    return o[key];
  };
  auto get = [&]<class T>(const nlohmann::json& o, const char* key, const std::string& file, T& out,
                          const char* section = "") {
    try {
      out = field(o, key, file, section).template get<T>();
    } catch (const nlohmann::json::exception& e) {
      fail("{}: field '{}{}': {}", file, section, key, detail::strip_json_exception_prefix(e.what()));
    }
  };
  auto get_resume = [&]<class T>(const char* key, T& out) { get(z, key, own_file, out, "resume."); };
  auto doubles = [&](const char* key) {
    try {
      return detail::json_doubles(field(own, key, own_file));
    } catch (const nlohmann::json::exception& e) {
      fail("{}: field '{}': {}", own_file, key, detail::strip_json_exception_prefix(e.what()));
    }
  };
  TrainerState s;
  get(j, "global_step", hf_file, s.res.global_step);
  get(j, "num_input_tokens_seen", hf_file, s.res.tokens);
  s.res.step_losses = doubles("train_loss_per_step");
  s.res.step_grad_norms = doubles("grad_norm_per_step");
  s.res.step_lrs = doubles("learning_rate_per_step");
  if (!field(j, "best_metric", hf_file).is_null()) get(j, "best_metric", hf_file, s.res.best_metric);
  if (!field(j, "best_model_checkpoint", hf_file).is_null()) {
    std::string best;
    get(j, "best_model_checkpoint", hf_file, best);
    s.res.best_model_checkpoint = best;
  }
  s.log_history = field(j, "log_history", hf_file);
  require(s.log_history.is_array(), "{}: field 'log_history' is not an array", hf_file);
  get_resume("dropout_rng", s.dropout_rng);
  get_resume("interval_loss", s.interval_loss);
  get_resume("interval_steps", s.interval_steps);
  get_resume("interval_tokens", s.interval_tokens);
  // absent in checkpoints from before token_acc
  if (z.contains("interval_correct")) get_resume("interval_correct", s.interval_correct);
  if (z.contains("interval_label_tokens")) get_resume("interval_label_tokens", s.interval_label_tokens);
  get_resume("skipped_steps", s.res.skipped_steps);
  get_resume("nonfinite_in_a_row", s.nonfinite_in_a_row);
  get_resume("last_eval", s.last_eval);
  get_resume("hooks", s.hooks);
  if (own.contains("run_id") && own["run_id"].is_string()) s.run_id = own["run_id"].get<std::string>();
  if (own.contains("result_settings")) s.result_settings = own["result_settings"];
  // The generator's state is mt19937_64's text form: 312 words. A damaged one would be read
  // without complaint into some other state, and the resume would silently stop being exact.
  {
    std::istringstream in(s.dropout_rng);
    std::mt19937_64 probe;
    in >> probe;
    std::string rest;
    require(!in.fail() && !(in >> rest), "{}: field 'resume.dropout_rng' is not a random generator state (damaged "
            "file?): cannot resume exactly", own_file);
  }
  require(s.res.global_step >= 0, "{}: negative global_step (damaged file?)", hf_file);
  require(s.interval_steps >= 0 && s.res.skipped_steps >= 0, "{}: negative step counts (damaged file?)", own_file);
  require(static_cast<std::int64_t>(s.res.step_losses.size()) == s.res.global_step,
          "{}: global_step {} but {} holds {} step losses (files of two checkpoints?)", hf_file, s.res.global_step,
          own_file, s.res.step_losses.size());
  return s;
}

}  // namespace peft
