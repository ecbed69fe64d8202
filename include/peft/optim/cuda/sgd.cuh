// SGD on a CUDA model's parameters (train/backend_hooks.hpp): optimizer_init builds the fused
// multi-tensor update (kernels/cuda/sgd.cuh) with its momentum buffers in the model's arena; the
// step and the checkpoint (the names the CPU SGD writes, optim/sgd_state.hpp) are the shared hooks
// of optim/cuda/device_parameters.cuh. What a second optimizer costs a backend: this function and
// its kernel's update rule.
#pragma once
#include <memory>
#include <vector>

#include "peft/kernels/cuda/sgd.cuh"
#include "peft/optim/cuda/device_parameters.cuh"
#include "peft/optim/sgd.hpp"

namespace peft::cuda {

inline void optimizer_init(Sgd& opt, const DeviceParameters& params) {
  TrainingState& s = begin_optimizer_state(params);
  std::vector<SgdTensor> tensors;
  for (const auto& p : params.tensors()) tensors.push_back({p.value, p.grad, p.value_bf16, p.numel()});
  s.optimizer = std::make_unique<MultiTensorSgd>(*s.arena, tensors, SgdHyper{opt.opt.momentum, opt.opt.weight_decay});
  end_optimizer_state(params);
  opt.step_count = 0;
  opt.momentum_buffer.clear();
}

}  // namespace peft::cuda
