// The backend hooks: every call the trainer makes on a model's parameters, an optimizer's state
// or a checkpoint's tensors, declared here once as the TrainerBackend concept, with the CPU
// defaults beside it. The trainer calls them unqualified, so a backend whose parameters live on a
// device overloads them for its own parameter-list type and argument-dependent lookup finds them
// (the CUDA ones: optim/cuda/device_parameters.cuh, optim/cuda/adamw.cuh, optim/cuda/sgd.cuh,
// models/cuda/qwen2.cuh). An optimizer is a policy: it brings its own init/step and state file.
//
//   hook                                          CPU default (host ParameterList)
//   clip_grad_norm(params, max) -> norm           train/grad_norm.hpp
//   all_reduce_grads(comm, params)                dist/communicator.hpp
//   optimizer_init(opt, params)                   opt.init(params), below
//   optimizer_step(opt, params, lr)               opt.step(params, lr), below
//   save_optimizer_state(file, opt, params, m)    optim/adamw_state.hpp, optim/sgd_state.hpp
//   load_optimizer_state(file, opt, params)       the same
//   snapshot_optimizer_state(opt, params)         the same (the buffers copied now, for a checkpoint
//                                                 written on the trainer's write thread)
//   snapshot_parameters(params)                   core/parameter.hpp (host copies of the values)
//   take_checkpoint_tensors(opt, params, moments) the two above, below (a device's copies may
//                                                 arrive on the write thread: optim/state_file.hpp)
//   save_trained_weights(dir, model, base)        train/checkpoint.hpp
//   load_trained_weights(dir, model)              train/checkpoint.hpp
//   model.zero_grad()                             the model's member (models/causal_lm.hpp)
#pragma once
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <string>
#include <type_traits>
#include <utility>

#include "peft/dist/communicator.hpp"
#include "peft/models/causal_lm.hpp"
#include "peft/optim/adamw_state.hpp"
#include "peft/optim/sgd_state.hpp"
#include "peft/train/checkpoint.hpp"
#include "peft/train/grad_norm.hpp"

namespace peft {

// A host optimizer's own members; a device backend overloads these for its parameter list.
template <class Opt, class Params>
  requires requires(Opt& o, const Params& p) { o.init(p); }
void optimizer_init(Opt& opt, const Params& params) { opt.init(params); }
template <class Opt, class Params>
  requires requires(Opt& o, const Params& p, double lr) { o.step(p, lr); }
void optimizer_step(Opt& opt, const Params& params, double lr) { opt.step(params, lr); }

// A checkpoint's tensors (optim/state_file.hpp's CheckpointTensors) as host copies made now.
template <class Opt, class Params>
CheckpointTensors take_checkpoint_tensors(const Opt& opt, const Params& params, bool moments) {
  CheckpointTensors t{.values = snapshot_parameters(params)};
  if (moments) t.moments = snapshot_optimizer_state(opt, params);
  return t;
}

// The list trainable_parameters() returns: ParameterList on the CPU, cuda::DeviceParameters on the GPU.
template <class Model>
using parameters_of_t = std::remove_cvref_t<decltype(std::declval<Model&>().trainable_parameters())>;

// How many trainable values a parameter list holds (a device list counts its own).
template <class Params>
std::int64_t trainable_numel(const Params& params) {
  if constexpr (requires { params.numel(); }) {
    return params.numel();
  } else {
    std::int64_t n = 0;
    for (const auto& p : params) n += static_cast<std::int64_t>(p.value->size());
    return n;
  }
}

template <class Model, class Opt>
concept TrainerBackend =
    CausalLm<Model> &&
    requires(Model& model, Opt& opt, const Opt& saved, const parameters_of_t<Model>& params, dist::Communicator& comm,
             const std::filesystem::path& path, const std::string& base_model, double x, bool masters) {
      { clip_grad_norm(params, x) } -> std::convertible_to<double>;
      all_reduce_grads(comm, params);
      optimizer_init(opt, params);
      optimizer_step(opt, params, x);
      save_optimizer_state(path, saved, params, masters);
      load_optimizer_state(path, opt, params);
      { snapshot_optimizer_state(saved, params) } -> std::same_as<OptimizerSnapshot>;
      { snapshot_parameters(params) } -> std::same_as<HostParameters>;
      { take_checkpoint_tensors(saved, params, masters) } -> std::same_as<CheckpointTensors>;
      save_trained_weights(path, model, base_model);
      load_trained_weights(path, model);
    };

}  // namespace peft
