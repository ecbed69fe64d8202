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

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_arena.cuh"
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

namespace detail {

struct AdamWScalars {
  float step_size, bc2_sqrt, decay, beta1, beta2, eps;
};

__global__ void adamw_kernel(const AdamWTensor* __restrict__ tensors, const TensorChunk* __restrict__ chunks,
                             AdamWScalars s, const float* __restrict__ grad_scale, bool zero_grad) {
  const TensorChunk chunk = chunks[blockIdx.x];
  const AdamWTensor t = tensors[chunk.tensor];
  const float scale = grad_scale ? *grad_scale : 1.0f;
  const float decay = t.decay ? s.decay : 1.0f;
  for (std::int64_t i = chunk.begin + threadIdx.x; i < chunk.end; i += blockDim.x) {
    const float g = t.grad[i] * scale;
    if (zero_grad) t.grad[i] = 0.0f;
    float p = t.param[i] * decay;
    const float m = t.exp_avg[i] * s.beta1 + (1.0f - s.beta1) * g;
    const float v = t.exp_avg_sq[i] * s.beta2 + (1.0f - s.beta2) * g * g;
    p -= s.step_size * m / (sqrtf(v) / s.bc2_sqrt + s.eps);
    t.exp_avg[i] = m;
    t.exp_avg_sq[i] = v;
    t.param[i] = p;
    if (t.param_bf16) t.param_bf16[i] = to_bf16(p);
  }
}

inline std::vector<std::int64_t> numels_of(const std::vector<AdamWTensor>& tensors) {
  std::vector<std::int64_t> n;
  for (const auto& t : tensors) n.push_back(t.numel);
  return n;
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

class MultiTensorAdamW {
 public:
  // Takes the moments from the arena (zeroed) and uploads the tensor list and chunk table once.
  MultiTensorAdamW(DeviceArena& arena, std::vector<AdamWTensor> tensors, AdamWHyper hyper)
      : hyper_(hyper), chunks_(arena, detail::numels_of(tensors)) {
    for (auto& t : tensors) {
      t.exp_avg = arena.alloc<float>(t.numel, "AdamW exp_avg");
      t.exp_avg_sq = arena.alloc<float>(t.numel, "AdamW exp_avg_sq");
      PEFT_CUDA_CHECK(cudaMemset(t.exp_avg, 0, t.numel * sizeof(float)));
      PEFT_CUDA_CHECK(cudaMemset(t.exp_avg_sq, 0, t.numel * sizeof(float)));
    }
    host_tensors_ = tensors;
    device_tensors_ = upload_once<AdamWTensor>(arena, host_tensors_, "AdamW tensor list");
  }

  // One optimizer step at learning rate lr. grad_scale: device scalar multiplying every gradient
  // (the clip coefficient), or null.
  void step(double lr, const float* grad_scale, cudaStream_t stream, bool zero_grad = false) {
    ++step_count_;
    const double bc1 = 1.0 - std::pow(hyper_.beta1, static_cast<double>(step_count_));
    const double bc2 = 1.0 - std::pow(hyper_.beta2, static_cast<double>(step_count_));
    const detail::AdamWScalars s{static_cast<float>(lr / bc1), static_cast<float>(std::sqrt(bc2)),
                                 static_cast<float>(1.0 - lr * hyper_.weight_decay), static_cast<float>(hyper_.beta1),
                                 static_cast<float>(hyper_.beta2), static_cast<float>(hyper_.eps)};
    if (chunks_.count() == 0) return;
    detail::adamw_kernel<<<chunks_.count(), 256, 0, stream>>>(device_tensors_, chunks_.device(), s, grad_scale, zero_grad);
    PEFT_CUDA_CHECK_LAUNCH("adamw_kernel");
  }

  std::int64_t step_count() const { return step_count_; }
  void set_step_count(std::int64_t n) { step_count_ = n; }  // resuming from a checkpoint
  // The tensors with their moment pointers filled in (for checkpoints and tests).
  const std::vector<AdamWTensor>& tensors() const { return host_tensors_; }

 private:
  AdamWHyper hyper_;
  ChunkTable chunks_;
  std::vector<AdamWTensor> host_tensors_;
  AdamWTensor* device_tensors_ = nullptr;
  std::int64_t step_count_ = 0;
};

}  // namespace peft::cuda
