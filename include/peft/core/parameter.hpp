// A trainable tensor as the optimizer and the checkpoint writer see it: its HF module path
// (the name PEFT and transformers use in files), its fp32 master value and its gradient.
// Biases and norm weights are 1 x n matrices so every parameter has one shape type.
#pragma once
#include <string>
#include <vector>

#include "peft/core/tensor.hpp"

namespace peft {

struct Parameter {
  std::string name;  // e.g. "model.layers.0.self_attn.q_proj.lora_A.weight"
  Matrix* value;
  Matrix* grad;
  bool is_vector = false;  // a bias or norm weight: 1-D in HF files
};

using ParameterList = std::vector<Parameter>;

// Owned copies of parameters (a device's downloaded, or a host model's taken at one step for a
// checkpoint written while training goes on): list[i].value points at values[i]; a move keeps
// the matrices where they are, a copy points its list at its own.
struct HostParameters {
  std::vector<Matrix> values;
  ParameterList list;

  HostParameters() = default;
  HostParameters(HostParameters&&) noexcept = default;
  HostParameters& operator=(HostParameters&&) noexcept = default;
  HostParameters(const HostParameters& o) : values(o.values), list(o.list) { point_at_values(); }
  HostParameters& operator=(const HostParameters& o) {
    values = o.values;
    list = o.list;
    point_at_values();
    return *this;
  }
  // The list: values[i] under like[i]'s name (any parameter type with `name` and `is_vector`).
  template <class Described>
  void name_values(const std::vector<Described>& like) {
    list.clear();
    for (std::size_t i = 0; i < like.size() && i < values.size(); ++i)
      list.push_back({like[i].name, &values[i], nullptr, like[i].is_vector});
  }

 private:
  void point_at_values() {
    for (std::size_t i = 0; i < list.size() && i < values.size(); ++i) list[i].value = &values[i];
  }
};

// A copy of host parameters' values under their names (a checkpoint's snapshot on the CPU).
inline HostParameters snapshot_parameters(const ParameterList& params) {
  HostParameters h;
  h.values.reserve(params.size());
  for (const auto& p : params) h.values.push_back(*p.value);
  h.name_values(params);
  return h;
}

}  // namespace peft
