// The training loop, HF Trainer's semantics written out:
//   - micro-batches of per_device_train_batch_size samples, packed without padding;
//   - an optimizer step every gradient_accumulation_steps micro-batches (the last step of an
//     epoch takes what is left); its loss is sum CE over all its label tokens / their count, and
//     each micro-batch's backward is scaled by 1 / that count, so accumulation equals one big batch;
//   - clip the global gradient norm, AdamW at lr * schedule(step), zero the gradients;
//   - log every logging_steps (loss averaged over the steps since the last log), evaluate every
//     eval_steps, checkpoint every save_steps and at the end, keep save_total_limit checkpoints.
// Trainer<Model, Optimizer, Schedule, Hooks...>: hooks are small policy types called at the
// points named in train/hooks.hpp.
#pragma once
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <tuple>
#include <vector>

#include "peft/core/rng.hpp"
#include "peft/data/packed_batch.hpp"
#include "peft/optim/optimizer.hpp"
#include "peft/optim/schedules.hpp"
#include "peft/train/checkpoint.hpp"
#include "peft/train/grad_norm.hpp"
#include "peft/train/hooks.hpp"
#include "peft/train/training_arguments.hpp"

namespace peft {

struct TrainResult {
  std::int64_t global_step = 0;
  std::vector<double> step_losses, step_grad_norms, step_lrs;
  double train_loss = 0;  // mean of step losses
  double seconds = 0;
  std::int64_t tokens = 0;
  std::filesystem::path last_checkpoint;
};

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

  std::int64_t steps_per_epoch(std::size_t samples) const {
    const auto micro = (static_cast<std::int64_t>(samples) + args_.per_device_train_batch_size - 1) /
                       args_.per_device_train_batch_size;
    return std::max<std::int64_t>(1, (micro + args_.gradient_accumulation_steps - 1) / args_.gradient_accumulation_steps);
  }
  std::int64_t total_steps(std::size_t samples) const {
    if (args_.max_steps > 0) return args_.max_steps;
    return static_cast<std::int64_t>(std::ceil(args_.num_train_epochs * static_cast<double>(steps_per_epoch(samples))));
  }

  TrainResult train(const std::vector<Sample>& train, const std::vector<Sample>* eval = nullptr) {
    require(!train.empty(), "the training set is empty");
    const ParameterList params = model_.trainable_parameters();
    require(!params.empty(), "the model has no trainable parameters (check --target_modules / --train_type)");
    opt_.init(params);
    model_.zero_grad();

    const std::int64_t per_epoch = steps_per_epoch(train.size());
    const std::int64_t total = total_steps(train.size());
    const std::int64_t warmup = warmup_steps(total, args_.warmup_ratio, args_.warmup_steps);
    const std::int64_t eval_every = args_.eval_steps > 0 ? args_.eval_steps : args_.save_steps;
    Rng dropout_rng(args_.seed);
    std::ofstream log;
    if (!run_dir_.empty()) {
      std::filesystem::create_directories(run_dir_);
      log.open(run_dir_ / "logging.jsonl", std::ios::app);
      require(static_cast<bool>(log), "cannot write {}", (run_dir_ / "logging.jsonl").string());
    }

    TrainResult res;
    const auto t0 = std::chrono::steady_clock::now();
    double interval_loss = 0;
    std::int64_t interval_steps = 0, interval_tokens = 0;
    auto interval_t0 = t0;
    std::vector<std::size_t> order;
    for (std::int64_t step = 0; step < total; ++step) {
      const std::int64_t epoch = step / per_epoch, in_epoch = step % per_epoch;
      if (in_epoch == 0) order = epoch_order(train.size(), epoch);
      // The micro-batches of this optimizer step.
      const std::size_t bs = static_cast<std::size_t>(args_.per_device_train_batch_size);
      const std::size_t first = static_cast<std::size_t>(in_epoch * args_.gradient_accumulation_steps) * bs;
      const std::size_t last = std::min(order.size(), first + static_cast<std::size_t>(args_.gradient_accumulation_steps) * bs);
      std::vector<PackedBatch> micro;
      std::int64_t label_tokens = 0, tokens = 0;
      for (std::size_t i = first; i < last; i += bs) {
        PackedBatch b;
        for (std::size_t j = i; j < std::min(last, i + bs); ++j) b.add(train[order[j]]);
        label_tokens += b.label_tokens;
        tokens += static_cast<std::int64_t>(b.tokens());
        micro.push_back(std::move(b));
      }
      double loss_sum = 0;
      const float scale = label_tokens > 0 ? 1.0f / static_cast<float>(label_tokens) : 0.0f;
      for (const auto& b : micro) loss_sum += model_.forward_backward(b, scale, &dropout_rng).sum;
      const double loss = label_tokens > 0 ? loss_sum / static_cast<double>(label_tokens) : 0.0;
      const double grad_norm = clip_grad_norm(params, args_.max_grad_norm);
      const double lr = args_.learning_rate * sched_.factor(step, warmup, total);
      if (label_tokens > 0) opt_.step(params, lr);
      model_.zero_grad();

      res.step_losses.push_back(loss);
      res.step_grad_norms.push_back(grad_norm);
      res.step_lrs.push_back(lr);
      res.tokens += tokens;
      res.global_step = step + 1;
      interval_loss += loss;
      ++interval_steps;
      interval_tokens += tokens;
      call_hooks([&](auto& h) { if constexpr (requires { h.on_step_end(res); }) h.on_step_end(res); });

      const std::int64_t gs = step + 1;
      const bool last_step = gs == total;
      if (gs % args_.logging_steps == 0 || (gs == 1 && args_.logging_first_step) || last_step) {
        const auto now = std::chrono::steady_clock::now();
        const double elapsed = std::chrono::duration<double>(now - t0).count();
        const double dt = std::chrono::duration<double>(now - interval_t0).count();
        nlohmann::json entry = {{"step", gs},
                                {"loss", interval_loss / static_cast<double>(interval_steps)},
                                {"grad_norm", grad_norm},
                                {"learning_rate", lr},
                                {"epoch", static_cast<double>(gs) / static_cast<double>(per_epoch)},
                                {"tokens_per_second", dt > 0 ? static_cast<double>(interval_tokens) / dt : 0.0},
                                {"elapsed_s", elapsed}};
        call_hooks([&](auto& h) { if constexpr (requires { h.on_log(entry); }) h.on_log(entry); });
        write_log(log, entry);
        progress(gs, total, entry, elapsed);
        interval_loss = 0;
        interval_steps = interval_tokens = 0;
        interval_t0 = now;
      }
      if (eval && !eval->empty() && (gs % eval_every == 0 || last_step)) {
        nlohmann::json entry = {{"step", gs}, {"eval_loss", evaluate(*eval).mean()},
                                {"epoch", static_cast<double>(gs) / static_cast<double>(per_epoch)}};
        call_hooks([&](auto& h) { if constexpr (requires { h.on_evaluate(entry); }) h.on_evaluate(entry); });
        write_log(log, entry);
        if (!quiet_) fmt::print(stderr, "[eval] step {} eval_loss {:.4f}\n", gs, entry["eval_loss"].get<double>());
      }
      if (!run_dir_.empty() && (gs % args_.save_steps == 0 || last_step))
        res.last_checkpoint = save_checkpoint(gs, params, res);
    }
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    res.train_loss = std::accumulate(res.step_losses.begin(), res.step_losses.end(), 0.0) /
                     static_cast<double>(res.step_losses.size());
    call_hooks([&](auto& h) { if constexpr (requires { h.on_train_end(res); }) h.on_train_end(res); });
    return res;
  }

