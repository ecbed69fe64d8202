// The training loop, HF Trainer's semantics written out:
//   - micro-batches of per_device_train_batch_size samples, packed without padding;
//   - an optimizer step every gradient_accumulation_steps micro-batches (the last step of an
//     epoch takes what is left); its loss is sum CE over all its label tokens / their count, and
//     each micro-batch's backward is scaled by 1 / that count, so accumulation equals one big batch;
//   - clip the global gradient norm, the optimizer at lr * schedule(step), zero the gradients;
//   - a step whose loss or gradient norm is NaN/Inf takes no update (train/numerical_guard.hpp);
//   - log every logging_steps (loss and token accuracy over the steps since the last log, with
//     ms-swift's progress keys: train/progress.hpp), evaluate every eval_steps (or each epoch, or
//     never: eval_strategy), checkpoint every save_steps (or each epoch, or never: save_strategy)
//     and at the end, keep save_total_limit checkpoints
//     (never the best one nor the one resumed from);
//   - resume_from_checkpoint restores weights, moments, step, dropout generator, logging interval
//     and history, hooks' state; the epoch's sample order is recomputed from (seed, epoch), so
//     an interrupted-and-resumed run equals an uninterrupted one bit for bit (CPU backend); the
//     settings that change the result must equal the checkpoint's (train/result_settings.hpp).
//   - a run has an id, recorded in its checkpoints; rotation deletes only that run's checkpoints.
//     A resume in the checkpoint's own folder continues its run (and id).
//   - a stop signal (train/stop_signal.hpp) ends the run after the current step, with a
//     checkpoint; TrainResult::stop_signal says which.
//   - a failed write of logging.jsonl (disk full) is an error, not a silently shorter log.
//   - data-parallel (set_communicator, world W): an optimizer step takes gradient_accumulation_steps
//     x W micro-batches; rank r runs micro-batches r, r+W, ...; every rank counts the label tokens
//     of the whole step (it has the data), so the 1/count scale is the global one; the gradients
//     and the loss sum are all-reduced before clipping, so every rank takes the same update. Only
//     a rank given a run dir (rank 0) writes. Without a communicator nothing of this runs.
//   - accumulation packing (TrainingArguments::accumulation_pack_tokens): a rank's micro-batches
//     of one step are joined into as few forward/backward calls as the token budget allows; every
//     call is scaled by the step's label tokens, so the update is the same (a GPU model packs by
//     default: each call reads all the weights once).
// Trainer<Model, Optimizer, Schedule, Hooks...>: the model is any CausalLm (models/causal_lm.hpp)
// whose backend provides the TrainerBackend hooks for it and the optimizer
// (train/backend_hooks.hpp: every call on parameters, optimizer state and checkpoint tensors);
// hooks are small policy types called at the points named in train/hooks.hpp.
#pragma once
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <tuple>
#include <vector>

#include "peft/core/rng.hpp"
#include "peft/data/packed_batch.hpp"
#include "peft/dist/communicator.hpp"
#include "peft/models/causal_lm.hpp"
#include "peft/models/parameter_count.hpp"
#include "peft/optim/optimizer.hpp"
#include "peft/optim/schedules.hpp"
#include "peft/train/backend_hooks.hpp"
#include "peft/train/background_write.hpp"
#include "peft/train/checkpoint.hpp"
#include "peft/train/best_model.hpp"
#include "peft/train/evaluate.hpp"
#include "peft/train/hooks.hpp"
#include "peft/train/loss_plot.hpp"
#include "peft/train/numerical_guard.hpp"
#include "peft/train/result_settings.hpp"
#include "peft/train/resume_check.hpp"
#include "peft/train/run_folder.hpp"
#include "peft/train/step_batches.hpp"
#include "peft/train/stop_signal.hpp"
#include "peft/train/tensorboard_writer.hpp"
#include "peft/train/progress.hpp"
#include "peft/train/trainer_state.hpp"
#include "peft/train/training_arguments.hpp"

namespace peft {

template <CausalLm Model, Optimizer Opt = AdamW, LrSchedule Sched = NamedSchedule, class... Hooks>
  requires TrainerBackend<Model, Opt>
class Trainer {
 public:
  Trainer(Model& model, TrainingArguments args, Opt opt, Sched sched, Hooks... hooks)
      : model_(model), args_(std::move(args)), opt_(std::move(opt)), sched_(std::move(sched)), hooks_(hooks...) {
    args_.validate();
  }

