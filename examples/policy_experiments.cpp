// policy_experiments: the design's compile-time configuration experiments. Each row is a different
// model TYPE (Qwen2<Layout, Precision, Device>), instantiated side by side in one program: what it
// trains, how many parameters that is, the memory it needs, and the time of one training step
// (forward, backward, clip, AdamW: train/step_timing.hpp).
// The CPU build runs two tiny shapes: the embedded default (whose 152k-row vocabulary projection
// dominates the step) and a small-vocabulary shape where the decoder layers, and so the layout,
// decide the cost. Memory is the planned part, computed from the shapes: frozen weights in the
// storage dtype, and for each trainable parameter its fp32 master, gradient and two AdamW
// moments (16 bytes); activations depend on the batch and are not in it.
// The layer-wise row, LastLayers<2, Full, Lora<8>> (policies/layer_layout.hpp), fully trains the
// seven projections of the last two decoder layers and puts LoRA r=8 on every other layer; the
// LoRA attention + full MLP row mixes policies inside each layer instead.
// policy_experiments_cuda is this source built by nvcc (-DPEFT_WITH_CUDA=ON): the Qwen2.5-7B shape
// on GPU 0, Qwen2<Layout, Bf16Mixed, Cuda | CudaSelective | CudaRecompute>, with the device memory its plan needs
// (the arena's high-water mark: weights, LoRA masters, gradients and AdamW moments, activations,
// scratch), on one sequence of --tokens tokens. Weights are random, drawn on the device: a step
// costs the same as with real ones. Rows with Full projections keep fp32 masters, fp32 gradients
// and AdamW moments for them (16 bytes per trained value besides the bf16 weight the GEMMs read).
// Each row is printed as soon as it is measured: a row that fails leaves the ones before it.
//   policy_experiments [--steps 5] [--tokens 256]
//   policy_experiments_cuda [--tokens 2048] [--steps 5]
#include <fmt/format.h>

#include <random>

#include "build_variant.hpp"
#include "experiments/experiment_flags.hpp"
#include "peft/qwen.hpp"
#include "peft/train/step_timing.hpp"
#include "sft/embedded_default.hpp"
#ifdef __CUDACC__
#include "peft/qwen_cuda.cuh"
#endif

using namespace peft;

