// policy_experiments_cuda: the compile-time configuration experiments (policy_experiments.cpp)
// for the Qwen2.5-7B shape on the GPU. Each row is a different model TYPE,
// Qwen2<Layout, Bf16Mixed, Cuda | CudaRecompute>, instantiated side by side: what it trains, how
// many parameters that is, the device memory its plan needs (the arena's high-water mark:
// weights, LoRA masters, gradients and AdamW moments, activations, scratch) and the time of one
// training step (forward, backward, clip, AdamW) on one sequence of --tokens tokens. Weights are
// random, drawn on the device: a step costs the same as with real ones.
// Rows with Full projections keep fp32 masters, fp32 gradients and AdamW moments for them
// (16 bytes per trained value besides the bf16 weight the GEMMs read).
//   policy_experiments_cuda [--tokens 2048] [--steps 5]
#include <fmt/format.h>

#include <cstdio>
#include <random>

#include "experiments/experiment_flags.hpp"
#include "experiments/step_timing.hpp"
#include "peft/qwen_cuda.cuh"

using namespace peft;

namespace {

struct Row {
  std::string name;
  std::int64_t trainable = 0;
  double weights_gb = 0, peak_gb = 0, step_ms = 0, tok_per_s = 0;
};

template <class Model>
Row measure(const std::string& name, const ModelConfig& cfg, int rank, int tokens, int steps) {
  LoraConfig lora;
  lora.r = rank;
  lora.lora_alpha = 4 * rank;
  lora.lora_dropout = 0.05;
  lora.target_modules = {"all-linear"};  // the layout decides which projections carry one
  Model model(cfg, lora, {tokens});
  model.fill_random_weights(1);
  model.init_adapters(0);
  std::mt19937 rng(0);
  std::uniform_int_distribution<int> tok(0, static_cast<int>(cfg.vocab_size) - 1);
  Sample s;
  for (int i = 0; i < tokens; ++i) s.input_ids.push_back(tok(rng));
  s.labels = s.input_ids;
  Rng dropout(0);
  const auto t = examples::time_training_steps(model, PackedBatch::of(s), 2, steps, &dropout, [&] {
    PEFT_CUDA_CHECK(cudaStreamSynchronize(model.stream()));
  });
  Row r{name};
  r.trainable = model.trainable_parameters().numel();
  const double h = static_cast<double>(cfg.hidden_size), i = static_cast<double>(cfg.intermediate_size);
  const double q = static_cast<double>(cfg.num_attention_heads * cfg.head_dim);
  const double kv = static_cast<double>(cfg.num_key_value_heads * cfg.head_dim);
  const double layer = h * q + q + 2 * (h * kv + kv) + q * h + 3 * h * i + 2 * h;
  const double base = static_cast<double>(cfg.vocab_size) * h * (cfg.tie_word_embeddings ? 1 : 2) +
                      static_cast<double>(cfg.num_hidden_layers) * layer + h;
  r.weights_gb = 2.0 * base / 1e9;
  r.peak_gb = static_cast<double>(model.arena().high_water()) / 1e9;
  r.step_ms = t.median_ms;
  r.tok_per_s = tokens / (t.median_ms / 1000.0);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto flags = examples::parse_experiment_flags(
        argc, argv, "policy_experiments_cuda: one row per compile-time model configuration (7B shape, GPU 0)", {5, 2048},
        "tokens in the training sequence");
    if (!flags) return 0;
    const int steps = flags->steps, tokens = flags->tokens;
    require(tokens % 8 == 0, "--tokens must be a multiple of 8 (got {})", tokens);
    cudaDeviceProp prop{};
    PEFT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const ModelConfig cfg = preset_config<Qwen25_7B>();
    fmt::print("\n{} ({} SMs). Shape: Qwen2.5-7B (hidden {}, {} layers); one sequence of {} tokens; median of {} steps.\n\n",
               prop.name, prop.multiProcessorCount, cfg.hidden_size, cfg.num_hidden_layers, tokens, steps);
    fmt::print("| configuration | trainable params | bf16 weights GB | device peak GB | step ms | tokens/s |\n"
               "|---|---:|---:|---:|---:|---:|\n");
    // Each row printed as soon as it is measured: a row that fails leaves the ones before it.
    auto row = [](const Row& r) {
      fmt::print("| {} | {} | {:.2f} | {:.2f} | {:.1f} | {:.0f} |\n", r.name, r.trainable, r.weights_gb, r.peak_gb,
                 r.step_ms, r.tok_per_s);
      std::fflush(stdout);
    };
    row(measure<Qwen2<AttentionOnly<Lora<8>>, Bf16Mixed, Cuda>>("LoRA r=8, attention only (q,k,v,o), keep-all", cfg, 8,
                                                                tokens, steps));
    row(measure<Qwen2<Lora<8>, Bf16Mixed, Cuda>>("LoRA r=8, all-linear, keep-all", cfg, 8, tokens, steps));
    row(measure<Qwen2<Lora<8>, Bf16Mixed, CudaRecompute>>("LoRA r=8, all-linear, recompute per layer", cfg, 8, tokens,
                                                          steps));
    row(measure<Qwen2<Lora<64>, Bf16Mixed, Cuda>>("LoRA r=64, all-linear, keep-all", cfg, 64, tokens, steps));
    row(measure<Qwen2<Lora<64>, Bf16Mixed, CudaRecompute>>("LoRA r=64, all-linear, recompute per layer", cfg, 64,
                                                           tokens, steps));
    row(measure<Qwen2<Projections<Lora<8>, Lora<8>, Lora<8>, Lora<8>, Full, Full, Full>, Bf16Mixed, Cuda>>(
        "full MLP + LoRA r=8 attention, keep-all", cfg, 8, tokens, steps));
    row(measure<Qwen2<LastLayers<2, Full, Lora<8>>, Bf16Mixed, Cuda>>(
        "full fine-tune of the last 2 layers + LoRA r=8 elsewhere, keep-all", cfg, 8, tokens, steps));
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "policy_experiments_cuda: error: {}\n", e.what());
    return 1;
  }
}
