// SGD with torch.optim.SGD's arithmetic (dampening 0, nesterov off, the default foreach=False
// path), the second optimizer policy beside AdamW: it proves that the trainer takes any
// optimizer through the same hooks (train/backend_hooks.hpp), on the CPU and on the GPU
// (optim/cuda/sgd.cuh runs the same lines in one multi-tensor launch).
//   g = g + wd * p                                (coupled weight decay, torch's L2 term)
//   b = momentum * b + g ; g = b                  (only with momentum; the first step's b is g)
//   p = p - lr * g
// The momentum buffers are fp32 and live beside each parameter, in the parameter list's order;
// a zero buffer makes the first step's "b = g" the same line as every later one. Without momentum
// there are none (torch keeps none either), and a checkpoint holds only the step count.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/parameter.hpp"

namespace peft {

struct Sgd {
  struct Options {
    double momentum = 0.0, weight_decay = 0.0;  // torch.optim.SGD's defaults
  };

  Sgd() = default;
  explicit Sgd(Options o) : opt(o) {
    require(o.momentum >= 0 && o.momentum < 1, "SGD: momentum {} must be in [0, 1)", o.momentum);
    require(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "SGD: weight_decay {} must be >= 0",
            o.weight_decay);
  }

  Options opt;
  std::int64_t step_count = 0;
  std::vector<Matrix> momentum_buffer;

  void init(const ParameterList& params) {
    momentum_buffer.clear();
    if (opt.momentum != 0.0)
      for (const auto& p : params) momentum_buffer.push_back(Matrix::Zero(p.value->rows(), p.value->cols()));
    step_count = 0;
  }

  void step(const ParameterList& params, double lr) {
    const bool with_momentum = opt.momentum != 0.0;
    require(!with_momentum || params.size() == momentum_buffer.size(), "SGD: {} parameters but state for {}",
            params.size(), momentum_buffer.size());
    ++step_count;
    const float wd = static_cast<float>(opt.weight_decay), mom = static_cast<float>(opt.momentum);
    const float neg_lr = static_cast<float>(-lr);
    for (std::size_t i = 0; i < params.size(); ++i) {
      float* p = params[i].value->data();
      const float* g = params[i].grad->data();
      float* b = with_momentum ? momentum_buffer[i].data() : nullptr;
      for (Eigen::Index j = 0; j < params[i].value->size(); ++j) {
        float d = g[j];
        if (opt.weight_decay != 0.0) d += wd * p[j];
        if (with_momentum) {
          b[j] = b[j] * mom + d;
          d = b[j];
        }
        p[j] += neg_lr * d;
      }
    }
  }
};

}  // namespace peft
