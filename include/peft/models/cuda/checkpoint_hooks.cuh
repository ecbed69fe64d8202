// The trainer's checkpoint calls for a CUDA model (found by argument-dependent lookup, as the CPU
// model's in train/checkpoint.hpp): the trained tensors travel through host copies under the CPU
// model's names and shapes, so the CPU path's writer and reader do the file work.
#pragma once
#include <filesystem>
#include <string>

#include "peft/io/peft_adapter.hpp"
#include "peft/io/trained_tensors.hpp"
#include "peft/models/cuda/qwen2.cuh"

namespace peft {

// The trainer's checkpoint call for a CUDA model: the trained tensors come to the host in PEFT's
// shapes, under the CPU model's names, and go through the CPU path's writer: one PEFT adapter,
// fully trained modules (LastLayers' Full tail) in it as modules_to_save; without LoRA the HF
// weights file (FullModel: model.safetensors + config.json, bf16), io/trained_tensors.hpp.
template <class L, class P, class A>
void save_trained_weights(const std::filesystem::path& dir, Qwen2Model<L, P, CudaDevice<A>>& model,
                          const std::string& base_model) {
  trained_weights_writer(model, base_model)(dir, model.trainable_parameters().to_host().list);
}

// Fills the CUDA model's LoRA parameters from a PEFT adapter folder (as load_adapter_weights).
template <class L, class P, class A>
void load_adapter_weights(const std::filesystem::path& dir, Qwen2Model<L, P, CudaDevice<A>>& model) {
  const auto params = model.trainable_parameters();
  cuda::HostParameters h = params.to_host();
  load_adapter_weights(dir, h.list);
  params.upload(h.list);
}

// Resume: the trained tensors come back from the checkpoint's adapter (LoRA and modules_to_save)
// or, without LoRA, from the fp32 masters in its optimizer state (io/trained_tensors.hpp).
template <class L, class P, class A>
void load_trained_weights(const std::filesystem::path& dir, Qwen2Model<L, P, CudaDevice<A>>& model) {
  using Model = Qwen2Model<L, P, CudaDevice<A>>;
  if constexpr (Model::uses_lora()) {
    load_adapter_weights(dir, model);
  } else {
    const auto params = model.trainable_parameters();
    cuda::HostParameters h = params.to_host();
    load_trained_tensors(dir, h.list, trains_whole_model<Model>(), P::storage);
    params.upload(h.list);
  }
}

}  // namespace peft