  // Name recorded as base_model_name_or_path in saved adapters.
  void set_base_model_name(std::string n) { base_model_ = std::move(n); }
  // Where logging.jsonl and checkpoints go; empty = write nothing (tests, sweeps).
  void set_run_dir(std::filesystem::path d) { run_dir_ = std::move(d); }
  void set_quiet(bool q) { quiet_ = q; }
  // The run's identity in its checkpoints; empty (the default): continued from the checkpoint
  // when resuming in its own folder, else a new one.
  void set_run_id(std::string id) { run_id_ = std::move(id); }
  // Files (name -> text) written into every checkpoint beside the weights: the program's record
  // of the run (args.json ...), so a checkpoint stands on its own.
  void set_checkpoint_files(std::map<std::string, std::string> files) { checkpoint_files_ = std::move(files); }
  // Data-parallel training over `c` (dist/communicator.hpp); nullptr (the default): one process.
  void set_communicator(dist::Communicator* c) { comm_ = c; }
  int world_size() const { return comm_ ? comm_->world_size() : 1; }
  int rank() const { return comm_ ? comm_->rank() : 0; }

  std::int64_t steps_per_epoch(std::size_t samples) const { return peft::steps_per_epoch(args_, samples, world_size()); }
  std::int64_t total_steps(std::size_t samples) const { return peft::total_steps(args_, samples, world_size()); }

  // The loop is the trainer's three jobs, one function each: assemble the step's micro-batches
  // (train/step_batches.hpp), run the step (forward/backward, all-reduce, clip, update), then
  // record, log, evaluate and save.
  TrainResult train(const std::vector<Sample>& train, const std::vector<Sample>* eval = nullptr) {
    Run run = begin_run(train, eval);
    for (std::int64_t step = st_.res.global_step; step < run.total; ++step) {
      const StepBatches batches = step_batches(run, train, step);
      const StepOutcome out = run_step(run, batches, step);
      if (after_step(run, batches, out, step)) break;
    }
    return end_run(run);
  }

  // Token-weighted mean CE over a dataset, in batches of per_device_eval_batch_size.
  auto evaluate(const std::vector<Sample>& data) {
    return evaluate_loss(model_, data, args_.per_device_eval_batch_size);
  }

  const Opt& optimizer() const { return opt_; }
  std::tuple<Hooks...>& hooks() { return hooks_; }

 private:
  using Params = parameters_of_t<Model>;
  using Clock = std::chrono::steady_clock;

  // What one call of train() carries from step to step.
  struct Run {
    Params params;
    const std::vector<Sample>* eval = nullptr;
    std::int64_t per_epoch = 1, total = 0, warmup = 0, start_step = 0;
    std::size_t samples = 0;  // training samples an epoch
    double flos_per_token = 0;  // HF's total_flos estimate a token (models/parameter_count.hpp)
    Rng dropout_rng;
    NonFiniteGuard guard;
    std::ofstream log;
    bool evaluating = false;
    std::size_t pack_cap = 0;
    std::vector<std::size_t> order;  // the current epoch's sample order
    Clock::time_point t0, interval_t0;
  };

  // What the step computed, for the record and the log.
  struct StepOutcome {
    double loss = 0, grad_norm = 0, lr = 0, correct = 0;
    bool accuracy_known = true, skipped = false;
    int stop = 0;  // a stop signal seen by any rank
  };

