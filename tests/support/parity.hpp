// What the CPU parity tests against the HF goldens share, for any model composition: a fixture's
// model (tests/fixtures/<name>/model) with its PEFT adapter loaded and dropout off, and the
// relative comparison of a number with its golden value, and the golden run's training replayed
// with its per-step losses and gradient norms checked.
#pragma once
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <string>

#include "peft/io/peft_adapter.hpp"
#include "peft/qwen.hpp"
#include "fixture.hpp"

namespace peft::test {

// |a - b| <= rel * |b| (+ a tiny absolute floor for values near zero).
inline void check_close(double a, double b, double rel, const std::string& what) {
  INFO(what << ": got " << a << " expected " << b);
  CHECK(std::abs(a - b) <= rel * std::abs(b) + 1e-7);
}

template <class Model>
std::unique_ptr<Model> load_fixture_model(const std::string& name) {
  const auto dir = fixture(name);
  LoraConfig lora = read_adapter_config(dir / "adapter");
  lora.lora_dropout = 0;
  auto model = Model::from_pretrained(dir / "model", lora, 0);
  load_adapter_weights(dir / "adapter", model->trainable_parameters());
  return model;
}

// Trains `model` on `samples` with the golden run's arguments (AdamW, its schedule) and checks each
// step's loss and gradient norm against the golden's within 1e-4 relative (fp32 in another order
// drifts ~1e-6 a step), and its learning rates (1e-9) when the golden has them.
template <class Model, class Samples>
TrainResult train_as_golden(Model& model, const Samples& samples, const nlohmann::json& golden, const std::string& tag) {
  const TrainingArguments args = golden_args(golden);
  Trainer<Model> trainer(model, args, AdamW({args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay}),
                         NamedSchedule(args.lr_scheduler_type));
  trainer.set_quiet(true);
  const TrainResult r = trainer.train(samples);
  const auto& losses = golden["train_loss_per_step"];
  const auto& norms = golden["grad_norm_per_step"];
  REQUIRE(r.step_losses.size() == losses.size());
  for (std::size_t s = 0; s < losses.size(); ++s) {
    check_close(r.step_losses[s], losses[s].get<double>(), 1e-4, tag + " loss step " + std::to_string(s));
    check_close(r.step_grad_norms[s], norms[s].get<double>(), 1e-4, tag + " grad_norm step " + std::to_string(s));
  }
  if (golden.contains("learning_rate_per_step"))
    for (std::size_t s = 0; s < losses.size(); ++s)
      check_close(r.step_lrs[s], golden["learning_rate_per_step"][s].get<double>(), 1e-9,
                  tag + " lr step " + std::to_string(s));
  return r;
}

}  // namespace peft::test
