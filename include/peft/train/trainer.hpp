// The training loop, HF Trainer's semantics written out:
//   - micro-batches of per_device_train_batch_size samples, packed without padding;
//   - an optimizer step every gradient_accumulation_steps micro-batches (the last step of an
//     epoch takes what is left); its loss is sum CE over all its label tokens / their count, and
//     each micro-batch's backward is scaled by 1 / that count, so accumulation equals one big batch;
//   - clip the global gradient norm, AdamW at lr * schedule(step), zero the gradients;
//   - a step whose loss or gradient norm is NaN/Inf takes no update (train/numerical_guard.hpp);
//   - log every logging_steps (loss and token accuracy over the steps since the last log, with
//     ms-swift's progress keys: train/progress.hpp), evaluate every
//     eval_steps, checkpoint every save_steps and at the end, keep save_total_limit checkpoints
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
// Trainer<Model, Optimizer, Schedule, Hooks...>: hooks are small policy types called at the
// points named in train/hooks.hpp.
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
#include "peft/optim/optimizer.hpp"
#include "peft/optim/schedules.hpp"
#include "peft/train/checkpoint.hpp"
#include "peft/train/best_model.hpp"
#include "peft/train/evaluate.hpp"
#include "peft/train/grad_norm.hpp"
#include "peft/train/hooks.hpp"
#include "peft/train/loss_plot.hpp"
#include "peft/train/numerical_guard.hpp"
#include "peft/train/result_settings.hpp"
#include "peft/train/run_folder.hpp"
#include "peft/train/stop_signal.hpp"
#include "peft/train/tensorboard_writer.hpp"
#include "peft/train/progress.hpp"
#include "peft/train/trainer_state.hpp"
#include "peft/train/training_arguments.hpp"

namespace peft {

// The optimizer's calls go through these free functions so that a backend whose parameters live
// on a device overloads them for its parameter-list type (optim/cuda/device_parameters.cuh), as
// it does clip_grad_norm and save_adamw_state; host parameter lists use the optimizer's members.
template <class Opt, class Params>
void optimizer_init(Opt& opt, const Params& params) { opt.init(params); }
template <class Opt, class Params>
void optimizer_step(Opt& opt, const Params& params, double lr) { opt.step(params, lr); }

template <class Model, Optimizer Opt = AdamW, LrSchedule Sched = NamedSchedule, class... Hooks>
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

  std::int64_t steps_per_epoch(std::size_t samples) const {
    const auto micro = (static_cast<std::int64_t>(samples) + args_.per_device_train_batch_size - 1) /
                       args_.per_device_train_batch_size;
    const std::int64_t per_step = args_.gradient_accumulation_steps * world_size();
    return std::max<std::int64_t>(1, (micro + per_step - 1) / per_step);
  }
  std::int64_t total_steps(std::size_t samples) const {
    if (args_.max_steps > 0) return args_.max_steps;
    return static_cast<std::int64_t>(std::ceil(args_.num_train_epochs * static_cast<double>(steps_per_epoch(samples))));
  }

