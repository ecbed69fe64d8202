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

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_arena.cuh"
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

namespace detail {

__global__ void sgd_kernel(const SgdTensor* __restrict__ tensors, const TensorChunk* __restrict__ chunks, float neg_lr,
                           float momentum, float weight_decay, const float* __restrict__ grad_scale, bool zero_grad) {
  const TensorChunk chunk = chunks[blockIdx.x];
  const SgdTensor t = tensors[chunk.tensor];
  const float scale = grad_scale ? *grad_scale : 1.0f;
  for (std::int64_t i = chunk.begin + threadIdx.x; i < chunk.end; i += blockDim.x) {
    float d = t.grad[i] * scale;
    if (zero_grad) t.grad[i] = 0.0f;
    float p = t.param[i];
    if (weight_decay != 0.0f) d += weight_decay * p;
    if (t.momentum_buffer) {
      const float b = t.momentum_buffer[i] * momentum + d;
      t.momentum_buffer[i] = b;
      d = b;
    }
    p += neg_lr * d;
    t.param[i] = p;
    if (t.param_bf16) t.param_bf16[i] = to_bf16(p);
  }
}

inline std::vector<std::int64_t> numels_of(const std::vector<SgdTensor>& tensors) {
  std::vector<std::int64_t> n;
  for (const auto& t : tensors) n.push_back(t.numel);
  return n;
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

class MultiTensorSgd {
 public:
  // With momentum, takes the buffers from the arena (zeroed); uploads the tensor list and chunk table once.
  MultiTensorSgd(DeviceArena& arena, std::vector<SgdTensor> tensors, SgdHyper hyper)
      : hyper_(hyper), chunks_(arena, detail::numels_of(tensors)) {
    for (auto& t : tensors) {
      t.momentum_buffer = nullptr;
      if (hyper_.momentum == 0.0) continue;  // torch keeps no buffer either
      t.momentum_buffer = arena.alloc<float>(t.numel, "SGD momentum_buffer");
      PEFT_CUDA_CHECK(cudaMemset(t.momentum_buffer, 0, t.numel * sizeof(float)));
    }
    host_tensors_ = tensors;
    device_tensors_ = upload_once<SgdTensor>(arena, host_tensors_, "SGD tensor list");
  }

  // One optimizer step at learning rate lr. grad_scale: device scalar multiplying every gradient
  // (the clip coefficient), or null.
  void step(double lr, const float* grad_scale, cudaStream_t stream, bool zero_grad = false) {
    ++step_count_;
    if (chunks_.count() == 0) return;
    detail::sgd_kernel<<<chunks_.count(), 256, 0, stream>>>(device_tensors_, chunks_.device(), static_cast<float>(-lr),
                                                            static_cast<float>(hyper_.momentum),
                                                            static_cast<float>(hyper_.weight_decay), grad_scale,
                                                            zero_grad);
    PEFT_CUDA_CHECK_LAUNCH("sgd_kernel");
  }

  std::int64_t step_count() const { return step_count_; }
  void set_step_count(std::int64_t n) { step_count_ = n; }  // resuming from a checkpoint
  // The tensors with their buffer pointers filled in (for checkpoints and tests).
  const std::vector<SgdTensor>& tensors() const { return host_tensors_; }

 private:
  SgdHyper hyper_;
  ChunkTable chunks_;
  std::vector<SgdTensor> host_tensors_;
  SgdTensor* device_tensors_ = nullptr;
  std::int64_t step_count_ = 0;
};

}  // namespace peft::cuda
