// The CPU model types a `swift sft` command line can ask for, picked from the flags (train type,
// dtype, quantisation) in one place for identity_finetune's CPU path (and its CUDA build's, when
// the run is one the GPU does not do). The types are the library's names (compositions.hpp).
#pragma once
#include "peft/qwen.hpp"
#include "run_sft.hpp"

namespace peft::examples {

inline int run_sft_cpu(SftArgs& args, dist::Communicator* comm) {
  const bool bf16 = args.torch_dtype == "bfloat16";
  if (args.quant.nf4())  // QLoRA; validate_quant_args refused --train_type full
    return bf16 ? run_sft<LoraLm<Nf4Base>>(args, comm) : run_sft<LoraLm<Nf4Fp32>>(args, comm);
  if (args.train_type == "lora")
    return bf16 ? run_sft<Qwen25_7B_Lora_Cpu>(args, comm) : run_sft<LoraLm<Fp32>>(args, comm);
  return bf16 ? run_sft<FullLm<Bf16Mixed>>(args, comm) : run_sft<FullLm<Fp32>>(args, comm);
}

}  // namespace peft::examples