  // Sets up a run: the optimizer's state, a resumed checkpoint's state, the log and the hooks.
  Run begin_run(const std::vector<Sample>& train, const std::vector<Sample>* eval) {
    require(!train.empty(), "the training set is empty");
    Run run{.params = model_.trainable_parameters(), .eval = eval, .dropout_rng = Rng(args_.seed),
            .guard = NonFiniteGuard{args_.max_consecutive_nonfinite_steps}};
    require(!run.params.empty(), "the model has no trainable parameters (check --target_modules / --train_type)");
    optimizer_init(opt_, run.params);
    model_.zero_grad();
    run.samples = train.size();
    run.flos_per_token = training_flos_per_token(model_.config(), trainable_numel(run.params), Model::uses_lora());
    run.per_epoch = steps_per_epoch(train.size());
    run.total = total_steps(train.size());
    run.warmup = warmup_steps(run.total, args_.warmup_ratio, args_.warmup_steps);
    st_ = TrainerState{};
    const nlohmann::json settings = result_settings(args_, train, lora_config_or_null(), world_size());
    if (!args_.resume_from_checkpoint.empty()) resume(run, settings);
    st_.result_settings = settings;
    if (run_id_.empty()) run_id_ = continues_checkpoint_run() ? st_.run_id : new_run_id();
    st_.run_id = run_id_;
    run.evaluating = (eval && !eval->empty()) || any_hook([](const auto& h) {
      if constexpr (requires { h.evaluates(); }) return h.evaluates(); else return false;
    });
    require(run.evaluating || args_.save_strategy != "best" || run_dir_.empty(),
            "--save_strategy best saves a checkpoint when an evaluation improves {}, and this run evaluates nothing: "
            "give a validation split (--split_dataset_ratio, --val_dataset)", args_.best_metric_name());
    if (!run_dir_.empty()) refuse_foreign_checkpoints(run_dir_, run_id_, args_, run.per_epoch, st_.res.global_step, run.total);
    // Other ranks draw their own dropout masks (rank 0 keeps the single-process stream; a
    // checkpoint holds rank 0's generator, so these restart from (seed, rank, step) on resume).
    if (rank() > 0)
      run.dropout_rng = Rng(args_.seed * 1000003ULL + 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(rank()) +
                            static_cast<std::uint64_t>(st_.res.global_step));
    run.log = open_log();
    // ms-swift's logging_dir: <run>/runs. A resumed run starts a new event file with what it logs.
    if (!run_dir_.empty() && args_.reports_tensorboard())
      tensorboard_.emplace(args_.logging_dir.empty() ? run_dir_ / "runs" : args_.logging_dir);
    call_hooks([&](auto& h) { if constexpr (requires { h.on_train_begin(); }) h.on_train_begin(); });
    run.start_step = st_.res.global_step;
    run.t0 = run.interval_t0 = Clock::now();
    run.pack_cap = accumulation_pack_cap();
    return run;
  }

  // Job 1: this optimizer step's samples, this rank's share packed into forward/backward calls.
  StepBatches step_batches(Run& run, const std::vector<Sample>& train, std::int64_t step) const {
    const std::int64_t epoch = step / run.per_epoch, in_epoch = step % run.per_epoch;
    if (in_epoch == 0 || run.order.empty())
      run.order = epoch_order(train.size(), epoch, args_.loader_seed(), args_.train_dataloader_shuffle);
    const std::size_t bs = static_cast<std::size_t>(args_.per_device_train_batch_size);
    const std::int64_t per_step = micro_batches_a_step(args_, world_size());  // all ranks
    const std::size_t first = static_cast<std::size_t>(in_epoch * per_step) * bs;
    const std::size_t last = std::min(run.order.size(), first + static_cast<std::size_t>(per_step) * bs);
    return assemble_step_batches(train, run.order, first, last, bs, world_size(), rank(), run.pack_cap);
  }

