// SGD's checkpoint state on the host: its momentum buffers and step count through the shared
// optimizer.safetensors layout (optim/state_file.hpp), as "momentum_buffer.<name>" (torch's
// state key; none without momentum). A device backend overloads these for its parameter list
// (optim/cuda/sgd.cuh).
#pragma once
#include <array>
#include <filesystem>
#include <vector>

#include "peft/optim/sgd.hpp"
#include "peft/optim/state_file.hpp"

namespace peft {

// The momentum buffers, or none without momentum.
inline std::vector<SavedBuffers> saved_buffers(const Sgd& opt) {
  if (opt.opt.momentum == 0.0) return {};
  return {{"momentum_buffer", &opt.momentum_buffer}};
}

inline void save_optimizer_state(const std::filesystem::path& file, const Sgd& opt, const ParameterList& params,
                                 bool masters = false) {
  write_optimizer_state(file, saved_buffers(opt), params, opt.step_count, masters);
}

// The momentum copied now, for a checkpoint written while training goes on.
inline OptimizerSnapshot snapshot_optimizer_state(const Sgd& opt, const ParameterList&) {
  return snapshot_of(saved_buffers(opt), opt.step_count);
}

inline void load_optimizer_state(const std::filesystem::path& file, Sgd& opt, const ParameterList& params) {
  const std::array<LoadedBuffers, 1> b = {{{"momentum_buffer", &opt.momentum_buffer}}};
  opt.step_count = read_optimizer_state(file, std::span(b).first(opt.opt.momentum != 0.0 ? 1 : 0), params);
}

}  // namespace peft
