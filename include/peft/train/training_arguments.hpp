// The trainer's knobs, named and defaulted as HF TrainingArguments / ms-swift name them, so a
// `swift sft` command line maps onto them flag for flag.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft/core/error.hpp"

namespace peft {

struct TrainingArguments {
  double learning_rate = 1e-4;
  double num_train_epochs = 1;
  std::int64_t max_steps = -1;  // > 0 overrides epochs
  std::int64_t per_device_train_batch_size = 1;
  std::int64_t per_device_eval_batch_size = 1;
  std::int64_t gradient_accumulation_steps = 1;
  // Packing a step's micro-batches into fewer forward/backward calls of at most this many tokens:
  // the same update (each call is scaled by the step's label tokens), one read of the weights per
  // call instead of one per micro-batch. -1: the model's own choice (a GPU model packs up to its
  // planned micro-batch size, the CPU one does not, keeping HF's summation order); 0: off.
  std::int64_t accumulation_pack_tokens = -1;
  double max_grad_norm = 1.0;  // 0 disables clipping
  double weight_decay = 0.1;   // ms-swift's default
  double adam_beta1 = 0.9, adam_beta2 = 0.95, adam_epsilon = 1e-8;  // ms-swift's defaults
  // HF's --optim: "adamw_torch" (torch.optim.AdamW, the default) or "sgd" (torch.optim.SGD, with
  // weight_decay coupled as torch's L2 term and sgd_momentum, peft's own flag: HF's sgd takes
  // torch's default momentum 0). train/optimizer_choice.hpp builds the optimizer from these.
  std::string optim = "adamw_torch";
  double sgd_momentum = 0.0;
  std::string lr_scheduler_type = "cosine";
  double warmup_ratio = 0.0;
  std::int64_t warmup_steps = 0;
  std::uint64_t seed = 42;
  // HF's data_seed: the training sampler's seed (each epoch's order); unset, it is `seed`. ms-swift
  // hands HF its --data_seed (default 42), so there --seed alone leaves the order as it was.
  std::optional<std::uint64_t> data_seed;
  std::uint64_t loader_seed() const { return data_seed.value_or(seed); }
  bool train_dataloader_shuffle = true;
  std::int64_t logging_steps = 5;
  bool logging_first_step = true;
  std::int64_t eval_steps = 0;  // 0: evaluate at save steps (ms-swift: eval_steps defaults to save_steps)
  std::int64_t save_steps = 500;
  // HF's IntervalStrategy: "steps" (every eval_steps / save_steps, and at the last step), "epoch"
  // (at each epoch's last step, and at the last step), "no" (never: no evaluation entries; no
  // checkpoint at all, not even at the end or on a stop signal).
  std::string eval_strategy = "steps", save_strategy = "steps";
  std::int64_t save_total_limit = -1;  // < 0 keeps all
  std::filesystem::path output_dir = "output";
  bool save_only_model = false;
  // Write each checkpoint's files on a thread of their own while the next steps run (the
  // tensors are copied to host memory at the save's step first). On by default: a save then costs
  // the steps its snapshot only (ms-swift's `swift sft` has no such flag and saves in line;
  // Megatron-SWIFT's --async_save is off by default). A process killed outright (SIGKILL, power)
  // while the files are written has the checkpoint before it, whole, not this one; SIGINT /
  // SIGTERM, the end of training and the next save wait for it. false: in line, as HF's Trainer.
  bool async_save = true;
  // Exact resume: a checkpoint-<N> folder written by this trainer.
  std::filesystem::path resume_from_checkpoint;
  // A resume whose result-changing settings (train/result_settings.hpp) differ from the
  // checkpoint's is an error unless this is set.
  bool ignore_args_mismatch = false;
  // Best checkpoint (HF's names): the metric is an eval entry's key; "loss" means "eval_loss"
  // (HF prefixes "eval_"). greater_is_better unset: true unless the name ends in "loss", as HF.
  std::string metric_for_best_model;
  std::optional<bool> greater_is_better;
  bool load_best_model_at_end = false;
  // Numerical guard: a step whose loss or gradient norm is NaN/Inf is skipped; this many in a row
  // stop the run (a diverged run does not recover by itself).
  std::int64_t max_consecutive_nonfinite_steps = 5;
  // HF's report_to, the one integration written here: TensorBoard event files in <run>/runs/
  // (train/tensorboard_writer.hpp); empty or "none": no events.
  std::vector<std::string> report_to;
  std::filesystem::path logging_dir;  // HF's: where the event files go; empty: <run>/runs
  bool reports_tensorboard() const {
    return std::find(report_to.begin(), report_to.end(), "tensorboard") != report_to.end() ||
           std::find(report_to.begin(), report_to.end(), "all") != report_to.end();
  }