  // Job 2: forward/backward over the calls, the all-reduce, clipping and the update (unless the
  // guard skips a non-finite step), then zero_grad.
  StepOutcome run_step(Run& run, const StepBatches& b, std::int64_t step) {
    StepOutcome out;
    double loss_sum = 0;
    const float scale = b.label_tokens > 0 ? 1.0f / static_cast<float>(b.label_tokens) : 0.0f;
    for (const auto& call : b.calls) {
      const auto ls = model_.forward_backward(call, scale, &run.dropout_rng);
      loss_sum += ls.sum;
      if (ls.correct < 0) out.accuracy_known = false;  // a model that does not count argmax hits
      else out.correct += static_cast<double>(ls.correct);
    }
    // A stop signal ends the run after this step; with several ranks, any rank's signal stops
    // all at the same step (it travels with the loss; the others report SIGTERM).
    out.stop = stop_signal();
    if (comm_) {  // one bucket of gradients, then the loss (and hits) for the log; both before the norm
      all_reduce_grads(*comm_, run.params);
      double reduced[3] = {loss_sum, out.stop != 0 ? 1.0 : 0.0, out.accuracy_known ? out.correct : 0.0};
      comm_->all_reduce_sum(reduced, 3);
      loss_sum = reduced[0];
      out.stop = reduced[1] > 0 ? (out.stop != 0 ? out.stop : SIGTERM) : 0;
      if (out.accuracy_known) out.correct = reduced[2];
    }
    out.loss = b.label_tokens > 0 ? loss_sum / static_cast<double>(b.label_tokens) : 0.0;
    out.grad_norm = clip_grad_norm(run.params, args_.max_grad_norm);
    out.lr = args_.learning_rate * sched_.factor(step, run.warmup, run.total);
    out.skipped = run.guard.skip(step + 1, out.loss, out.grad_norm);
    if (b.label_tokens > 0 && !out.skipped) optimizer_step(opt_, run.params, out.lr);
    model_.zero_grad();
    return out;
  }

  // Job 3: the step's record, then logging, evaluation (and early stopping) and checkpoints.
  // True when this was the run's last step.
  bool after_step(Run& run, const StepBatches& b, const StepOutcome& out, std::int64_t step) {
    TrainResult& res = st_.res;
    res.step_losses.push_back(out.loss);
    res.step_grad_norms.push_back(out.grad_norm);
    res.step_lrs.push_back(out.lr);
    res.tokens += b.tokens;
    res.global_step = step + 1;
    res.skipped_steps = run.guard.total;
    if (!out.skipped) {
      st_.interval_loss += out.loss;
      ++st_.interval_steps;
    }
    st_.interval_correct =
        out.accuracy_known && st_.interval_correct >= 0 ? st_.interval_correct + out.correct : -1.0;
    st_.interval_label_tokens += b.label_tokens;
    st_.interval_tokens += b.tokens;
    call_hooks([&](auto& h) { if constexpr (requires { h.on_step_end(res); }) h.on_step_end(res); });

    const std::int64_t gs = step + 1;
    bool last_step = gs == run.total;
    const int stop = comm_ ? out.stop : stop_signal();  // one process: also a signal during this step's hooks
    if (stop != 0 && !last_step) {
      res.stop_signal = stop;
      last_step = true;
      fmt::print(stderr, "[train] {} received: stopping after step {}{}\n", stop_signal_name(stop), gs,
                 args_.save_strategy == "no" ? " (--save_strategy no: no checkpoint)" : " with a checkpoint");
    }
    const double epoch_now = epoch_at_step(args_, run.samples, world_size(), gs);
    if (!quiet_) display_.bar(gs, run.total, gs - run.start_step, seconds_since(run.t0));
    const bool logged = gs % args_.logging_steps == 0 || (gs == 1 && args_.logging_first_step) || last_step;
    if (logged) log_interval(run, out, gs, epoch_now);
    bool new_best = false;  // for --save_strategy best
    if (run.evaluating && args_.evaluates_at(gs, run.per_epoch, last_step && !res.stop_signal)) {
      nlohmann::json entry = {{"step", gs}, {"epoch", epoch_now}};
      if (run.eval && !run.eval->empty()) add_eval_metrics(entry, *run.eval);
      call_hooks([&](auto& h) { if constexpr (requires { h.on_evaluate(entry); }) h.on_evaluate(entry); });
      add_swift_train_message(entry, gs, run.total, gs - run.start_step, seconds_since(run.t0));
      write_log(run.log, entry);
      st_.last_eval = entry;
      new_best = improved_best().has_value();
      if (!quiet_) display_.line(fmt::format("[eval] {}", entry.dump()));
      if (any_hook([](const auto& h) { if constexpr (requires { h.should_stop(); }) return h.should_stop(); else return false; })) {
        res.stopped_early = !last_step;
        if (!logged) log_interval(run, out, gs, epoch_now);  // the steps since the last entry
        last_step = true;
        display_.line(fmt::format("[train] early stopping at step {}: no improvement in the last evaluations", gs));
      }
    }
    // A stop saves under "best" too: the checkpoint to resume from (track_best does not call it best).
    const bool saves = args_.save_strategy == "best" ? new_best || res.stop_signal
                                                     : args_.saves_at(gs, run.per_epoch, last_step);
    if (!run_dir_.empty() && saves) {
      st_.dropout_rng = run.dropout_rng.state();
      st_.nonfinite_in_a_row = run.guard.in_a_row;
      res.last_checkpoint = save_checkpoint(gs, epoch_now, run);
    }
    return last_step;
  }

