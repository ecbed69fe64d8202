// The settings that decide what a run computes, recorded in every checkpoint (peft_state.json
// "result_settings") and in every sweep cell. A resume with different ones would continue
// another experiment from this one's weights and report it as one run, and a sweep cell trained
// with other settings would be reported as this grid's; both are refused, naming each
// difference (--ignore_args_mismatch lets a resume through on purpose).
// Not here: what only changes how often things are logged, evaluated or saved.
#pragma once
#include <cstdint>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft/data/sample.hpp"
#include "peft/io/lora_config.hpp"
#include "peft/train/training_arguments.hpp"

namespace peft {

// FNV-1a over every training sample's token ids and labels, in training order: two data sets
// that train the same have the same fingerprint; any other dataset, #N, data_seed, max_length or
// template gives another.
inline std::string dataset_fingerprint(const std::vector<Sample>& samples) {
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&](std::uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xFF;
      h *= 1099511628211ull;
    }
  };
  for (const auto& s : samples) {
    mix(s.input_ids.size());
    for (auto id : s.input_ids) mix(static_cast<std::uint32_t>(id));
    for (auto l : s.labels) mix(static_cast<std::uint32_t>(l));
  }
  return fmt::format("{:016x}", h);
}

// `lora`: null for a layout without LoRA. `world_size`: data-parallel ranks; what changes the
// result is the micro-batches per optimizer step (accumulation x ranks), so a run may resume on
// another number of ranks with the accumulation adjusted.
inline nlohmann::json result_settings(const TrainingArguments& t, const std::vector<Sample>& train,
                                      const LoraConfig* lora, int world_size) {
  nlohmann::json s = {{"dataset_fingerprint", dataset_fingerprint(train)},
                      {"train_samples", train.size()},
                      {"learning_rate", t.learning_rate},
                      {"lr_scheduler_type", t.lr_scheduler_type},
                      {"warmup_ratio", t.warmup_ratio},
                      {"warmup_steps", t.warmup_steps},
                      {"num_train_epochs", t.num_train_epochs},
                      {"max_steps", t.max_steps},
                      {"seed", t.seed},
                      {"train_dataloader_shuffle", t.train_dataloader_shuffle},
                      {"per_device_train_batch_size", t.per_device_train_batch_size},
                      {"micro_batches_per_step", t.gradient_accumulation_steps * world_size},
                      {"weight_decay", t.weight_decay},
                      {"adam_beta1", t.adam_beta1},
                      {"adam_beta2", t.adam_beta2},
                      {"adam_epsilon", t.adam_epsilon},
                      {"max_grad_norm", t.max_grad_norm}};
  // The order's seed, recorded only where it is not --seed: checkpoints from before data_seed
  // reached the loader (their order followed --seed) still match a run whose two seeds agree.
  if (t.loader_seed() != t.seed) s["data_seed"] = t.loader_seed();
  // Recorded only when not the default AdamW, so checkpoints from before --optim existed still
  // match an AdamW run (a key only one side has counts as a difference).
  if (t.optim != "adamw_torch") {
    s["optim"] = t.optim;
    s["sgd_momentum"] = t.sgd_momentum;
  }
  if (lora) {
    s["lora_rank"] = lora->r;
    s["lora_alpha"] = lora->lora_alpha;
    s["lora_dropout"] = lora->lora_dropout;
    s["target_modules"] = lora->target_modules;
    // Recorded only when on, so checkpoints from before --use_rslora existed still match.
    if (lora->use_rslora) s["use_rslora"] = true;
  }
  return s;
}

// "name: recorded X, now Y" for every key whose value differs (a key only one side has counts).
inline std::vector<std::string> settings_differences(const nlohmann::json& recorded, const nlohmann::json& now) {
  std::vector<std::string> out;
  auto shown = [](const nlohmann::json& o, const std::string& k) { return o.contains(k) ? o[k].dump() : "(none)"; };
  for (const auto& [k, v] : now.items())
    if (!recorded.contains(k) || recorded[k] != v) out.push_back(fmt::format("{}: recorded {}, now {}", k, shown(recorded, k), v.dump()));
  for (const auto& [k, v] : recorded.items())
    if (!now.contains(k)) out.push_back(fmt::format("{}: recorded {}, now (none)", k, v.dump()));
  return out;
}

}  // namespace peft
