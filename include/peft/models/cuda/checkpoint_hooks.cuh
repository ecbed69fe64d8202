// The trainer's checkpoint calls for a CUDA model (found by argument-dependent lookup, as the CPU
// model's in train/checkpoint.hpp): the trained tensors travel through host copies under the CPU
// model's names and shapes, so the CPU path's writer and reader do the file work.
#pragma once
#include <filesystem>
#include <string>

#include "peft/io/peft_adapter.hpp"
#include "peft/models/cuda/qwen2.cuh"

namespace peft {

// The trainer's checkpoint call for a CUDA model: the trained tensors come to the host in PEFT's
// shapes, under the CPU model's names, and go through the CPU path's writer: one PEFT adapter,
// fully trained modules (LastLayers' Full tail) in it as modules_to_save.
template <class L, class P, class A>
void save_trained_weights(const std::filesystem::path& dir, Qwen2Model<L, P, CudaDevice<A>>& model,
                          const std::string& base_model) {
  static_assert(Qwen2Model<L, P, CudaDevice<A>>::uses_lora(),
                "saving a CUDA model without LoRA (HF weights files) is not implemented; train it on Cpu");
  const cuda::HostParameters h = model.trainable_parameters().to_host();
  save_adapter(dir, h.list, model.lora_config(), base_model, static_cast<int>(model.config().num_hidden_layers));
}

// Fills the CUDA model's LoRA parameters from a PEFT adapter folder (as load_adapter_weights).
template <class L, class P, class A>
void load_adapter_weights(const std::filesystem::path& dir, Qwen2Model<L, P, CudaDevice<A>>& model) {
  const auto params = model.trainable_parameters();
  cuda::HostParameters h = params.to_host();
  load_adapter_weights(dir, h.list);
  params.upload(h.list);
}

// Resume: the trained tensors (LoRA and modules_to_save) come back from the checkpoint's adapter.
template <class L, class P, class A>
void load_trained_weights(const std::filesystem::path& dir, Qwen2Model<L, P, CudaDevice<A>>& model) {
  load_adapter_weights(dir, model);
}

}  // namespace peft