  // HF's evaluate() metrics over the validation set: eval_loss, ms-swift's eval_token_acc (where the
  // model counts argmax hits), and speed_metrics("eval", ...) with HF's rounding.
  void add_eval_metrics(nlohmann::json& entry, const std::vector<Sample>& data) {
    const auto t0 = Clock::now();
    const auto r = evaluate(data);
    const double runtime = seconds_since(t0);
    entry["eval_loss"] = r.mean();
    if (r.correct >= 0 && r.tokens > 0) entry["eval_token_acc"] = static_cast<double>(r.correct) / static_cast<double>(r.tokens);
    const auto n = static_cast<double>(data.size());
    const auto batch = static_cast<double>(std::max<std::int64_t>(1, args_.per_device_eval_batch_size));
    add_speed_metrics(entry, "eval", runtime, n, std::ceil(n / batch));
  }

  // A log entry for the steps since the last one.
  void log_interval(Run& run, const StepOutcome& out, std::int64_t gs, double epoch_now) {
    const auto now = Clock::now();
    const double elapsed = seconds_since(run.t0);
    const double dt = std::chrono::duration<double>(now - run.interval_t0).count();
    nlohmann::json entry = {
        {"step", gs},
        {"loss", detail::finite_or_null(st_.interval_loss / static_cast<double>(st_.interval_steps))},
        {"grad_norm", detail::finite_or_null(out.grad_norm)},
        {"learning_rate", out.lr},
        {"epoch", epoch_now},
        {"skipped_steps", run.guard.total},
        {"tokens_per_second", dt > 0 ? static_cast<double>(st_.interval_tokens) / dt : 0.0},
        {"elapsed_s", elapsed}};
    if (st_.interval_correct >= 0 && st_.interval_label_tokens > 0)
      entry["token_acc"] = st_.interval_correct / static_cast<double>(st_.interval_label_tokens);
    add_swift_progress_keys(entry, gs, run.total, gs - run.start_step, elapsed, memory_gib());
    call_hooks([&](auto& h) { if constexpr (requires { h.on_log(entry); }) h.on_log(entry); });
    write_log(run.log, entry);
    progress(gs, gs - run.start_step, run.total, entry, elapsed);
    st_.interval_loss = 0;
    st_.interval_steps = st_.interval_tokens = 0;
    st_.interval_correct = 0;  // kept in checkpoints: token_acc resumes exactly
    st_.interval_label_tokens = 0;
    run.interval_t0 = now;
  }

  TrainResult end_run(Run& run) {
    TrainResult& res = st_.res;
    saver_.wait();  // the last checkpoint is on disk (or its error thrown) before the run's time is taken
    if (!quiet_) display_.finish();
    res.seconds = seconds_since(run.t0);
    double finite_sum = 0;
    std::int64_t finite_n = 0;
    for (double l : res.step_losses)
      if (std::isfinite(l)) finite_sum += l, ++finite_n;
    res.train_loss = finite_n ? finite_sum / static_cast<double>(finite_n) : std::numeric_limits<double>::quiet_NaN();
    log_train_end(run);
    if (args_.load_best_model_at_end) load_best_model();
    plotter_.wait();  // a save's pictures (or their error), then the final ones over them
    if (!run_dir_.empty()) write_run_plots(run_dir_, plot_title(), &st_.res);
    call_hooks([&](auto& h) { if constexpr (requires { h.on_train_end(res); }) h.on_train_end(res); });
    return res;
  }

  // HF's total_flos so far: its estimate a token times the tokens trained, every rank's.
  double total_flos(const Run& run) const { return run.flos_per_token * static_cast<double>(st_.res.tokens); }

