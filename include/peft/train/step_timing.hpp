// The timed training step shared by the experiment program (examples/policy_experiments.cpp) and
// the benchmarks (bench/): forward and backward over one packed batch, clipping at 1.0, AdamW with
// TrainingArguments' defaults, zero_grad; the median over `steps` after `warmup` untimed ones (the
// first steps plan GEMMs and capture CUDA graphs). Written against the backend hooks
// (train/backend_hooks.hpp), so one body times host and device-resident models alike; `sync`
// waits for a device's queued work so each step's time includes its own optimizer update.
#pragma once
#include <algorithm>
#include <chrono>
#include <vector>

#include "peft/core/rng.hpp"
#include "peft/data/packed_batch.hpp"
#include "peft/train/backend_hooks.hpp"
#include "peft/train/optimizer_choice.hpp"

namespace peft {

struct StepTiming {
  double median_ms = 0, min_ms = 0;
  double loss = 0;  // of the last step
};

template <class Model, class Sync>
StepTiming time_training_steps(Model& model, const PackedBatch& batch, int warmup, int steps, Rng* dropout,
                               Sync sync) {
  const auto params = model.trainable_parameters();
  AdamW opt = adamw_from(TrainingArguments{});
  optimizer_init(opt, params);
  const float scale = 1.0f / static_cast<float>(batch.label_tokens);
  std::vector<double> ms;
  StepTiming t;
  for (int s = 0; s < warmup + steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    t.loss = model.forward_backward(batch, scale, dropout).mean();
    clip_grad_norm(params, 1.0);
    optimizer_step(opt, params, 1e-4);
    model.zero_grad();
    sync();
    const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmup) ms.push_back(dt);
  }
  std::sort(ms.begin(), ms.end());
  if (!ms.empty()) {
    t.median_ms = ms[ms.size() / 2];
    t.min_ms = ms.front();
  }
  return t;
}

template <class Model>
StepTiming time_training_steps(Model& model, const PackedBatch& batch, int warmup, int steps, Rng* dropout) {
  return time_training_steps(model, batch, warmup, steps, dropout, [] {});
}

}  // namespace peft
