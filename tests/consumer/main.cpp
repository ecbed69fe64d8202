// Builds a model type from policies, trains it a few steps on random data and checks the loss
// fell: proof that the installed headers and their dependencies are complete.
#include <peft/qwen.hpp>

#include <cstdio>

int main() {
  using Model = peft::Qwen2<peft::Lora<4>, peft::Fp32, peft::Cpu>;
  peft::ModelConfig cfg;
  cfg.hidden_size = 32; cfg.intermediate_size = 64; cfg.num_hidden_layers = 1;
  cfg.num_attention_heads = 4; cfg.num_key_value_heads = 2; cfg.head_dim = 8; cfg.vocab_size = 50;
  peft::LoraConfig lora;
  lora.r = 4;
  lora.lora_dropout = 0;
  peft::RandomWeights weights(1);
  auto model = Model::from_weights(cfg, weights, lora, 1);
  std::vector<peft::Sample> data = {{{1, 2, 3, 4, 5, 6}, {1, 2, 3, 4, 5, 6}}};
  peft::TrainingArguments args;
  args.learning_rate = 1e-2;
  args.max_steps = 20;
  args.weight_decay = 0;
  peft::Trainer<Model, peft::AdamW, peft::ConstantWithWarmup> trainer(*model, args, peft::AdamW{}, {});
  trainer.set_quiet(true);
  const auto r = trainer.train(data);
  std::printf("loss %.4f -> %.4f\n", r.step_losses.front(), r.step_losses.back());
  return r.step_losses.back() < r.step_losses.front() ? 0 : 1;
}