  TrainerStateCounts state_counts(const Run& run, std::int64_t gs) const {
    return {.max_steps = run.total,
            .num_train_epochs = (run.total + run.per_epoch - 1) / run.per_epoch,
            .train_batch_size = args_.per_device_train_batch_size,
            .logging_steps = args_.logging_steps,
            .eval_steps = args_.eval_interval(),
            .save_steps = args_.save_steps,
            .total_flos = total_flos(run),
            .training_stops = gs >= run.total};
  }

  // HF Trainer's closing entry (its speed_metrics("train", ...) and train_loss), which ms-swift
  // logs with its progress keys: runtime and speed over the whole run's samples and steps, as HF
  // counts them (a resumed run's runtime is this process's). Not in any checkpoint's history, so
  // a resumed run does not repeat it.
  void log_train_end(Run& run) {
    const TrainResult& res = st_.res;
    const double runtime = res.seconds;
    const std::int64_t batch = args_.per_device_train_batch_size * micro_batches_a_step(args_, world_size());
    const double samples = args_.max_steps > 0 ? static_cast<double>(args_.max_steps * batch)
                                               : static_cast<double>(run.samples) * args_.num_train_epochs;
    nlohmann::json entry = {{"train_loss", detail::finite_or_null(res.train_loss)},
                            {"epoch", epoch_at_step(args_, run.samples, world_size(), res.global_step)},
                            {"step", res.global_step},
                            {"skipped_steps", run.guard.total}};
    add_speed_metrics(entry, "train", runtime, samples, static_cast<double>(run.total));
    entry["total_flos"] = total_flos(run);
    add_swift_progress_keys(entry, res.global_step, run.total, res.global_step - run.start_step, runtime, memory_gib());
    write_log(run.log, entry);
  }

  static double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
  // Tokens per forward/backward call when packing a step's micro-batches (0: one call each).
  // A model that plans its buffers for a token budget (the CUDA model's max_packed_tokens) caps
  // the packs at it; -1 asks the model, which packs only if it offers such a budget.
  std::size_t accumulation_pack_cap() const {
    std::int64_t cap = args_.accumulation_pack_tokens;
    if constexpr (requires { model_.max_packed_tokens(); }) {
      const auto plan = static_cast<std::int64_t>(model_.max_packed_tokens());
      cap = cap < 0 ? plan : std::min(cap, plan);
    } else if (cap < 0) {
      cap = 0;
    }
    return static_cast<std::size_t>(cap);
  }
  const LoraConfig* lora_config_or_null() const {
    if constexpr (requires { model_.lora_config(); }) {
      if constexpr (Model::uses_lora()) return &model_.lora_config();
    }
    return nullptr;
  }

  // A resume into the checkpoint's own run folder continues that run (its id, so rotation goes
  // on deleting its older checkpoints); a resume into another folder starts a new run.
  bool continues_checkpoint_run() const {
    return !st_.run_id.empty() && checkpoint_in_folder(args_.resume_from_checkpoint, run_dir_);
  }

  template <class F> void call_hooks(F&& f) { std::apply([&](auto&... h) { (f(h), ...); }, hooks_); }
  template <class F> bool any_hook(F&& f) const {
    return std::apply([&](const auto&... h) { return (false || ... || f(h)); }, hooks_);
  }

  // logging.jsonl: a new run starts it empty (a log of an earlier run in the folder must not
  // mix with this one's); a resumed run first rewrites it as the checkpoint's history, so what
  // the killed process logged after its last checkpoint is not there twice.
  std::ofstream open_log() {
    std::ofstream log;
    if (run_dir_.empty()) return log;
    std::filesystem::create_directories(run_dir_);
    const auto file = run_dir_ / "logging.jsonl";
    if (!args_.resume_from_checkpoint.empty()) {
      std::string text;
      for (const auto& e : st_.log_history) text += e.dump() + "\n";
      write_text_atomic(file, text);
      log.open(file, std::ios::app);
    } else {
      log.open(file, std::ios::trunc);
    }
    require(static_cast<bool>(log), "cannot write {}", file.string());
    return log;
  }

  void write_log(std::ofstream& log, const nlohmann::json& entry) {
    st_.log_history.push_back(entry);
    if (tensorboard_) tensorboard_->add_log_entry(entry);
    if (!log.is_open()) return;
    log << entry.dump() << '\n';
    log.flush();
    require(static_cast<bool>(log), "{}: write failed (disk full?): the training log would be incomplete",
            (run_dir_ / "logging.jsonl").string());
  }

