// AdamW with torch.optim.AdamW's arithmetic (the default, non-fused, non-amsgrad path):
//   p *= 1 - lr * wd                                  (decoupled weight decay, first)
//   m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The moments are fp32 and live beside each parameter, in the parameter list's order.
// Satisfies the Optimizer concept (optim/optimizer.hpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/parameter.hpp"

namespace peft {

struct AdamW {
  struct Options {
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  };

  AdamW() = default;
  explicit AdamW(Options o) : opt(o) {
    // The same rule as TrainingArguments::validate, for callers that build the optimizer directly.
    require(o.beta1 >= 0 && o.beta1 < 1, "AdamW: beta1 {} must be in [0, 1)", o.beta1);
    require(o.beta2 >= 0 && o.beta2 < 1, "AdamW: beta2 {} must be in [0, 1)", o.beta2);
    require(o.eps > 0 && std::isfinite(o.eps), "AdamW: eps {} must be positive", o.eps);
    require(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "AdamW: weight_decay {} must be >= 0",
            o.weight_decay);
  }

  Options opt;
  std::int64_t step_count = 0;
  std::vector<Matrix> exp_avg, exp_avg_sq;

  void init(const ParameterList& params) {
    exp_avg.clear();
    exp_avg_sq.clear();
    for (const auto& p : params) {
      exp_avg.push_back(Matrix::Zero(p.value->rows(), p.value->cols()));
      exp_avg_sq.push_back(Matrix::Zero(p.value->rows(), p.value->cols()));
    }
    step_count = 0;
  }

  void step(const ParameterList& params, double lr) {
    require(params.size() == exp_avg.size(), "AdamW: {} parameters but state for {}", params.size(), exp_avg.size());
    ++step_count;
    const double bc1 = 1.0 - std::pow(opt.beta1, static_cast<double>(step_count));
    const double bc2 = 1.0 - std::pow(opt.beta2, static_cast<double>(step_count));
    const float step_size = static_cast<float>(lr / bc1);
    const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    const float decay = static_cast<float>(1.0 - lr * opt.weight_decay);
    const float b1 = static_cast<float>(opt.beta1), b2 = static_cast<float>(opt.beta2);
    const float eps = static_cast<float>(opt.eps);
    for (std::size_t i = 0; i < params.size(); ++i) {
      float* p = params[i].value->data();
      const float* g = params[i].grad->data();
      float* m = exp_avg[i].data();
      float* v = exp_avg_sq[i].data();
      for (Eigen::Index j = 0; j < params[i].value->size(); ++j) {
        if (opt.weight_decay != 0.0) p[j] *= decay;
        m[j] = m[j] * b1 + (1.0f - b1) * g[j];  // torch lerp_(grad, 1 - beta1)
        v[j] = v[j] * b2 + (1.0f - b2) * g[j] * g[j];
        p[j] -= step_size * m[j] / (std::sqrt(v[j]) / bc2_sqrt + eps);
      }
    }
  }
};

}  // namespace peft
