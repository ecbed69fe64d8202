// policy_experiments: the design's compile-time configuration experiments. Each row is a different
// model TYPE (Qwen2<Layout, Precision, Cpu>), instantiated side by side in one program: what it
// trains, how many parameters that is, the memory its weights and optimizer need, and the time of
// one training step (forward, backward, clip, AdamW) on two tiny CPU shapes: the embedded default
// (whose 152k-row vocabulary projection dominates the step) and a small-vocabulary shape where
// the decoder layers, and so the layout, decide the cost.
// Memory is the planned part, computed from the shapes: frozen weights in the storage dtype, and
// for each trainable parameter its fp32 master, gradient and two AdamW moments (16 bytes);
// activations depend on the batch and are not in it.
// The layer-wise row, LastLayers<2, Full, Lora<8>> (policies/layer_layout.hpp), fully trains the
// seven projections of the last two decoder layers and puts LoRA r=8 on every other layer; the
// LoRA attention + full MLP row mixes policies inside each layer instead.
// Not here: keep-all vs recompute activations is a CUDA-backend policy (the CPU layers always
// keep their forward caches), and the CUDA backend trains uniform LoRA layouts only.
//   policy_experiments [--steps 5] [--tokens 256]
#include <chrono>
#include <fmt/format.h>
#include <iostream>

#include "peft/qwen.hpp"
#include "experiments/experiment_flags.hpp"
#include "sft/embedded_default.hpp"

using namespace peft;

namespace {

struct Row {
  std::string name;
  std::int64_t trainable = 0, total = 0;
  double weights_mib = 0, optimizer_mib = 0, step_ms = 0;
};

// Parameters of the base model from its config (embedding, seven projections with q/k/v biases,
// norms; lm_head only when untied).
std::int64_t base_parameters(const ModelConfig& c) {
  const std::int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const std::int64_t layer = h * q + q + 2 * (h * kv + kv) + q * h + 3 * h * c.intermediate_size + 2 * h;
  return c.vocab_size * h * (c.tie_word_embeddings ? 1 : 2) + c.num_hidden_layers * layer + h;
}

template <class Model>
Row measure(const ModelConfig& cfg, const std::string& name, int rank, int steps, const std::vector<Sample>& batch) {
  LoraConfig lora;
  lora.r = rank;
  lora.lora_alpha = 2 * rank;
  lora.lora_dropout = 0.0;
  lora.target_modules = {"all-linear"};
  RandomWeights weights(examples::kEmbeddedWeightSeed);
  auto model = Model::from_weights(cfg, weights, lora, 42);
  const ParameterList params = model->trainable_parameters();
  Row r{name};
  std::int64_t adapter = 0;
  for (const auto& p : params) {
    r.trainable += p.value->size();
    if (p.name.find(".lora_") != std::string::npos) adapter += p.value->size();
  }
  const std::int64_t base = base_parameters(cfg);
  r.total = base + adapter;
  const double storage = static_cast<double>(dtype_size(Model::Precision::storage));
  r.weights_mib = (static_cast<double>(base - (r.trainable - adapter)) * storage +
                   static_cast<double>(r.trainable) * 4.0) / (1 << 20);
  r.optimizer_mib = static_cast<double>(r.trainable) * 12.0 / (1 << 20);  // grad + 2 moments, fp32

  AdamW opt({0.9, 0.95, 1e-8, 0.1});
  opt.init(params);
  Rng dropout(1);
  std::vector<const Sample*> ptrs;
  for (const auto& s : batch) ptrs.push_back(&s);
  const PackedBatch b = PackedBatch::of(ptrs);
  std::vector<double> ms;
  for (int i = 0; i <= steps; ++i) {  // the first step warms caches and is not counted
    const auto t0 = std::chrono::steady_clock::now();
    model->forward_backward(b, 1.0f / static_cast<float>(b.label_tokens), &dropout);
    clip_grad_norm(params, 1.0);
    opt.step(params, 1e-4);
    model->zero_grad();
    if (i > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  r.step_ms = ms[ms.size() / 2];
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto flags = examples::parse_experiment_flags(argc, argv, "policy_experiments: one row per compile-time model configuration",
                                                        {5, 256}, "tokens in the training batch (4 samples)");
    if (!flags) return 0;
    const int steps = flags->steps, tokens = flags->tokens;

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
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "policy_experiments: error: {}\n", e.what());
    return 1;
  }
}