  // Steps between evaluations under eval_strategy "steps": eval_steps, else save_steps (ms-swift).
  std::int64_t eval_interval() const { return eval_steps > 0 ? eval_steps : save_steps; }
  // HF's IntervalStrategy: whether step gs (an epoch has per_epoch steps; `last`: the run's last
  // step, which evaluates and saves unless the strategy is "no") evaluates / saves a checkpoint.
  bool evaluates_at(std::int64_t gs, std::int64_t per_epoch, bool last) const {
    return interval_due(eval_strategy, gs, per_epoch, eval_interval(), last);
  }
  // Under "best" (HF's SaveStrategy.BEST) a step may save where it evaluates; the trainer saves
  // there when the evaluation improves best_metric_name().
  bool saves_at(std::int64_t gs, std::int64_t per_epoch, bool last) const {
    if (save_strategy == "best") return evaluates_at(gs, per_epoch, last);
    return interval_due(save_strategy, gs, per_epoch, save_steps, last);
  }
  static bool interval_due(const std::string& strategy, std::int64_t gs, std::int64_t per_epoch, std::int64_t every,
                           bool last) {
    if (strategy == "no") return false;
    return last || gs % (strategy == "epoch" ? per_epoch : every) == 0;
  }

  // "loss" -> "eval_loss": HF's rule for metric_for_best_model.
  static std::string eval_metric_name(const std::string& m) { return m.rfind("eval_", 0) == 0 ? m : "eval_" + m; }
  std::string best_metric_name() const {
    if (!metric_for_best_model.empty()) return eval_metric_name(metric_for_best_model);
    return load_best_model_at_end || save_strategy == "best" ? "eval_loss" : "";
  }
  bool best_is_greater() const {
    if (greater_is_better) return *greater_is_better;
    const std::string m = best_metric_name();
    return !(m.size() >= 4 && m.compare(m.size() - 4, 4, "loss") == 0);
  }

