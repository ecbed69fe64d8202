// The CUDA names beside compositions.hpp's: the recipe's model and trainer on one GPU,
// keeping every layer's activations (Cuda), keeping the attention side and rebuilding the norms
// and gate/up (CudaSelective) or recomputing each layer in the backward (CudaRecompute); the
// programs pick one by --gradient_checkpointing and the free memory.
#pragma once
#include "peft/compositions.hpp"
#include "peft/qwen_cuda.cuh"

namespace peft {

using Qwen25_7B_Lora_Cuda = Qwen25_7B_Lora<Cuda>;
using Qwen25_7B_Lora_CudaSelective = Qwen25_7B_Lora<CudaSelective>;
using Qwen25_7B_Lora_CudaRecompute = Qwen25_7B_Lora<CudaRecompute>;
using Qwen25_7B_LoraTrainer_Cuda = Qwen25_7B_LoraTrainer<Cuda>;

}  // namespace peft
