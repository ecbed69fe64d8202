// --gradient_checkpointing for the CUDA programs: before the model is built (and its checkpoint
// loaded), both arena plans are counted for this run's shapes (the model's config, LoRA targets,
// max_length x batch), printed by part, and held against the GPU's free memory; the choice between
// Qwen2<..., Cuda> (keep every layer's activations) and Qwen2<..., CudaRecompute> follows
// models/cuda/memory_budget.hpp. The policy is a type, so the caller instantiates both programs
// and picks one with the returned flag.
#pragma once
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <filesystem>

#include "peft/qwen_cuda.cuh"
#include "sft/run_sft.hpp"

namespace peft::examples {

// Returns true for recompute; throws (with the numbers) when even recompute cannot fit.
template <class Layout, class Precision = Bf16Mixed>
bool cuda_recompute_activations(const SftArgs& a) {
  const ModelConfig cfg = a.model.empty() ? embedded_default_config()
                                          : ModelConfig::from_file(std::filesystem::path(a.model) / "config.json");
  LoraConfig lora = a.lora;
  if (!a.adapters.empty()) lora = read_adapter_config(a.adapters);  // targets and rank decide the LoRA buffers
  using Keep = Qwen2<Layout, Precision, Cuda>;
  using Recompute = Qwen2<Layout, Precision, CudaRecompute>;
  const auto options = model_options<Keep>(a);
  const cuda::PlannedMemory keep = Keep::planned_memory(cfg, lora, options);
  const cuda::PlannedMemory recompute = Recompute::planned_memory(cfg, lora, options);
  PEFT_CUDA_CHECK(cudaSetDevice(a.cuda_device));
  std::size_t free = 0, total = 0;
  PEFT_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  const cuda::ActivationChoice c = cuda::choose_activations(a.gradient_checkpointing, keep, recompute, free);
  fmt::print("{}\n", c.note);
  return c.recompute;
}

}  // namespace peft::examples