namespace {

// Parameters of the base model from its config (embedding, seven projections with q/k/v biases,
// norms; lm_head only when untied).
std::int64_t base_parameters(const ModelConfig& c) {
  const std::int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const std::int64_t layer = h * q + q + 2 * (h * kv + kv) + q * h + 3 * h * c.intermediate_size + 2 * h;
  return c.vocab_size * h * (c.tie_word_embeddings ? 1 : 2) + c.num_hidden_layers * layer + h;
}

LoraConfig lora_all_linear(int rank, int alpha, double dropout) {
  LoraConfig lora;
  lora.r = rank;
  lora.lora_alpha = alpha;
  lora.lora_dropout = dropout;
  lora.target_modules = {"all-linear"};  // the layout decides which projections carry one
  return lora;
}

#ifdef __CUDACC__
struct Row {
  std::string name;
  std::int64_t trainable = 0;
  double weights_gb = 0, peak_gb = 0, step_ms = 0, tok_per_s = 0;
};

template <class Model>
Row measure(const std::string& name, const ModelConfig& cfg, int rank, int tokens, int steps) {
  Model model(cfg, lora_all_linear(rank, 4 * rank, 0.05), {tokens});
  model.fill_random_weights(1);
  model.init_adapters(0);
  std::mt19937 rng(0);
  std::uniform_int_distribution<int> tok(0, static_cast<int>(cfg.vocab_size) - 1);
  Sample s;
  for (int i = 0; i < tokens; ++i) s.input_ids.push_back(tok(rng));
  s.labels = s.input_ids;
  Rng dropout(0);
  const auto t = time_training_steps(model, PackedBatch::of(s), 2, steps, &dropout, [&] {
    PEFT_CUDA_CHECK(cudaStreamSynchronize(model.stream()));
  });
  Row r{name};
  r.trainable = model.trainable_parameters().numel();
  r.weights_gb = 2.0 * static_cast<double>(base_parameters(cfg)) / 1e9;
  r.peak_gb = static_cast<double>(model.arena().high_water()) / 1e9;
  r.step_ms = t.median_ms;
  r.tok_per_s = tokens / (t.median_ms / 1000.0);
  return r;
}

void run_table(int steps, int tokens) {
  require(tokens % 8 == 0, "--tokens must be a multiple of 8 (got {})", tokens);
  cudaDeviceProp prop{};
  PEFT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const ModelConfig cfg = preset_config<Qwen25_7B>();
  fmt::print("\n{} ({} SMs). Shape: Qwen2.5-7B (hidden {}, {} layers); one sequence of {} tokens; median of {} steps.\n\n",
             prop.name, prop.multiProcessorCount, cfg.hidden_size, cfg.num_hidden_layers, tokens, steps);
  fmt::print("| configuration | trainable params | bf16 weights GB | device peak GB | step ms | tokens/s |\n"
             "|---|---:|---:|---:|---:|---:|\n");
  auto row = [](const Row& r) {
    fmt::print("| {} | {} | {:.2f} | {:.2f} | {:.1f} | {:.0f} |\n", r.name, r.trainable, r.weights_gb, r.peak_gb,
               r.step_ms, r.tok_per_s);
    std::fflush(stdout);
  };
  using LoraAttnFullMlp = Projections<Lora<8>, Lora<8>, Lora<8>, Lora<8>, Full, Full, Full>;
  row(measure<Qwen2<AttentionOnly<Lora<8>>, Bf16Mixed, Cuda>>("LoRA r=8, attention only (q,k,v,o), keep-all", cfg, 8,
                                                              tokens, steps));
  row(measure<Qwen2<Lora<8>, Bf16Mixed, Cuda>>("LoRA r=8, all-linear, keep-all", cfg, 8, tokens, steps));
  row(measure<Qwen2<Lora<8>, Bf16Mixed, CudaSelective>>("LoRA r=8, all-linear, selective recompute", cfg, 8, tokens,
                                                        steps));
  row(measure<Qwen2<Lora<8>, Bf16Mixed, CudaRecompute>>("LoRA r=8, all-linear, recompute per layer", cfg, 8, tokens,
                                                        steps));
  row(measure<Qwen2<Lora<64>, Bf16Mixed, Cuda>>("LoRA r=64, all-linear, keep-all", cfg, 64, tokens, steps));
  row(measure<Qwen2<Lora<64>, Bf16Mixed, CudaRecompute>>("LoRA r=64, all-linear, recompute per layer", cfg, 64, tokens,
                                                         steps));
  row(measure<Qwen2<LoraAttnFullMlp, Bf16Mixed, Cuda>>("full MLP + LoRA r=8 attention, keep-all", cfg, 8, tokens, steps));
  row(measure<Qwen2<LastLayers<2, Full, Lora<8>>, Bf16Mixed, Cuda>>(
      "full fine-tune of the last 2 layers + LoRA r=8 elsewhere, keep-all", cfg, 8, tokens, steps));
}
#else
struct Row {
  std::string name;
  std::int64_t trainable = 0, total = 0;
  double weights_mib = 0, optimizer_mib = 0, step_ms = 0;
};

template <class Model>
Row measure(const ModelConfig& cfg, const std::string& name, int rank, int steps, const std::vector<Sample>& batch) {
  RandomWeights weights(examples::kEmbeddedWeightSeed);
  auto model = Model::from_weights(cfg, weights, lora_all_linear(rank, 2 * rank, 0.0), 42);
  Row r{name};
  std::int64_t adapter = 0;
  for (const auto& p : model->trainable_parameters()) {
    r.trainable += p.value->size();
    if (p.name.find(".lora_") != std::string::npos) adapter += p.value->size();
  }
  const std::int64_t base = base_parameters(cfg);
  r.total = base + adapter;
  const double storage = static_cast<double>(dtype_size(Model::Precision::storage));
  r.weights_mib = (static_cast<double>(base - (r.trainable - adapter)) * storage +
                   static_cast<double>(r.trainable) * 4.0) / (1 << 20);
  r.optimizer_mib = static_cast<double>(r.trainable) * 12.0 / (1 << 20);  // grad + 2 moments, fp32
  std::vector<const Sample*> ptrs;
  for (const auto& s : batch) ptrs.push_back(&s);
  Rng dropout(1);
  // The first step warms caches and is not counted.
  r.step_ms = time_training_steps(*model, PackedBatch::of(ptrs), 1, steps, &dropout).median_ms;
  return r;
}

void run_table(int steps, int tokens) {
  ModelConfig small = examples::embedded_default_config();
  small.hidden_size = 256;
  small.intermediate_size = 768;
  small.num_hidden_layers = 4;
  small.num_attention_heads = 8;
  small.num_key_value_heads = 2;
  small.head_dim = 32;
  small.vocab_size = 2048;
  for (const ModelConfig& cfg : {examples::embedded_default_config(), small}) {
    // Four samples of random token ids; every position is a label.
    Rng rng(5);
    std::vector<Sample> batch(4);
    for (auto& s : batch) {
      for (int t = 0; t < tokens / 4; ++t)
        s.input_ids.push_back(static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(cfg.vocab_size))));
      s.labels = s.input_ids;
    }
    using LoraAttnFullMlp = Projections<Lora<8>, Lora<8>, Lora<8>, Lora<8>, Full, Full, Full>;
    const std::vector<Row> rows = {
        measure<Qwen2<AttentionOnly<Lora<8>>, Fp32, Cpu>>(cfg, "LoRA r=8, attention only (q,k,v,o)", 8, steps, batch),
        measure<Qwen2<Lora<8>, Fp32, Cpu>>(cfg, "LoRA r=8, all-linear", 8, steps, batch),
        measure<Qwen2<Lora<64>, Fp32, Cpu>>(cfg, "LoRA r=64, all-linear", 64, steps, batch),
        measure<Qwen2<Lora<8>, Bf16Mixed, Cpu>>(cfg, "LoRA r=8, all-linear, bf16 storage", 8, steps, batch),
        measure<Qwen2<LoraAttnFullMlp, Fp32, Cpu>>(cfg, "LoRA r=8 attention + full MLP", 8, steps, batch),
        measure<Qwen2<LastLayers<2, Full, Lora<8>>, Fp32, Cpu>>(
            cfg, "full fine-tune of the last 2 layers + LoRA r=8 elsewhere", 8, steps, batch),
        measure<Qwen2<Full, Fp32, Cpu>>(cfg, "full fine-tune", 0, steps, batch),
    };
    fmt::print("\nShape: hidden {}, {} layers, intermediate {}, vocab {}; batch of {} tokens; median of {} steps.\n\n",
               cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size, 4 * (tokens / 4), steps);
    fmt::print("| configuration | trainable params | % of model | weights MiB | grad+AdamW MiB | step ms |\n"
               "|---|---:|---:|---:|---:|---:|\n");
    for (const auto& r : rows)
      fmt::print("| {} | {} | {:.2f}% | {:.1f} | {:.1f} | {:.1f} |\n", r.name, r.trainable,
                 100.0 * static_cast<double>(r.trainable) / static_cast<double>(r.total), r.weights_mib,
                 r.optimizer_mib, r.step_ms);
  }
  fmt::print("\nNot measured here: keep-all vs recompute activations (a CUDA-backend policy).\n");
}
#endif

}  // namespace

int main(int argc, char** argv) {
  const std::string program = examples::program_name("policy_experiments");
  try {
    const auto flags = examples::parse_experiment_flags(
        argc, argv,
        program + (examples::kCudaBuild ? ": one row per compile-time model configuration (7B shape, GPU 0)"
                                        : ": one row per compile-time model configuration"),
        examples::kCudaBuild ? examples::ExperimentFlags{5, 2048} : examples::ExperimentFlags{5, 256},
        examples::kCudaBuild ? "tokens in the training sequence" : "tokens in the training batch (4 samples)");
    if (!flags) return 0;
    run_table(flags->steps, flags->tokens);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", program, e.what());
    return 1;
  }
}
