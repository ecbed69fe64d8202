// The README's trainer example, compiled and run by the tests so it cannot rot:
//   lora_trainer MODEL_DIR DATASET OUTPUT_DIR
// MODEL_DIR holds config.json, *.safetensors and tokenizer.json (a Qwen2.5 checkpoint); DATASET is
// any file or spec identity_finetune accepts. Everything a user decides is in the two type
// aliases and the TrainingArguments; the rest is loading and saving.
#include <peft/qwen.hpp>

#include <cstdio>
#include <fmt/format.h>

int main(int argc, char** argv) try {
  if (argc != 4) return std::fprintf(stderr, "usage: lora_trainer MODEL_DIR DATASET OUTPUT_DIR\n"), 2;
  const std::filesystem::path model_dir = argv[1], output = argv[3];

  using Model   = peft::Qwen2<peft::Lora<8>, peft::Bf16Mixed, peft::Cpu>;   // LoRA r=8 on all seven projections
  using Trainer = peft::Trainer<Model, peft::AdamW, peft::CosineWithWarmup>;

  peft::LoraConfig lora;                    // r 8, alpha 32, dropout 0.05, all-linear
  auto model = Model::from_pretrained(model_dir, lora, /*adapter_seed=*/42);
  const auto tokenizer = peft::text::Tokenizer::from_file(model_dir / "tokenizer.json");
  const auto data = peft::data::load_datasets({.specs = {argv[2]}, .model_name = {"swift-robot"},
                                              .model_author = {"swift"}}, &tokenizer, model->config().vocab_size);

  peft::TrainingArguments args;             // the recipe's: lr 1e-4, 10 epochs, GA 16, warmup 5%
  args.learning_rate = 1e-4; args.num_train_epochs = 10; args.gradient_accumulation_steps = 16; args.warmup_ratio = 0.05;
  Trainer trainer(*model, args, peft::AdamW({.beta1 = 0.9, .beta2 = 0.95, .weight_decay = 0.1}), {});
  const auto result = trainer.train(data.train);
  peft::save_adapter(output, model->trainable_parameters(), lora, model_dir.string());   // PEFT's format

  fmt::print("{} steps, loss {:.4f} -> {:.4f}, adapter in {}\n", result.global_step, result.step_losses.front(),
             result.step_losses.back(), output.string());
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "lora_trainer: {}\n", e.what());
  return 1;
}
