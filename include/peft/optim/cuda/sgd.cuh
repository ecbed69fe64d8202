// SGD's backend hooks for a CUDA model's parameters (train/backend_hooks.hpp): the fused
// multi-tensor update (kernels/cuda/sgd.cuh) with its momentum buffers in the model's arena, and
// their checkpoint under the names the CPU SGD writes (optim/sgd_state.hpp). Written beside
// optim/cuda/adamw.cuh to show what a second optimizer costs a backend: these four functions.
#pragma once
#include <filesystem>
#include <vector>

#include "peft/optim/cuda/device_parameters.cuh"
#include "peft/optim/sgd.hpp"

namespace peft::cuda {

inline void optimizer_init(Sgd& opt, const DeviceParameters& params) {
  TrainingState& s = begin_optimizer_state(params);
  std::vector<SgdTensor> tensors;
  for (const auto& p : params.tensors()) tensors.push_back({p.value, p.grad, p.value_bf16, p.numel()});
  s.sgd = std::make_unique<MultiTensorSgd>(*s.arena, tensors, SgdHyper{opt.opt.momentum, opt.opt.weight_decay});
  end_optimizer_state(s);
  opt.step_count = 0;
  opt.momentum_buffer.clear();
}

inline void optimizer_step(Sgd& opt, const DeviceParameters& params, double lr) {
  TrainingState& s = params.state();
  require(s.sgd != nullptr, "optimizer_step (SGD) on CUDA parameters before optimizer_init");
  s.sgd->step(lr, take_clip_scale(s), s.stream);
  opt.step_count = s.sgd->step_count();
}

namespace detail {
// None without momentum, as on the host.
inline std::vector<DeviceStateBuffer> sgd_buffers(const TrainingState& s) {
  require(s.sgd != nullptr, "SGD state of CUDA parameters before optimizer_init");
  std::vector<DeviceStateBuffer> b;
  if (s.sgd->tensors().empty() || s.sgd->tensors().front().momentum_buffer == nullptr) return b;
  b.push_back({"momentum_buffer", {}});
  for (const auto& t : s.sgd->tensors()) b[0].per_tensor.push_back(t.momentum_buffer);
  return b;
}
}  // namespace detail

inline void save_optimizer_state(const std::filesystem::path& file, const Sgd& opt, const DeviceParameters& params,
                                 bool masters = false) {
  save_device_optimizer_state(file, params, detail::sgd_buffers(params.state()), opt.step_count, masters);
}

inline void load_optimizer_state(const std::filesystem::path& file, Sgd& opt, const DeviceParameters& params) {
  opt.step_count = load_device_optimizer_state(file, params, detail::sgd_buffers(params.state()));
  params.state().sgd->set_step_count(opt.step_count);
}

}  // namespace peft::cuda
