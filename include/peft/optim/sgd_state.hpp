// SGD's checkpoint state on the host: its momentum buffers and step count through the shared
// optimizer.safetensors layout (optim/state_file.hpp), as "momentum_buffer.<name>" (torch's
// state key; none without momentum). A device backend overloads these for its parameter list
// (optim/cuda/sgd.cuh).
#pragma once
#include <array>
#include <filesystem>

#include "peft/optim/sgd.hpp"
#include "peft/optim/state_file.hpp"

namespace peft {

inline void save_optimizer_state(const std::filesystem::path& file, const Sgd& opt, const ParameterList& params,
                                 bool masters = false) {
  const std::array<SavedBuffers, 1> b = {{{"momentum_buffer", &opt.momentum_buffer}}};
  write_optimizer_state(file, std::span(b).first(opt.opt.momentum != 0.0 ? 1 : 0), params, opt.step_count, masters);
}

inline void load_optimizer_state(const std::filesystem::path& file, Sgd& opt, const ParameterList& params) {
  const std::array<LoadedBuffers, 1> b = {{{"momentum_buffer", &opt.momentum_buffer}}};
  opt.step_count = read_optimizer_state(file, std::span(b).first(opt.opt.momentum != 0.0 ? 1 : 0), params);
}

}  // namespace peft
