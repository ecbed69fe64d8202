// Fused multi-tensor AdamW with torch.optim.AdamW's arithmetic, the same lines as
// optim/adamw.hpp (the CPU oracle):
//   p *= 1 - lr * wd ;  m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// with the bias corrections computed on the host in double, as the CPU does. Parameters,
// gradients and moments are fp32; one launch updates every tensor (see multi_tensor.cuh) and
// also refreshes each parameter's bf16 copy, the one the GEMMs read, so no separate cast pass.
//
// Gradient clipping needs no host round trip: `grad_scale` points at the device scalar that
// global_norm.cuh writes (min(1, max_norm / (norm + 1e-6))), and g is scaled as it is read.
// With zero_grad the kernel also clears each gradient after reading it, ready for the next
// accumulation window. The step scalars are kernel arguments, so a CUDA graph must not capture
// the update (it changes every step); the forward/backward it follows can be captured.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "peft/kernels/cuda/multi_tensor.cuh"

namespace peft::cuda {

// One trainable tensor. exp_avg / exp_avg_sq are taken from the arena by MultiTensorAdamW.
struct AdamWTensor {
  float* param = nullptr;
  float* grad = nullptr;
  bf16* param_bf16 = nullptr;  // may be null: no bf16 copy kept
  std::int64_t numel = 0;
  bool decay = true;  // false: no weight decay (HF excludes biases and norm weights)
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
};

struct AdamWHyper {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

// The per-element arithmetic (multi_tensor.cuh runs it over every chunk); the step scalars are
// the same for every tensor, the decay is off for tensors with decay false.
struct AdamWRule {
  float step_size, bc2_sqrt, decay, beta1, beta2, eps;

  __device__ float operator()(const AdamWTensor& t, std::int64_t i, float p, float g) const {
    p *= t.decay ? decay : 1.0f;
    const float m = t.exp_avg[i] * beta1 + (1.0f - beta1) * g;
    const float v = t.exp_avg_sq[i] * beta2 + (1.0f - beta2) * g * g;
    t.exp_avg[i] = m;
    t.exp_avg_sq[i] = v;
    return p - step_size * m / (sqrtf(v) / bc2_sqrt + eps);
  }
};

class MultiTensorAdamW final : public MultiTensorOptimizer {
 public:
  // Takes the moments from the arena (zeroed) and uploads the tensor list and chunk table once.
  MultiTensorAdamW(DeviceArena& arena, std::vector<AdamWTensor> tensors, AdamWHyper hyper)
      : hyper_(hyper), list_(arena, with_moments(arena, std::move(tensors)), "AdamW tensor list") {}

  void step(double lr, const float* grad_scale, cudaStream_t stream, bool zero_grad = false) override {
    ++step_count_;
    const double bc1 = 1.0 - std::pow(hyper_.beta1, static_cast<double>(step_count_));
    const double bc2 = 1.0 - std::pow(hyper_.beta2, static_cast<double>(step_count_));
    const AdamWRule rule{static_cast<float>(lr / bc1), static_cast<float>(std::sqrt(bc2)),
                         static_cast<float>(1.0 - lr * hyper_.weight_decay), static_cast<float>(hyper_.beta1),
                         static_cast<float>(hyper_.beta2), static_cast<float>(hyper_.eps)};
    list_.update(rule, grad_scale, stream, zero_grad, "AdamW update");
  }

  std::vector<OptimizerBuffer> buffers() const override {
    std::vector<OptimizerBuffer> b = {{"exp_avg", {}}, {"exp_avg_sq", {}}};
    for (const auto& t : list_.tensors()) {
      b[0].per_tensor.push_back(t.exp_avg);
      b[1].per_tensor.push_back(t.exp_avg_sq);
    }
    return b;
  }
  // The tensors with their moment pointers filled in (for tests).
  const std::vector<AdamWTensor>& tensors() const { return list_.tensors(); }

 private:
  static std::vector<AdamWTensor> with_moments(DeviceArena& arena, std::vector<AdamWTensor> tensors) {
    for (auto& t : tensors) {
      t.exp_avg = arena.alloc<float>(t.numel, "AdamW exp_avg");
      t.exp_avg_sq = arena.alloc<float>(t.numel, "AdamW exp_avg_sq");
      PEFT_CUDA_CHECK(cudaMemset(t.exp_avg, 0, t.numel * sizeof(float)));
      PEFT_CUDA_CHECK(cudaMemset(t.exp_avg_sq, 0, t.numel * sizeof(float)));
    }
    return tensors;
  }

  AdamWHyper hyper_;
  MultiTensorList<AdamWTensor> list_;
};

}  // namespace peft::cuda
