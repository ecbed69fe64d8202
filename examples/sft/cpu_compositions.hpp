// The CPU model types a `swift sft` command line can ask for, picked from the flags (train type,
// dtype, quantisation) in one place for identity_finetune and identity_finetune_cuda's CPU path.
#pragma once
#include "peft/qwen.hpp"
#include "run_sft.hpp"

namespace peft::examples {

inline int run_sft_cpu(SftArgs& args, dist::Communicator* comm) {
  const bool bf16 = args.torch_dtype == "bfloat16";
  if (args.quant.nf4())  // QLoRA; validate_quant_args refused --train_type full
    return bf16 ? run_sft<Qwen2<Lora<>, Nf4Base, Cpu>>(args, comm) : run_sft<Qwen2<Lora<>, Nf4Fp32, Cpu>>(args, comm);
  if (args.train_type == "lora")
    return bf16 ? run_sft<Qwen2<Lora<>, Bf16Mixed, Cpu>>(args, comm) : run_sft<Qwen2<Lora<>, Fp32, Cpu>>(args, comm);
  return bf16 ? run_sft<Qwen2<Full, Bf16Mixed, Cpu>>(args, comm) : run_sft<Qwen2<Full, Fp32, Cpu>>(args, comm);
}

}  // namespace peft::examples
