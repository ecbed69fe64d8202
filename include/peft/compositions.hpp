// The concrete models and trainers the programs build, named once. A composition is a sentence of
// policies: Qwen2<what trains, how numbers are stored, where it runs>; shapes come from config.json
// at run time, so one name serves every Qwen2.5 size. The programs pick among these from their
// flags (--train_type, --torch_dtype, --quant_bits, --device) and never spell Qwen2<...> themselves.
// The CUDA names are in compositions_cuda.cuh (nvcc translation units only).
// This header sits at the top of the stack (it names trainer types), beside the umbrella.
#pragma once
#include "peft/models/qwen2.hpp"
#include "peft/optim/adamw.hpp"
#include "peft/optim/schedules.hpp"
#include "peft/policies/device.hpp"
#include "peft/policies/linear_policy.hpp"
#include "peft/policies/precision.hpp"
#include "peft/train/trainer.hpp"

namespace peft {

// LoRA on the --target_modules projections, its rank a run-time value (--lora_rank).
template <PrecisionPolicy P, DevicePolicy D = Cpu>
using LoraLm = Qwen2<Lora<>, P, D>;
// --train_type full: every weight trains.
template <PrecisionPolicy P, DevicePolicy D = Cpu>
using FullLm = Qwen2<Full, P, D>;
// Nothing trains: a base model for generation (chat without --adapters).
template <PrecisionPolicy P, DevicePolicy D = Cpu>
using FrozenLm = Qwen2<Frozen, P, D>;

// The recipe: Qwen2.5-7B-Instruct with LoRA on all linear layers, bf16 weights, fp32 LoRA masters.
template <DevicePolicy D>
using Qwen25_7B_Lora = LoraLm<Bf16Mixed, D>;
using Qwen25_7B_Lora_Cpu = Qwen25_7B_Lora<Cpu>;
// Its trainer (the programs add their evaluation hooks to the same three policies).
template <DevicePolicy D, Optimizer Opt = AdamW>
using Qwen25_7B_LoraTrainer = Trainer<Qwen25_7B_Lora<D>, Opt, NamedSchedule>;
using Qwen25_7B_LoraTrainer_Cpu = Qwen25_7B_LoraTrainer<Cpu>;

}  // namespace peft
