// How many optimizer steps a run takes, and what a resume requires of its checkpoint. Free
// functions, so a program can check a resume before it writes anything for the run (args.json,
// a new run folder's resume_source.json) and the trainer checks the same when it loads.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <string>

#include "peft/core/error.hpp"
#include "peft/train/result_settings.hpp"
#include "peft/train/trainer_state.hpp"
#include "peft/train/training_arguments.hpp"

namespace peft {

// Micro-batches an epoch of `samples` makes, and how many of them (all ranks) an optimizer step takes.
inline std::int64_t micro_batches(const TrainingArguments& a, std::size_t samples) {
  return (static_cast<std::int64_t>(samples) + a.per_device_train_batch_size - 1) / a.per_device_train_batch_size;
}
inline std::int64_t micro_batches_a_step(const TrainingArguments& a, int world) {
  return a.gradient_accumulation_steps * world;
}

// Optimizer steps an epoch of `samples` takes on `world` ranks (the last step takes what is left).
inline std::int64_t steps_per_epoch(const TrainingArguments& a, std::size_t samples, int world) {
  const std::int64_t micro = micro_batches(a, samples), per_step = micro_batches_a_step(a, world);
  return std::max<std::int64_t>(1, (micro + per_step - 1) / per_step);
}

// The fractional epoch after optimizer step `global_step` (1-based), as HF's Trainer logs it:
// whole epochs plus the share of the epoch's micro-batches consumed so far. An epoch's last step
// may take fewer micro-batches than gradient_accumulation_steps, so this is not step / steps an
// epoch (88 samples, GA 16: step 1 is epoch 16/88 = 0.18, not 1/6).
inline double epoch_at_step(const TrainingArguments& a, std::size_t samples, int world, std::int64_t global_step) {
  const std::int64_t micro = std::max<std::int64_t>(1, micro_batches(a, samples));
  const std::int64_t per_step = micro_batches_a_step(a, world), per_epoch = steps_per_epoch(a, samples, world);
  const std::int64_t done = global_step - 1, in_epoch = done % per_epoch + 1;
  return static_cast<double>(done / per_epoch) +
         static_cast<double>(std::min(micro, in_epoch * per_step)) / static_cast<double>(micro);
}

// --max_steps, else ceil(epochs x steps an epoch); an absurd epoch count is an error, not an
// overflowed step counter.
inline std::int64_t total_steps(const TrainingArguments& a, std::size_t samples, int world) {
  if (a.max_steps > 0) return a.max_steps;
  const double steps = std::ceil(a.num_train_epochs * static_cast<double>(steps_per_epoch(a, samples, world)));
  require(steps <= 1e12, "--num_train_epochs {}: {:.3g} optimizer steps of {} samples is more than any run can take",
          a.num_train_epochs, steps, samples);
  return static_cast<std::int64_t>(steps);
}

// The checkpoint's state, once checked: the settings that decide the result are this run's
// (`settings`, result_settings.hpp; --ignore_args_mismatch lets a difference through, said on
// stderr when `say`), and steps are left before `total`.
inline TrainerState check_resume(const TrainingArguments& a, const nlohmann::json& settings, std::int64_t total,
                                 bool say = true) {
  const auto& dir = a.resume_from_checkpoint;
  require(std::filesystem::is_directory(dir), "--resume_from_checkpoint {}: not a directory", dir.string());
  TrainerState st = read_trainer_state(dir);
  const auto file = peft_state_file(dir).string();
  if (st.result_settings.is_null()) {
    if (say) fmt::print(stderr, "[resume] {} records no settings (an older peft): cannot check that they match\n", file);
  } else {
    require(st.result_settings.is_object(), "{}: field 'result_settings' is not an object", file);
    const auto diff = settings_differences(st.result_settings, settings);
    if (!diff.empty()) {
      const std::string list = fmt::format("{}", fmt::join(diff, "\n  "));
      require(a.ignore_args_mismatch,
              "--resume_from_checkpoint {}: this run's settings differ from the checkpoint's, so the resumed run "
              "would not continue the same training:\n  {}\n(pass --ignore_args_mismatch true to resume anyway)",
              dir.string(), list);
      if (say) fmt::print(stderr, "[resume] --ignore_args_mismatch: resuming although settings differ:\n  {}\n", list);
    }
  }
  require(st.res.global_step < total, "--resume_from_checkpoint {}: it is at step {} of {}: nothing left to train",
          dir.string(), st.res.global_step, total);
  return st;
}

}  // namespace peft