  // Token-weighted mean CE over a dataset, in batches of per_device_eval_batch_size.
  LossSum evaluate(const std::vector<Sample>& data) {
    LossSum total;
    const auto bs = static_cast<std::size_t>(args_.per_device_eval_batch_size);
    for (std::size_t i = 0; i < data.size(); i += bs) {
      PackedBatch b;
      for (std::size_t j = i; j < std::min(data.size(), i + bs); ++j) b.add(data[j]);
      const LossSum r = model_.evaluate(b);
      total.sum += r.sum;
      total.tokens += r.tokens;
    }
    return total;
  }

  const Opt& optimizer() const { return opt_; }
  std::tuple<Hooks...>& hooks() { return hooks_; }

 private:
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

  template <class F> void call_hooks(F&& f) { std::apply([&](auto&... h) { (f(h), ...); }, hooks_); }

  static void write_log(std::ofstream& log, const nlohmann::json& entry) {
    if (!log.is_open()) return;
    log << entry.dump() << '\n';
    log.flush();
  }

  void progress(std::int64_t gs, std::int64_t total, const nlohmann::json& e, double elapsed) const {
    if (quiet_) return;
    const double eta = elapsed / static_cast<double>(gs) * static_cast<double>(total - gs);
    fmt::print(stderr, "[train] step {}/{} loss {:.4f} lr {:.3g} grad_norm {:.3f} {:.0f} tok/s elapsed {} ETA {}\n", gs,
               total, e["loss"].get<double>(), e["learning_rate"].get<double>(), e["grad_norm"].get<double>(),
               e["tokens_per_second"].get<double>(), clock(elapsed), clock(eta));
  }
  static std::string clock(double s) {
    const auto t = static_cast<long long>(s + 0.5);
    return fmt::format("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
  }

  std::filesystem::path save_checkpoint(std::int64_t gs, const ParameterList& params, const TrainResult& res) {
    const auto dir = run_dir_ / fmt::format("checkpoint-{}", gs);
    write_directory_atomic(dir, [&](const std::filesystem::path& staging) {
      save_trained_weights(staging, model_, base_model_);
      if constexpr (std::is_same_v<Opt, AdamW>)
        if (!args_.save_only_model) save_adamw_state(staging / "optimizer.safetensors", opt_, params);
      nlohmann::json state = {{"global_step", gs}, {"train_loss_per_step", res.step_losses},
                              {"grad_norm_per_step", res.step_grad_norms}, {"learning_rate_per_step", res.step_lrs},
                              {"args", args_.to_json()}};
      write_text_atomic(staging / "trainer_state.json", state.dump(1) + "\n");
    });
    rotate_checkpoints(run_dir_, args_.save_total_limit, {dir});
    return dir;
  }

  Model& model_;
  TrainingArguments args_;
  Opt opt_;
  Sched sched_;
  std::tuple<Hooks...> hooks_;
  std::string base_model_;
  std::filesystem::path run_dir_;
  bool quiet_ = false;
};

}  // namespace peft