  // Everything a checkpoint holds goes back where it came from (train/trainer_state.hpp).
  void resume(Run& run, const nlohmann::json& settings) {
    const auto& dir = args_.resume_from_checkpoint;
    st_ = check_resume(args_, settings, run.total);
    require(std::filesystem::exists(dir / "optimizer.safetensors"),
            "{}: no optimizer.safetensors (saved with --save_only_model true), so an exact resume is not possible; "
            "start a new run from its weights with --adapters {}", dir.string(), dir.string());
    load_trained_weights(dir, model_);
    load_optimizer_state(dir / "optimizer.safetensors", opt_, run.params);
    run.dropout_rng.set_state(st_.dropout_rng);
    run.guard.total = st_.res.skipped_steps;
    run.guard.in_a_row = st_.nonfinite_in_a_row;
    if (st_.hooks.size() == sizeof...(Hooks)) {
      std::size_t i = 0;
      call_hooks([&](auto& h) {
        if constexpr (requires { h.load_state(st_.hooks[i]); }) h.load_state(st_.hooks[i]);
        ++i;
      });
    } else {
      fmt::print("[resume] {} holds state for {} hooks, this trainer has {}: hooks start fresh\n",
                 dir.string(), st_.hooks.size(), sizeof...(Hooks));
    }
    fmt::print("[resume] from {} at step {}\n", dir.string(), st_.res.global_step);
  }

  // The best-model metric of the latest evaluation decides whether this checkpoint is the best
  // (HF's _determine_best_metric, at save time).
  // The latest evaluation's best-model metric, when it improves on the best so far.
  std::optional<double> improved_best() const {
    const std::string metric = args_.best_metric_name();
    if (metric.empty() || st_.last_eval.empty()) return std::nullopt;
    const double v = eval_metric(st_.last_eval, metric, "metric_for_best_model");
    if (!is_improvement(v, st_.res.best_metric, args_.best_is_greater())) return std::nullopt;
    return v;
  }
  void track_best(const std::filesystem::path& dir) {
    const std::optional<double> v = improved_best();
    if (!v) return;
    st_.res.best_metric = *v;
    st_.res.best_model_checkpoint = dir;
  }

  std::string plot_title() const {
    return fmt::format("{}: lr {:g}, {:g} epochs", detail::without_trailing_separator(run_dir_).filename().string(),
                       args_.learning_rate, args_.num_train_epochs);
  }

  void load_best_model() {
    const auto& best = st_.res.best_model_checkpoint;
    if (best.empty()) {
      fmt::print("[train] --load_best_model_at_end: no evaluated checkpoint, keeping the last weights\n");
      return;
    }
    if (best != st_.res.last_checkpoint) load_trained_weights(best, model_);
    fmt::print("[train] best checkpoint {} ({} = {}) loaded\n", best.string(), args_.best_metric_name(),
               st_.res.best_metric);
  }

  // `done`: steps taken by this process (a resumed run's ETA must not count the restored ones).
  void progress(std::int64_t gs, std::int64_t done, std::int64_t total, const nlohmann::json& e, double elapsed) {
    if (quiet_) return;
    const double eta = elapsed / static_cast<double>(std::max<std::int64_t>(1, done)) * static_cast<double>(total - gs);
    auto num = [&](const char* k) { return e.contains(k) && e[k].is_number() ? e[k].get<double>() : std::numeric_limits<double>::quiet_NaN(); };
    display_.line(fmt::format("[train] step {}/{} loss {:.4f} lr {:.3g} grad_norm {:.3f}{} {:.0f} tok/s elapsed {} ETA {}",
                              gs, total, num("loss"), num("learning_rate"), num("grad_norm"),
                              e.contains("token_acc") ? fmt::format(" token_acc {:.3f}", num("token_acc")) : "",
                              num("tokens_per_second"), hms_clock(elapsed), hms_clock(eta)));
  }
  // The model's own memory figure when it has one (a device's), else this process's peak RSS.
  double memory_gib() const {
    if constexpr (requires { model_.memory_gib(); }) return model_.memory_gib();
    else return peak_memory_gib();
  }

