// --gradient_checkpointing for the CUDA programs: before the model is built (and its checkpoint
// loaded), the three arena plans are counted for this run's shapes (the model's config, LoRA
// targets, the largest call the data makes: its longest sample, at most max_length, x batch, or a
// step's micro-batches packed) and held against the GPU's free memory, the chosen one printed by
// part (and the asked one too when it did not fit); the
// choice among Qwen2<..., Cuda> (keep every layer's activations), Qwen2<..., CudaSelective> and
// Qwen2<..., CudaRecompute> follows models/cuda/memory_budget.hpp. The policy is a type, so
// with_cuda_activations instantiates the program once per policy and runs the chosen one.
#pragma once
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <filesystem>

#include "peft/qwen_cuda.cuh"
#include "sft/run_sft.hpp"

namespace peft::examples {

// Runs program.template operator()<Device>() with the Device the flag and the free memory choose
// (Cuda, CudaSelective or CudaRecompute) for data whose longest sample is `longest` tokens; throws
// (with the numbers) when even recompute cannot fit. a.gradient_checkpointing is set to the policy
// that runs, and a.recompute_num_layers when --gradient_checkpointing false does not fit and some
// layers can keep everything under the leaner policy it falls back to.
template <class Layout, class Precision = Bf16Mixed, class Program>
int with_cuda_activations(SftArgs& a, std::int64_t longest, Program&& program) {
  const ModelConfig cfg = a.model.empty() ? embedded_default_config()
                                          : ModelConfig::from_file(std::filesystem::path(a.model) / "config.json");
  LoraConfig lora = a.lora;
  if (!a.adapters.empty()) lora = read_adapter_config(a.adapters);  // targets and rank decide the LoRA buffers
  using Keep = Qwen2<Layout, Precision, Cuda>;
  using Selective = Qwen2<Layout, Precision, CudaSelective>;
  using Recompute = Qwen2<Layout, Precision, CudaRecompute>;
  const auto options = model_options<Keep>(a, longest);
  const cuda::PlannedMemory keep = Keep::planned_memory(cfg, lora, options);
  const cuda::PlannedMemory selective = Selective::planned_memory(cfg, lora, options);
  const cuda::PlannedMemory recompute = Recompute::planned_memory(cfg, lora, options);
  PEFT_CUDA_CHECK(cudaSetDevice(a.cuda_device));
  std::size_t free = 0, total = 0;
  PEFT_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  const cuda::ActivationChoice c =
      cuda::choose_activations(a.gradient_checkpointing, keep, selective, recompute, free, a.recompute_num_layers >= 0);
  fmt::print("{}\n", c.note);
  // Kept layers (--recompute_num_layers): described when given, else taken or named when keep-all
  // does not fit and they would (memory_budget.hpp's advise_kept_layers).
  const int layers = static_cast<int>(cfg.num_hidden_layers);
  const bool sel = c.policy == cuda::Activations::kSelective;
  const auto one_kept = [&] {  // the plan with only the last layer keeping everything
    auto o = options;
    o.recompute_num_layers = layers - 1;
    return sel ? Selective::planned_memory(cfg, lora, o) : Recompute::planned_memory(cfg, lora, o);
  };
  const cuda::KeptLayersAdvice k = cuda::advise_kept_layers(a.gradient_checkpointing, c.policy, a.recompute_num_layers,
                                                            keep, sel ? selective : recompute, one_kept, layers, free);
  if (!k.note.empty()) fmt::print("{}\n", k.note);
  a.recompute_num_layers = k.recompute_num_layers;
  a.gradient_checkpointing = c.policy;  // what runs, for args.json (run_record.hpp)
  switch (c.policy) {
    case cuda::Activations::kKeep: return program.template operator()<Cuda>();
    case cuda::Activations::kSelective: return program.template operator()<CudaSelective>();
    case cuda::Activations::kRecompute:
    case cuda::Activations::kAuto: break;  // chosen is never auto
  }
  return program.template operator()<CudaRecompute>();
}

}  // namespace peft::examples
