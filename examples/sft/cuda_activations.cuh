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
template <class Layout, class Precision = Bf16Mixed, class Program>
int with_cuda_activations(const SftArgs& a, Program&& program) {
  const ModelConfig cfg = a.model.empty() ? embedded_default_config()
                                          : ModelConfig::from_file(std::filesystem::path(a.model) / "config.json");
  LoraConfig lora = a.lora;
  if (!a.adapters.empty()) lora = read_adapter_config(a.adapters);  // targets and rank decide the LoRA buffers
  using Keep = Qwen2<Layout, Precision, Cuda>;
  const auto options = model_options<Keep>(a);
  const cuda::PlannedMemory keep = Keep::planned_memory(cfg, lora, options);
  const cuda::PlannedMemory selective = Qwen2<Layout, Precision, CudaSelective>::planned_memory(cfg, lora, options);
  const cuda::PlannedMemory recompute = Qwen2<Layout, Precision, CudaRecompute>::planned_memory(cfg, lora, options);
  PEFT_CUDA_CHECK(cudaSetDevice(a.cuda_device));
  std::size_t free = 0, total = 0;
  PEFT_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  const cuda::ActivationChoice c = cuda::choose_activations(a.gradient_checkpointing, keep, selective, recompute, free);
  fmt::print("{}\n", c.note);
  switch (c.policy) {
    case cuda::Activations::kKeep: return program.template operator()<Cuda>();
    case cuda::Activations::kSelective: return program.template operator()<CudaSelective>();
    case cuda::Activations::kRecompute: break;
  }
  return program.template operator()<CudaRecompute>();
}

}  // namespace peft::examples
