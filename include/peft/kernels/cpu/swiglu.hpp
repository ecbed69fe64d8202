// SwiGLU activation: act = silu(gate) * up, and its backward. silu'(g) = s(g) * (1 + g (1 - s(g))).
#pragma once
#include <cmath>

#include "peft/core/tensor.hpp"

namespace peft::cpu {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

inline void swiglu_forward(const Matrix& gate, const Matrix& up, Matrix& act) {
  act = gate.binaryExpr(up, [](float g, float u) { return g * sigmoid(g) * u; });
}

inline void swiglu_backward(const Matrix& dact, const Matrix& gate, const Matrix& up, Matrix& dgate, Matrix& dup) {
  dgate.resize(gate.rows(), gate.cols());
  dup.resize(up.rows(), up.cols());
  for (Eigen::Index i = 0; i < gate.size(); ++i) {
    const float g = gate.data()[i], u = up.data()[i], d = dact.data()[i];
    const float s = sigmoid(g);
    dup.data()[i] = d * g * s;
    dgate.data()[i] = d * u * s * (1.0f + g * (1.0f - s));
  }
}

}  // namespace peft::cpu
