// Global gradient norm and clipping with torch.nn.utils.clip_grad_norm_'s arithmetic:
// norm = sqrt(sum of squares over all gradients); scale = min(1, max_norm / (norm + 1e-6)).
#pragma once
#include <algorithm>
#include <cmath>

#include "peft/core/parameter.hpp"

namespace peft {

inline double global_grad_norm(const ParameterList& params) {
  double sq = 0.0;
  for (const auto& p : params) sq += static_cast<double>(p.grad->squaredNorm());
  return std::sqrt(sq);
}

// Returns the norm before clipping (what HF logs as grad_norm).
inline double clip_grad_norm(const ParameterList& params, double max_norm) {
  const double norm = global_grad_norm(params);
  if (max_norm > 0 && std::isfinite(norm)) {
    const double coef = std::min(1.0, max_norm / (norm + 1e-6));
    if (coef < 1.0)
      for (const auto& p : params) *p.grad *= static_cast<float>(coef);
  }
  return norm;
}

}  // namespace peft