  // The checkpoint's contents are taken now (train/checkpoint.hpp's CheckpointContents; a GPU's copies
  // are only queued, and arrive on the write thread); the files are written, published and rotated
  // there (train/background_write.hpp), beside the next steps with --async_save, else before this returns.
  std::filesystem::path save_checkpoint(std::int64_t gs, double epoch, const Run& run) {
    const auto dir = run_dir_ / fmt::format("checkpoint-{}", gs);
    saver_.wait();  // the previous checkpoint is published (or its error thrown) before this one
    const auto t0 = Clock::now();
    if (std::filesystem::exists(dir) && checkpoint_run_id(dir) != run_id_)  // appeared since the run began
      fail("{} was not written by this run; not replacing it (the checkpoint of step {} is not saved)", dir.string(), gs);
    track_best(dir);
    st_.hooks = nlohmann::json::array();
    call_hooks([&](auto& h) {
      if constexpr (requires { h.state(); }) st_.hooks.push_back(h.state()); else st_.hooks.push_back(nullptr);
    });
    CheckpointContents c{.tensors = take_checkpoint_tensors(opt_, run.params, !args_.save_only_model),
                         .masters = Model::Precision::storage != DType::F32,
                         .texts = checkpoint_files_,
                         .write_weights = trained_weights_writer(model_, base_model_)};
    c.texts[kTrainerStateFile] = trainer_state_json(st_, epoch, state_counts(run, gs)).dump(1) + "\n";
    c.texts[kPeftStateFile] = peft_state_json(st_, args_.to_json()).dump(1) + "\n";
    const double taken = seconds_since(t0);  // what the steps wait for under --async_save
    std::vector<std::filesystem::path> keep = {dir};
    if (!st_.res.best_model_checkpoint.empty()) keep.push_back(st_.res.best_model_checkpoint);
    if (!args_.resume_from_checkpoint.empty())
      keep.push_back(run_dir_ / detail::without_trailing_separator(args_.resume_from_checkpoint).filename());
    saver_.start([this, dir, c = std::move(c), keep = std::move(keep), limit = args_.save_total_limit]() mutable {
      write_directory_atomic(dir, [&](const std::filesystem::path& staging) { c.write(staging); });
      warn_if_servers_refuse(dir);  // only the write thread touches its flag
      rotate_checkpoints(run_dir_, limit, run_id_, keep);  // run_dir_ and run_id_ are fixed during a run
    });
    if (!args_.async_save) saver_.wait();
    if (!quiet_)
      display_.line(args_.async_save ? fmt::format("[save] {}: contents taken in {:.2f} s, files written beside training",
                                                   dir.string(), taken)
                                     : fmt::format("[save] {} in {:.2f} s", dir.string(), seconds_since(t0)));
    // The pictures are not part of the checkpoint: drawn beside the next steps, from curves read now
    // (not after the last step: end_run draws the final ones).
    if (gs < run.total)
      plotter_.start([run_dir = run_dir_, title = plot_title(), c = read_run_curves(run_dir_, &st_.res)] {
        write_run_plots(run_dir, title, c);
      });
    return dir;
  }

  // Said once, at the first save (peft_adapter.hpp's modules_to_save_warning says why).
  void warn_if_servers_refuse(const std::filesystem::path& dir) {
    if (warned_modules_to_save_) return;
    if (const auto w = modules_to_save_warning(dir)) {
      warned_modules_to_save_ = true;
      fmt::print(stderr, "[warning] {}\n", *w);
    }
  }

  Model& model_;
  TrainingArguments args_;
  Opt opt_;
  Sched sched_;
  std::tuple<Hooks...> hooks_;
  std::string base_model_;
  std::filesystem::path run_dir_;
  std::map<std::string, std::string> checkpoint_files_;
  bool quiet_ = false;
  std::string run_id_;
  bool warned_modules_to_save_ = false;
  ProgressDisplay display_;
  dist::Communicator* comm_ = nullptr;
  TrainerState st_;
  std::optional<TensorBoardWriter> tensorboard_;
  // Last: destroyed first, so a write under way finishes while the rest is alive.
  BackgroundWrite plotter_;  // a save's pictures (train/loss_plot.hpp)
  BackgroundWrite saver_;
};

}  // namespace peft
