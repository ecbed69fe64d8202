// AdamW on a CUDA model's parameters (train/backend_hooks.hpp): optimizer_init builds the fused
// multi-tensor update (kernels/cuda/adamw.cuh) with its moments in the model's arena; the step
// and the checkpoint of exp_avg / exp_avg_sq (under the names and shapes the CPU AdamW writes,
// optim/adamw_state.hpp) are the shared hooks of optim/cuda/device_parameters.cuh. The host AdamW
// object keeps the hyper-parameters and the step count; its host moment vectors stay empty.
#pragma once
#include <memory>
#include <vector>

#include "peft/optim/adamw.hpp"
#include "peft/kernels/cuda/adamw.cuh"
#include "peft/optim/cuda/device_parameters.cuh"

namespace peft::cuda {

inline void optimizer_init(AdamW& opt, const DeviceParameters& params) {
  TrainingState& s = begin_optimizer_state(params);
  std::vector<AdamWTensor> tensors;
  for (const auto& p : params.tensors())
    tensors.push_back({p.value, p.grad, p.value_bf16, p.numel(), true});  // torch AdamW decays every tensor
  s.optimizer = std::make_unique<MultiTensorAdamW>(
      *s.arena, tensors, AdamWHyper{opt.opt.beta1, opt.opt.beta2, opt.opt.eps, opt.opt.weight_decay});
  end_optimizer_state(params);
  opt.step_count = 0;
  opt.exp_avg.clear();
  opt.exp_avg_sq.clear();
}

}  // namespace peft::cuda