  TrainResult train(const std::vector<Sample>& train, const std::vector<Sample>* eval = nullptr) {
    require(!train.empty(), "the training set is empty");
    const auto params = model_.trainable_parameters();
    require(!params.empty(), "the model has no trainable parameters (check --target_modules / --train_type)");
    optimizer_init(opt_, params);
    model_.zero_grad();

    const std::int64_t per_epoch = steps_per_epoch(train.size());
    const std::int64_t total = total_steps(train.size());
    const std::int64_t warmup = warmup_steps(total, args_.warmup_ratio, args_.warmup_steps);
    const std::int64_t eval_every = args_.eval_steps > 0 ? args_.eval_steps : args_.save_steps;
    Rng dropout_rng(args_.seed);
    NonFiniteGuard guard{args_.max_consecutive_nonfinite_steps};
    st_ = TrainerState{};
    const nlohmann::json settings = result_settings(args_, train, lora_config_or_null(), world_size());
    if (!args_.resume_from_checkpoint.empty()) resume(params, dropout_rng, guard, total, settings);
    st_.result_settings = settings;
    if (run_id_.empty()) run_id_ = continues_checkpoint_run() ? st_.run_id : new_run_id();
    st_.run_id = run_id_;
    // Other ranks draw their own dropout masks (rank 0 keeps the single-process stream; a
    // checkpoint holds rank 0's generator, so these restart from (seed, rank, step) on resume).
    if (rank() > 0)
      dropout_rng = Rng(args_.seed * 1000003ULL + 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(rank()) +
                        static_cast<std::uint64_t>(st_.res.global_step));
    TrainResult& res = st_.res;
    std::ofstream log = open_log();
    // ms-swift's logging_dir: <run>/runs. A resumed run starts a new event file with what it logs.
    if (!run_dir_.empty() && args_.reports_tensorboard()) tensorboard_.emplace(run_dir_ / "runs");
    call_hooks([&](auto& h) { if constexpr (requires { h.on_train_begin(); }) h.on_train_begin(); });
    const bool evaluating = (eval && !eval->empty()) || any_hook([](const auto& h) {
      if constexpr (requires { h.evaluates(); }) return h.evaluates(); else return false;
    });

    const std::int64_t start_step = res.global_step;
    const auto t0 = std::chrono::steady_clock::now();
    auto interval_t0 = t0;
    std::vector<std::size_t> order;
    double& interval_correct = st_.interval_correct;  // kept in checkpoints: token_acc resumes exactly
    std::int64_t& interval_label_tokens = st_.interval_label_tokens;
    const std::size_t pack_cap = accumulation_pack_cap();
    for (std::int64_t step = res.global_step; step < total; ++step) {
      const std::int64_t epoch = step / per_epoch, in_epoch = step % per_epoch;
      if (in_epoch == 0 || order.empty()) order = epoch_order(train.size(), epoch);
      // The micro-batches of this optimizer step.
      const std::size_t bs = static_cast<std::size_t>(args_.per_device_train_batch_size);
      const std::int64_t per_step = args_.gradient_accumulation_steps * world_size();  // micro-batches, all ranks
      const std::size_t first = static_cast<std::size_t>(in_epoch * per_step) * bs;
      const std::size_t last = std::min(order.size(), first + static_cast<std::size_t>(per_step) * bs);
      std::vector<PackedBatch> micro;
      std::int64_t label_tokens = 0, tokens = 0;
      std::size_t mb = 0;
      for (std::size_t i = first; i < last; i += bs, ++mb) {
        if (static_cast<int>(mb % static_cast<std::size_t>(world_size())) != rank()) {  // another rank's: count only
          for (std::size_t j = i; j < std::min(last, i + bs); ++j) {
            label_tokens += static_cast<std::int64_t>(train[order[j]].label_tokens());
            tokens += static_cast<std::int64_t>(train[order[j]].size());
          }
          continue;
        }
        std::size_t mb_tokens = 0;
        for (std::size_t j = i; j < std::min(last, i + bs); ++j) mb_tokens += train[order[j]].size();
        if (micro.empty() || micro.back().tokens() + mb_tokens > pack_cap) micro.emplace_back();
        PackedBatch& b = micro.back();
        const std::int64_t before = b.label_tokens;
        for (std::size_t j = i; j < std::min(last, i + bs); ++j) b.add(train[order[j]]);
        label_tokens += b.label_tokens - before;
        tokens += static_cast<std::int64_t>(mb_tokens);
      }
      double loss_sum = 0, correct = 0;
      bool accuracy_known = true;  // a model that does not count argmax hits (the CUDA one) reports -1
      const float scale = label_tokens > 0 ? 1.0f / static_cast<float>(label_tokens) : 0.0f;
      for (const auto& b : micro) {
        const LossSum ls = model_.forward_backward(b, scale, &dropout_rng);
        loss_sum += ls.sum;
        if (ls.correct < 0) accuracy_known = false;
        else correct += static_cast<double>(ls.correct);
      }
      // A stop signal ends the run after this step; with several ranks, any rank's signal stops
      // all at the same step (it travels with the loss; the others report SIGTERM).
      int stop = stop_signal();
      if (comm_) {  // one bucket of gradients, then the loss (and hits) for the log; both before the norm
        all_reduce_grads(*comm_, params);
        double reduced[3] = {loss_sum, stop != 0 ? 1.0 : 0.0, accuracy_known ? correct : 0.0};
        comm_->all_reduce_sum(reduced, 3);
        loss_sum = reduced[0];
        stop = reduced[1] > 0 ? (stop != 0 ? stop : SIGTERM) : 0;
        if (accuracy_known) correct = reduced[2];
      }
      const double loss = label_tokens > 0 ? loss_sum / static_cast<double>(label_tokens) : 0.0;
      const double grad_norm = clip_grad_norm(params, args_.max_grad_norm);
      const double lr = args_.learning_rate * sched_.factor(step, warmup, total);
      const bool skipped = guard.skip(step + 1, loss, grad_norm);
      if (label_tokens > 0 && !skipped) optimizer_step(opt_, params, lr);
      model_.zero_grad();

      res.step_losses.push_back(loss);
      res.step_grad_norms.push_back(grad_norm);
      res.step_lrs.push_back(lr);
      res.tokens += tokens;
      res.global_step = step + 1;
      res.skipped_steps = guard.total;
      if (!skipped) {
        st_.interval_loss += loss;
        ++st_.interval_steps;
      }
      interval_correct = accuracy_known && interval_correct >= 0 ? interval_correct + correct : -1.0;
      interval_label_tokens += label_tokens;
      st_.interval_tokens += tokens;
      call_hooks([&](auto& h) { if constexpr (requires { h.on_step_end(res); }) h.on_step_end(res); });

      const std::int64_t gs = step + 1;
      bool last_step = gs == total;
      if (!comm_) stop = stop_signal();  // one process: also a signal that came during this step's hooks
      if (stop != 0 && !last_step) {
        res.stop_signal = stop;
        last_step = true;
        fmt::print(stderr, "[train] {} received: stopping after step {} with a checkpoint\n", stop_signal_name(stop), gs);
      }
      const double epoch_now = static_cast<double>(gs) / static_cast<double>(per_epoch);
      // A log entry for the steps since the last one (also written when early stopping ends the run).
      auto log_train = [&] {
        const auto now = std::chrono::steady_clock::now();
        const double elapsed = std::chrono::duration<double>(now - t0).count();
        const double dt = std::chrono::duration<double>(now - interval_t0).count();
        nlohmann::json entry = {
            {"step", gs},
            {"loss", detail::finite_or_null(st_.interval_loss / static_cast<double>(st_.interval_steps))},
            {"grad_norm", detail::finite_or_null(grad_norm)},
            {"learning_rate", lr},
            {"epoch", epoch_now},
            {"skipped_steps", guard.total},
            {"tokens_per_second", dt > 0 ? static_cast<double>(st_.interval_tokens) / dt : 0.0},
            {"elapsed_s", elapsed}};
        if (interval_correct >= 0 && interval_label_tokens > 0)
          entry["token_acc"] = interval_correct / static_cast<double>(interval_label_tokens);
        add_swift_progress_keys(entry, gs, total, gs - start_step, elapsed, memory_gib());
        call_hooks([&](auto& h) { if constexpr (requires { h.on_log(entry); }) h.on_log(entry); });
        write_log(log, entry);
        progress(gs, gs - start_step, total, entry, elapsed);
        st_.interval_loss = 0;
        st_.interval_steps = st_.interval_tokens = 0;
        interval_correct = 0;
        interval_label_tokens = 0;
        interval_t0 = now;
      };
      if (!quiet_)
        display_.bar(gs, total, gs - start_step, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      const bool logged = gs % args_.logging_steps == 0 || (gs == 1 && args_.logging_first_step) || last_step;
      if (logged) log_train();
      if (evaluating && (gs % eval_every == 0 || (last_step && !res.stop_signal))) {
        nlohmann::json entry = {{"step", gs}, {"epoch", epoch_now}};
        if (eval && !eval->empty()) entry["eval_loss"] = evaluate(*eval).mean();
        call_hooks([&](auto& h) { if constexpr (requires { h.on_evaluate(entry); }) h.on_evaluate(entry); });
        write_log(log, entry);
        st_.last_eval = entry;
        if (!quiet_) display_.line(fmt::format("[eval] {}", entry.dump()));
        if (any_hook([](const auto& h) { if constexpr (requires { h.should_stop(); }) return h.should_stop(); else return false; })) {
          res.stopped_early = !last_step;
          if (!logged) log_train();
          last_step = true;
          display_.line(fmt::format("[train] early stopping at step {}: no improvement in the last evaluations", gs));
        }
      }
      if (!run_dir_.empty() && (gs % args_.save_steps == 0 || last_step)) {
        st_.dropout_rng = dropout_rng.state();
        st_.nonfinite_in_a_row = guard.in_a_row;
        res.last_checkpoint = save_checkpoint(gs, epoch_now, total, params);
      }
      if (last_step) break;
    }
    if (!quiet_) display_.finish();
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double finite_sum = 0;
    std::int64_t finite_n = 0;
    for (double l : res.step_losses)
      if (std::isfinite(l)) finite_sum += l, ++finite_n;
    res.train_loss = finite_n ? finite_sum / static_cast<double>(finite_n) : std::numeric_limits<double>::quiet_NaN();
    if (args_.load_best_model_at_end) load_best_model();
    if (!run_dir_.empty()) write_run_plots(run_dir_, plot_title(), &st_.res);
    call_hooks([&](auto& h) { if constexpr (requires { h.on_train_end(res); }) h.on_train_end(res); });
    return res;
  }

  // Token-weighted mean CE over a dataset, in batches of per_device_eval_batch_size.
  LossSum evaluate(const std::vector<Sample>& data) {
    return evaluate_loss(model_, data, args_.per_device_eval_batch_size);
  }

  const Opt& optimizer() const { return opt_; }
  std::tuple<Hooks...>& hooks() { return hooks_; }

 private:
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
  // Sample order of an epoch: file order, or a shuffle seeded by (seed, epoch) so any epoch's
  // order can be recomputed (exact resume) without replaying earlier ones.
  std::vector<std::size_t> epoch_order(std::size_t n, std::int64_t epoch) const {
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    if (args_.train_dataloader_shuffle) {
      Rng rng(args_.seed * 1000003ULL + static_cast<std::uint64_t>(epoch));
      rng.shuffle(order.begin(), order.end());
    }
    return order;
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
    if (args_.resume_from_checkpoint.empty() || st_.run_id.empty() || run_dir_.empty()) return false;
    std::error_code ec;
    const auto from = std::filesystem::weakly_canonical(
        std::filesystem::absolute(detail::without_trailing_separator(args_.resume_from_checkpoint)).parent_path(), ec);
    return !ec && from == std::filesystem::weakly_canonical(std::filesystem::absolute(run_dir_), ec);
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
  template <class Params>
  void resume(const Params& params, Rng& dropout_rng, NonFiniteGuard& guard, std::int64_t total,
              const nlohmann::json& settings) {
    const auto& dir = args_.resume_from_checkpoint;
    require(std::filesystem::is_directory(dir), "--resume_from_checkpoint {}: not a directory", dir.string());
    st_ = read_trainer_state(dir / "trainer_state.json");
    check_resume_settings(settings);
    require(st_.res.global_step < total, "--resume_from_checkpoint {}: it is at step {} of {}: nothing left to train",
            dir.string(), st_.res.global_step, total);
    load_trained_weights(dir, model_);
    if constexpr (std::is_same_v<Opt, AdamW>) load_adamw_state(dir / "optimizer.safetensors", opt_, params);
    dropout_rng.set_state(st_.dropout_rng);
    guard.total = st_.res.skipped_steps;
    guard.in_a_row = st_.nonfinite_in_a_row;
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

  // The settings that change the result must be the checkpoint's (train/result_settings.hpp).
  void check_resume_settings(const nlohmann::json& now) const {
    const auto file = (args_.resume_from_checkpoint / "trainer_state.json").string();
    if (st_.result_settings.is_null()) {
      fmt::print(stderr, "[resume] {} records no settings (an older peft): cannot check that they match\n", file);
      return;
    }
    require(st_.result_settings.is_object(), "{}: field 'result_settings' is not an object", file);
    const auto diff = settings_differences(st_.result_settings, now);
    if (diff.empty()) return;
    const std::string list = fmt::format("{}", fmt::join(diff, "\n  "));
    require(args_.ignore_args_mismatch,
            "--resume_from_checkpoint {}: this run's settings differ from the checkpoint's, so the resumed run would "
            "not continue the same training:\n  {}\n(pass --ignore_args_mismatch true to resume anyway)",
            args_.resume_from_checkpoint.string(), list);
    fmt::print(stderr, "[resume] --ignore_args_mismatch: resuming although settings differ:\n  {}\n", list);
  }

  // The best-model metric of the latest evaluation decides whether this checkpoint is the best
  // (HF's _determine_best_metric, at save time).
  void track_best(const std::filesystem::path& dir) {
    const std::string metric = args_.best_metric_name();
    if (metric.empty() || st_.last_eval.empty()) return;
    const double v = eval_metric(st_.last_eval, metric, "metric_for_best_model");
    if (is_improvement(v, st_.res.best_metric, args_.best_is_greater())) {
      st_.res.best_metric = v;
      st_.res.best_model_checkpoint = dir;
    }
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
                              num("tokens_per_second"), clock(elapsed), clock(eta)));
  }
  // The model's own memory figure when it has one (a device's), else this process's peak RSS.
  double memory_gib() const {
    if constexpr (requires { model_.memory_gib(); }) return model_.memory_gib();
    else return peak_memory_gib();
  }
  static std::string clock(double s) {
    const auto t = static_cast<long long>(s + 0.5);
    return fmt::format("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
  }

  template <class Params>
  std::filesystem::path save_checkpoint(std::int64_t gs, double epoch, std::int64_t total, const Params& params) {
    const auto dir = run_dir_ / fmt::format("checkpoint-{}", gs);
    track_best(dir);
    st_.hooks = nlohmann::json::array();
    call_hooks([&](auto& h) {
      if constexpr (requires { h.state(); }) st_.hooks.push_back(h.state()); else st_.hooks.push_back(nullptr);
    });
    write_directory_atomic(dir, [&](const std::filesystem::path& staging) {
      save_trained_weights(staging, model_, base_model_);
      if constexpr (std::is_same_v<Opt, AdamW>)
        if (!args_.save_only_model)
          save_adamw_state(staging / "optimizer.safetensors", opt_, params, Model::Precision::storage != DType::F32);
      for (const auto& [name, text] : checkpoint_files_) write_text_atomic(staging / name, text);
      write_text_atomic(staging / "trainer_state.json",
                        trainer_state_json(st_, epoch, args_.to_json(), total).dump(1) + "\n");
    });
    warn_if_servers_refuse(dir);
    std::vector<std::filesystem::path> keep = {dir};
    if (!st_.res.best_model_checkpoint.empty()) keep.push_back(st_.res.best_model_checkpoint);
    if (!args_.resume_from_checkpoint.empty())
      keep.push_back(run_dir_ / detail::without_trailing_separator(args_.resume_from_checkpoint).filename());
    rotate_checkpoints(run_dir_, args_.save_total_limit, run_id_, keep);
    write_run_plots(run_dir_, plot_title(), &st_.res);
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
};

}  // namespace peft
