// Fused multi-tensor SGD with torch.optim.SGD's arithmetic, the same lines as optim/sgd.hpp
// (the CPU oracle; dampening 0, no nesterov, coupled weight decay):
//   d = g + wd p ;  b = momentum b + d ; d = b  (with momentum) ;  p -= lr d
// One launch updates every tensor (multi_tensor.cuh) and refreshes each parameter's bf16 copy,
// as adamw.cuh does; `grad_scale` is global_norm.cuh's clip coefficient, read on the device, and
// zero_grad clears each gradient after reading it. The momentum buffer starts at zero, which
// makes the first step's b = d the same line as every later one (torch clones d instead).
#pragma once
#include <cstdint>
#include <vector>

#include "peft/kernels/cuda/multi_tensor.cuh"

namespace peft::cuda {

// One trainable tensor; momentum_buffer is taken from the arena by MultiTensorSgd (with momentum).
struct SgdTensor {
  float* param = nullptr;
  float* grad = nullptr;
  bf16* param_bf16 = nullptr;  // may be null: no bf16 copy kept
  std::int64_t numel = 0;
  float* momentum_buffer = nullptr;
};

struct SgdHyper {
  double momentum = 0.0, weight_decay = 0.0;
};

// The per-element arithmetic (multi_tensor.cuh runs it over every chunk).
struct SgdRule {
  float neg_lr, momentum, weight_decay;

  __device__ float operator()(const SgdTensor& t, std::int64_t i, float p, float d) const {
    if (weight_decay != 0.0f) d += weight_decay * p;
    if (t.momentum_buffer) {
      const float b = t.momentum_buffer[i] * momentum + d;
      t.momentum_buffer[i] = b;
      d = b;
    }
    return p + neg_lr * d;
  }
};

class MultiTensorSgd final : public MultiTensorOptimizer {
 public:
  // With momentum, takes the buffers from the arena (zeroed); uploads the tensor list and chunk table once.
  MultiTensorSgd(DeviceArena& arena, std::vector<SgdTensor> tensors, SgdHyper hyper)
      : hyper_(hyper), list_(arena, with_buffers(arena, std::move(tensors), hyper.momentum), "SGD tensor list") {}

  void step(double lr, const float* grad_scale, cudaStream_t stream, bool zero_grad = false) override {
    ++step_count_;
    const SgdRule rule{static_cast<float>(-lr), static_cast<float>(hyper_.momentum),
                       static_cast<float>(hyper_.weight_decay)};
    list_.update(rule, grad_scale, stream, zero_grad, "SGD update");
  }

  // None without momentum, as on the host.
  std::vector<OptimizerBuffer> buffers() const override {
    if (hyper_.momentum == 0.0) return {};
    std::vector<OptimizerBuffer> b = {{"momentum_buffer", {}}};
    for (const auto& t : list_.tensors()) b[0].per_tensor.push_back(t.momentum_buffer);
    return b;
  }
  // The tensors with their buffer pointers filled in (for tests).
  const std::vector<SgdTensor>& tensors() const { return list_.tensors(); }

 private:
  static std::vector<SgdTensor> with_buffers(DeviceArena& arena, std::vector<SgdTensor> tensors, double momentum) {
    for (auto& t : tensors) {
      t.momentum_buffer = nullptr;
      if (momentum == 0.0) continue;  // torch keeps no buffer either
      t.momentum_buffer = arena.alloc<float>(t.numel, "SGD momentum_buffer");
      PEFT_CUDA_CHECK(cudaMemset(t.momentum_buffer, 0, t.numel * sizeof(float)));
    }
    return tensors;
  }

  SgdHyper hyper_;
  MultiTensorList<SgdTensor> list_;
};

}  // namespace peft::cuda
