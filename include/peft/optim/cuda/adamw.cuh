// AdamW's backend hooks for a CUDA model's parameters (train/backend_hooks.hpp): the fused
// multi-tensor update (kernels/cuda/adamw.cuh) with its moments in the model's arena, and their
// checkpoint under the names and shapes the CPU AdamW writes (optim/adamw_state.hpp), so a
// checkpoint resumes on either backend. The host AdamW object keeps the hyper-parameters and the
// step count; its host moment vectors stay empty.
#pragma once
#include <filesystem>
#include <vector>

#include "peft/optim/adamw.hpp"
#include "peft/optim/cuda/device_parameters.cuh"

namespace peft::cuda {

inline void optimizer_init(AdamW& opt, const DeviceParameters& params) {
  TrainingState& s = begin_optimizer_state(params);
  std::vector<AdamWTensor> tensors;
  for (const auto& p : params.tensors())
    tensors.push_back({p.value, p.grad, p.value_bf16, p.numel(), true});  // torch AdamW decays every tensor
  s.adamw = std::make_unique<MultiTensorAdamW>(
      *s.arena, tensors, AdamWHyper{opt.opt.beta1, opt.opt.beta2, opt.opt.eps, opt.opt.weight_decay});
  end_optimizer_state(s);
  opt.step_count = 0;
  opt.exp_avg.clear();
  opt.exp_avg_sq.clear();
}

inline void optimizer_step(AdamW& opt, const DeviceParameters& params, double lr) {
  TrainingState& s = params.state();
  require(s.adamw != nullptr, "optimizer_step (AdamW) on CUDA parameters before optimizer_init");
  s.adamw->step(lr, take_clip_scale(s), s.stream);
  opt.step_count = s.adamw->step_count();
}

namespace detail {
inline std::vector<DeviceStateBuffer> adamw_buffers(const TrainingState& s) {
  require(s.adamw != nullptr, "AdamW state of CUDA parameters before optimizer_init");
  std::vector<DeviceStateBuffer> b = {{"exp_avg", {}}, {"exp_avg_sq", {}}};
  for (const auto& t : s.adamw->tensors()) {
    b[0].per_tensor.push_back(t.exp_avg);
    b[1].per_tensor.push_back(t.exp_avg_sq);
  }
  return b;
}
}  // namespace detail

inline void save_optimizer_state(const std::filesystem::path& file, const AdamW& opt, const DeviceParameters& params,
                                 bool masters = false) {
  save_device_optimizer_state(file, params, detail::adamw_buffers(params.state()), opt.step_count, masters);
}

inline void load_optimizer_state(const std::filesystem::path& file, AdamW& opt, const DeviceParameters& params) {
  opt.step_count = load_device_optimizer_state(file, params, detail::adamw_buffers(params.state()));
  params.state().adamw->set_step_count(opt.step_count);
}

}  // namespace peft::cuda
