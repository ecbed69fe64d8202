// AdamW's checkpoint state on the host: its two moments and step count through the shared
// optimizer.safetensors layout (optim/state_file.hpp). The trainer calls these unqualified; a
// device backend overloads them for its parameter list (optim/cuda/adamw.cuh).
#pragma once
#include <array>
#include <filesystem>

#include "peft/optim/adamw.hpp"
#include "peft/optim/state_file.hpp"

namespace peft {

inline std::array<SavedBuffers, 2> saved_buffers(const AdamW& opt) {
  return {{{"exp_avg", &opt.exp_avg}, {"exp_avg_sq", &opt.exp_avg_sq}}};
}

inline void save_optimizer_state(const std::filesystem::path& file, const AdamW& opt, const ParameterList& params,
                                 bool masters = false) {
  write_optimizer_state(file, saved_buffers(opt), params, opt.step_count, masters);
}

// The moments copied now, for a checkpoint written while training goes on.
inline OptimizerSnapshot snapshot_optimizer_state(const AdamW& opt, const ParameterList&) {
  return snapshot_of(saved_buffers(opt), opt.step_count);
}

inline void load_optimizer_state(const std::filesystem::path& file, AdamW& opt, const ParameterList& params) {
  const std::array<LoadedBuffers, 2> b = {{{"exp_avg", &opt.exp_avg}, {"exp_avg_sq", &opt.exp_avg_sq}}};
  opt.step_count = read_optimizer_state(file, b, params);
}

}  // namespace peft
