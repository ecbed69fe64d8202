// --gradient_checkpointing for the CUDA programs: before the model is built (and its checkpoint
// loaded), the three arena plans are counted for this run's shapes (the model's config, LoRA
// targets, max_length x batch) and held against the GPU's free memory, the chosen one printed by
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
// (Cuda, CudaSelective or CudaRecompute); throws (with the numbers) when even recompute cannot fit.
// a.recompute_num_layers is set here when --gradient_checkpointing false does not fit and some
// layers can keep everything under the leaner policy it falls back to.
template <class Layout, class Precision = Bf16Mixed, class Program>
int with_cuda_activations(SftArgs& a, Program&& program) {
  const ModelConfig cfg = a.model.empty() ? embedded_default_config()
                                          : ModelConfig::from_file(std::filesystem::path(a.model) / "config.json");
  LoraConfig lora = a.lora;
  if (!a.adapters.empty()) lora = read_adapter_config(a.adapters);  // targets and rank decide the LoRA buffers
  using Keep = Qwen2<Layout, Precision, Cuda>;
  using Selective = Qwen2<Layout, Precision, CudaSelective>;
  using Recompute = Qwen2<Layout, Precision, CudaRecompute>;
  const auto options = model_options<Keep>(a);
  const cuda::PlannedMemory keep = Keep::planned_memory(cfg, lora, options);
  const cuda::PlannedMemory selective = Selective::planned_memory(cfg, lora, options);
  const cuda::PlannedMemory recompute = Recompute::planned_memory(cfg, lora, options);
  PEFT_CUDA_CHECK(cudaSetDevice(a.cuda_device));
  std::size_t free = 0, total = 0;
  PEFT_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  const cuda::ActivationChoice c =
      cuda::choose_activations(a.gradient_checkpointing, keep, selective, recompute, free, a.recompute_num_layers >= 0);
  fmt::print("{}\n", c.note);
  const int layers = static_cast<int>(cfg.num_hidden_layers);
  const bool sel = c.policy == cuda::Activations::kSelective;
  if (a.recompute_num_layers >= 0 && c.policy != cuda::Activations::kKeep) {
    fmt::print("[memory] --recompute_num_layers {}: {}\n", a.recompute_num_layers,
               cuda::describe_recompute_layers(a.recompute_num_layers, layers));
  } else if (c.policy != cuda::Activations::kKeep && !cuda::fits(keep, free) && layers > 1) {
    // Keep-all does not fit, but layers that keep everything may: asked for false, the run takes the
    // most that fit; asked for true or selective (to save memory), it names them.
    auto one_kept = options;
    one_kept.recompute_num_layers = layers - 1;
    const cuda::RebuiltLayersFit f = cuda::fewest_rebuilt_layers(
        sel ? selective : recompute,
        sel ? Selective::planned_memory(cfg, lora, one_kept) : Recompute::planned_memory(cfg, lora, one_kept), layers,
        free);
    const std::string what = fmt::format("--gradient_checkpointing {} --recompute_num_layers {} (planned peak {}: {})",
                                         sel ? "selective" : "true", f.rebuilt, cuda::gb(f.planned),
                                         cuda::describe_recompute_layers(f.rebuilt, layers));
    if (f.rebuilt >= 0 && f.rebuilt < layers && a.gradient_checkpointing == cuda::Activations::kKeep) {
      a.recompute_num_layers = f.rebuilt;
      fmt::print("[memory] the layers that fit keep everything, as --gradient_checkpointing false asked: {}\n", what);
    } else if (f.rebuilt >= 0 && f.rebuilt < layers) {
      fmt::print("[memory] faster within the free memory: {}\n", what);
    }
  }
  switch (c.policy) {
    case cuda::Activations::kKeep: return program.template operator()<Cuda>();
    case cuda::Activations::kSelective: return program.template operator()<CudaSelective>();
    case cuda::Activations::kRecompute: break;
  }
  return program.template operator()<CudaRecompute>();
}

}  // namespace peft::examples
