// A checkpoint's optimizer.safetensors, written once for every optimizer and backend: each
// optimizer names its per-parameter fp32 buffers (AdamW: exp_avg, exp_avg_sq; SGD:
// momentum_buffer), stored as "<buffer>.<parameter name>" in the parameter's shape, with the step
// count in the metadata. A run that stores weights narrower than fp32 also keeps here the fp32
// masters of its non-LoRA trained tensors ("master.<name>", read back by train/checkpoint.hpp),
// since a bf16 copy would lose the low bits and exact resume with them. The names and layout are
// the ones AdamW checkpoints have always had, so existing checkpoints resume unchanged.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/parameter.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/io/safetensors.hpp"

namespace peft {

// One named state buffer per parameter, in the parameter list's order: read to save, written to load.
struct SavedBuffers {
  std::string name;  // "exp_avg"
  const std::vector<Matrix>* values;
};
struct LoadedBuffers {
  std::string name;
  std::vector<Matrix>* values;  // sized as the parameters
};

// `params` gives the names (and, with `masters`, the values); buffer i of each list belongs to params[i].
inline void write_optimizer_state(const std::filesystem::path& file, std::span<const SavedBuffers> buffers,
                                  const ParameterList& params, std::int64_t step, bool masters) {
  SafetensorsWriter w;
  for (const auto& b : buffers) {
    require(b.values->size() == params.size(), "{}: {} '{}' buffers for {} parameters", file.string(), b.values->size(),
            b.name, params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      const Matrix& m = (*b.values)[i];
      w.add_f32_borrowed(b.name + "." + params[i].name, shape_of(m),
                         std::span<const float>(m.data(), static_cast<std::size_t>(m.size())));
    }
  }
  if (masters)
    for (const auto& p : params)
      if (!is_lora_tensor_name(p.name))
        w.add_f32_borrowed("master." + p.name, shape_of(*p.value),
                           std::span<const float>(p.value->data(), static_cast<std::size_t>(p.value->size())));
  w.set_metadata("step", std::to_string(step));
  w.write(file);
}

// An optimizer's buffers copied out at one step, for a checkpoint written while training goes on
// (the trainer's background write): written as write_optimizer_state writes the live buffers.
struct OptimizerSnapshot {
  std::vector<std::string> names;                // per buffer: "exp_avg", ...
  std::vector<std::vector<Matrix>> buffers;      // per buffer, per parameter
  std::int64_t step = 0;

  // `params`: the names, and with `masters` the values (the same step's copies).
  void write(const std::filesystem::path& file, const ParameterList& params, bool masters) const {
    std::vector<SavedBuffers> saved;
    for (std::size_t k = 0; k < names.size(); ++k) saved.push_back({names[k], &buffers[k]});
    write_optimizer_state(file, saved, params, step, masters);
  }
};

// A checkpoint's tensors taken at one step: the trained values and, unless --save_only_model, the
// optimizer's buffers (train/backend_hooks.hpp's take_checkpoint_tensors). A device backend may
// hand them over still on their way to host memory (optim/cuda/device_parameters.cuh), so that the
// steps need not wait for them: `arrive` then waits for the copies and fills `values` and `moments`,
// on the thread that writes the files, before it reads them.
struct CheckpointTensors {
  HostParameters values;
  std::optional<OptimizerSnapshot> moments;
  std::function<void(CheckpointTensors&)> arrive;

  void receive() {
    if (arrive) std::exchange(arrive, nullptr)(*this);
  }
};

inline OptimizerSnapshot snapshot_of(std::span<const SavedBuffers> buffers, std::int64_t step) {
  OptimizerSnapshot snap{.step = step};
  for (const auto& b : buffers) {
    snap.names.push_back(b.name);
    snap.buffers.push_back(*b.values);
  }
  return snap;
}

// Fills the buffers (already sized as the parameters) from `file`; returns the step count.
inline std::int64_t read_optimizer_state(const std::filesystem::path& file, std::span<const LoadedBuffers> buffers,
                                         const ParameterList& params) {
  require(std::filesystem::exists(file), "{}: missing (checkpoint saved with --save_only_model?): cannot resume the "
          "optimizer", file.string());
  const auto st = SafetensorsFile::open(file);
  for (const auto& b : buffers) {
    require(b.values->size() == params.size(), "{}: optimizer not initialised for these parameters", file.string());
    for (std::size_t i = 0; i < params.size(); ++i) {
      const std::string key = b.name + "." + params[i].name;
      require(st.contains(key), "{}: no '{}' for '{}' (a checkpoint of another model, layout or --optim?)",
              file.string(), b.name, params[i].name);
      Matrix& m = (*b.values)[i];
      st.read_f32(key, shape_of(m), m.data());
    }
  }
  const auto it = st.metadata().find("step");
  require(it != st.metadata().end(), "{}: no 'step' in the metadata", file.string());
  return std::stoll(it->second);
}

}  // namespace peft
