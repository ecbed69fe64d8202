// Each epoch's batch order follows TrainingArguments::data_seed when set, else seed (HF's
// data_seed). ms-swift hands HF its --data_seed (default 42), so with both seeds given, --seed
// alone must not move the order. Seen through training: LoRA init is the model's own seed and
// dropout is off, so the steps depend on the arguments' seeds only through the order. Runs with
// the same order take bit-identical steps; runs with different orders differ in their losses.
#include <catch2/catch.hpp>

#include "peft/qwen.hpp"
#include "support/fixture.hpp"

using namespace peft;
using Model = Qwen2<Lora<>, Fp32, Cpu>;

namespace {

std::vector<double> step_losses(std::uint64_t seed, std::optional<std::uint64_t> data_seed) {
  LoraConfig lora = read_adapter_config(test::fixture("tiny_public") / "adapter");
  lora.lora_dropout = 0;
  auto model = Model::from_pretrained(test::fixture("tiny_public") / "model", lora, 7);
  TrainingArguments a;
  a.learning_rate = 2e-3;
  a.num_train_epochs = 2;
  a.gradient_accumulation_steps = 2;
  a.seed = seed;
  a.data_seed = data_seed;
  a.train_dataloader_shuffle = true;
  Trainer<Model> t(*model, a, AdamW({0.9, 0.95, 1e-8, 0.1}), NamedSchedule("cosine"));
  t.set_quiet(true);
  return t.train(test::fixture_samples("tiny_public")).step_losses;
}

}  // namespace

TEST_CASE("with data_seed set, --seed alone leaves each epoch's order (and so the steps) as they were") {
  CHECK(step_losses(1, 42) == step_losses(7, 42));
  CHECK(step_losses(1, 5) != step_losses(1, 42));  // the order does follow data_seed
}

TEST_CASE("without data_seed the order follows seed, as HF's default") {
  CHECK(step_losses(1, std::nullopt) != step_losses(7, std::nullopt));
  CHECK(step_losses(5, std::nullopt) == step_losses(1, 5));  // unset means "seed"
}

TEST_CASE("the settings record the loader's seed only where it is not the seed") {
  TrainingArguments a;
  const std::vector<Sample> none;
  a.seed = 42;
  a.data_seed = 42;
  CHECK_FALSE(result_settings(a, none, nullptr, 1).contains("data_seed"));  // as checkpoints made before it
  a.seed = 7;
  CHECK(result_settings(a, none, nullptr, 1)["data_seed"] == 42);
  a.data_seed.reset();
  CHECK_FALSE(result_settings(a, none, nullptr, 1).contains("data_seed"));
}
