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

}  // namespace peft
