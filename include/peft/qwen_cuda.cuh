// The Cuda device policy and everything it runs: include this from an nvcc translation unit
// (after or instead of peft/qwen.hpp) to get
//   Qwen2<Lora<8>, Bf16Mixed, Cuda>            keep every layer's activations
//   Qwen2<Lora<8>, Bf16Mixed, CudaSelective>   keep the attention side, rebuild the norms and gate/up
//   Qwen2<Lora<8>, Bf16Mixed, CudaRecompute>   recompute each layer in the backward
// and the backend hooks (clip, AdamW and SGD steps, checkpoints) for its device-resident parameters.
// Header-only, as CUB and CUTLASS: compile with -DFMT_USE_CONSTEXPR=1 (docs/cuda_backend.md).
#pragma once
#include "peft/qwen.hpp"

#include "peft/policies/cuda_device.hpp"
#include "peft/optim/cuda/device_parameters.cuh"
#include "peft/optim/cuda/adamw.cuh"
#include "peft/optim/cuda/sgd.cuh"
#include "peft/models/cuda/qwen2.cuh"
#include "peft/models/cuda/checkpoint_hooks.cuh"