  void validate() const {
    require(learning_rate > 0 && std::isfinite(learning_rate), "--learning_rate must be positive (got {})", learning_rate);
    require(max_steps > 0 || (num_train_epochs > 0 && std::isfinite(num_train_epochs)),
            "--num_train_epochs must be positive and finite (got {})", num_train_epochs);
    require(per_device_train_batch_size > 0, "--per_device_train_batch_size must be positive");
    require(per_device_eval_batch_size > 0, "--per_device_eval_batch_size must be positive");
    require(gradient_accumulation_steps > 0, "--gradient_accumulation_steps must be positive");
    require(accumulation_pack_tokens >= -1, "--accumulation_pack_tokens must be -1 (the model decides), 0 (off) or a token count");
    require(max_grad_norm >= 0, "--max_grad_norm must be >= 0 (0 disables clipping)");
    require(weight_decay >= 0 && std::isfinite(weight_decay), "--weight_decay must be >= 0 (got {})", weight_decay);
    // beta = 1 divides by a zero bias correction and beta > 1 grows the moments without bound: both
    // leave every weight NaN after the first step.
    require(adam_beta1 >= 0 && adam_beta1 < 1, "--adam_beta1 {} must be in [0, 1) (default 0.9)", adam_beta1);
    require(adam_beta2 >= 0 && adam_beta2 < 1, "--adam_beta2 {} must be in [0, 1) (default 0.95)", adam_beta2);
    require(adam_epsilon > 0 && std::isfinite(adam_epsilon), "--adam_epsilon {} must be positive (default 1e-8)",
            adam_epsilon);
    require(optim == "adamw_torch" || optim == "sgd", "--optim {}: not available here (valid: adamw_torch, sgd)", optim);
    require(sgd_momentum >= 0 && sgd_momentum < 1, "--sgd_momentum {} must be in [0, 1)", sgd_momentum);
    require(std::isfinite(max_grad_norm), "--max_grad_norm must be finite (got {})", max_grad_norm);
    require(warmup_ratio >= 0 && warmup_ratio <= 1, "--warmup_ratio must be in [0, 1] (got {})", warmup_ratio);
    require(warmup_steps >= 0, "--warmup_steps must be >= 0");
    require(logging_steps > 0, "--logging_steps must be positive");
    require(save_steps > 0, "--save_steps must be positive");
    require(save_strategy == "steps" || save_strategy == "epoch" || save_strategy == "best" || save_strategy == "no",
            "--save_strategy: '{}' is not supported (valid: steps, epoch, best, no)", save_strategy);
    require(eval_strategy == "steps" || eval_strategy == "epoch" || eval_strategy == "no",
            "--eval_strategy: '{}' is not supported (valid: steps, epoch, no)", eval_strategy);
    require(save_strategy != "best" || eval_strategy != "no",
            "--save_strategy best needs evaluations: --eval_strategy no makes none");
    require(eval_steps >= 0, "--eval_steps must be >= 0");
    require(max_consecutive_nonfinite_steps > 0, "--max_consecutive_nonfinite_steps must be positive");
    for (const auto& r : report_to)
      require(r == "tensorboard" || r == "all" || r == "none",
              "--report_to {}: not available here (valid: tensorboard, all, none)", r);
    // HF's rule: the best model is chosen among saved checkpoints, so every save must follow an eval
    // ("best" saves only there).
    if (load_best_model_at_end && save_strategy != "best")
      require(eval_strategy == save_strategy && save_strategy != "no",
              "--load_best_model_at_end needs --eval_strategy and --save_strategy to be the same, and not 'no' (got "
              "{} and {})", eval_strategy, save_strategy);
    if (load_best_model_at_end && eval_steps > 0 && save_strategy == "steps")
      require(save_steps % eval_steps == 0,
              "--load_best_model_at_end needs --save_steps ({}) to be a multiple of --eval_steps ({})", save_steps,
              eval_steps);
  }

  nlohmann::json to_json() const {
    return {{"learning_rate", learning_rate}, {"num_train_epochs", num_train_epochs}, {"max_steps", max_steps},
            {"per_device_train_batch_size", per_device_train_batch_size},
            {"per_device_eval_batch_size", per_device_eval_batch_size},
            {"gradient_accumulation_steps", gradient_accumulation_steps},
            {"accumulation_pack_tokens", accumulation_pack_tokens}, {"max_grad_norm", max_grad_norm},
            {"weight_decay", weight_decay}, {"adam_beta1", adam_beta1}, {"adam_beta2", adam_beta2},
            {"adam_epsilon", adam_epsilon}, {"optim", optim}, {"sgd_momentum", sgd_momentum},
            {"lr_scheduler_type", lr_scheduler_type}, {"warmup_ratio", warmup_ratio},
            {"warmup_steps", warmup_steps}, {"seed", seed},
            {"data_seed", data_seed ? nlohmann::json(*data_seed) : nlohmann::json(nullptr)},
            {"train_dataloader_shuffle", train_dataloader_shuffle},
            {"logging_steps", logging_steps}, {"eval_steps", eval_steps}, {"save_steps", save_steps},
            {"eval_strategy", eval_strategy}, {"save_strategy", save_strategy},
            {"save_total_limit", save_total_limit}, {"output_dir", output_dir.string()},
            {"metric_for_best_model", metric_for_best_model}, {"load_best_model_at_end", load_best_model_at_end},
            {"max_consecutive_nonfinite_steps", max_consecutive_nonfinite_steps}, {"report_to", report_to},
            {"logging_dir", logging_dir.string()}};
  }
};

}  // namespace peft
