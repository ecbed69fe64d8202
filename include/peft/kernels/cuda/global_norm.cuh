// The global gradient norm and the clip coefficient, with torch.nn.utils.clip_grad_norm_'s
// arithmetic as train/grad_norm.hpp: norm = sqrt(sum of g^2 over all gradients),
// coef = min(1, max_norm / (norm + 1e-6)), applied only when max_norm > 0 and the norm is finite.
//
// Two launches, both deterministic (no atomics, so the same gradients give the same norm bit
// for bit): each block reduces one chunk of one tensor (multi_tensor.cuh) to a partial sum with
// cub::BlockReduce; one block then sums the partials in double and writes the norm and the clip
// coefficient to device scalars. Nothing returns to the host: MultiTensorAdamW reads the
// coefficient directly, and the host reads the norm for logging whenever it syncs anyway.
#pragma once
#include <cub/block/block_reduce.cuh>
#include <cstdint>
#include <span>
#include <vector>

#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_arena.cuh"
#include "peft/kernels/cuda/multi_tensor.cuh"

namespace peft::cuda {

struct GradTensor {
  const float* grad;
  std::int64_t numel;
};

namespace detail {

constexpr int kNormThreads = 256;

__global__ void grad_sumsq_partial_kernel(float* __restrict__ partials, const GradTensor* __restrict__ tensors,
                                          const TensorChunk* __restrict__ chunks) {
  using BlockReduce = cub::BlockReduce<float, kNormThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  const TensorChunk chunk = chunks[blockIdx.x];
  const float* g = tensors[chunk.tensor].grad;
  float sq = 0.0f;
  for (std::int64_t i = chunk.begin + threadIdx.x; i < chunk.end; i += kNormThreads) sq += g[i] * g[i];
  const float total = BlockReduce(temp).Sum(sq);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void grad_norm_finish_kernel(float* __restrict__ norm_out, float* __restrict__ clip_out,
                                        const float* __restrict__ partials, int count, float max_norm) {
  using BlockReduce = cub::BlockReduce<double, kNormThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  double sq = 0.0;
  for (int i = threadIdx.x; i < count; i += kNormThreads) sq += static_cast<double>(partials[i]);
  const double total = BlockReduce(temp).Sum(sq);
  if (threadIdx.x == 0) {
    const double norm = sqrt(total);
    double coef = 1.0;
    if (max_norm > 0.0f && isfinite(norm)) coef = fmin(1.0, static_cast<double>(max_norm) / (norm + 1e-6));
    *norm_out = static_cast<float>(norm);
    *clip_out = static_cast<float>(coef);
  }
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

class GlobalGradNorm {
 public:
  // Built once at setup over the gradient buffers it will reduce every step.
  GlobalGradNorm(DeviceArena& arena, const std::vector<GradTensor>& grads) : chunks_(arena, numels_of(grads)) {
    tensors_ = upload_once<GradTensor>(arena, grads, "grad-norm tensor list");
    partials_ = arena.alloc<float>(chunks_.count() > 0 ? chunks_.count() : 1, "grad-norm partial sums");
    scalars_ = arena.alloc<float>(2, "grad-norm results");
  }

  // Writes norm() and clip_scale() on the device. max_norm <= 0: no clipping (coefficient 1).
  void compute(float max_norm, cudaStream_t stream) {
    if (chunks_.count() > 0) {
      detail::grad_sumsq_partial_kernel<<<chunks_.count(), detail::kNormThreads, 0, stream>>>(partials_, tensors_,
                                                                                              chunks_.device());
      PEFT_CUDA_CHECK_LAUNCH("grad_sumsq_partial_kernel");
    }
    detail::grad_norm_finish_kernel<<<1, detail::kNormThreads, 0, stream>>>(scalars_, scalars_ + 1, partials_,
                                                                             chunks_.count(), max_norm);
    PEFT_CUDA_CHECK_LAUNCH("grad_norm_finish_kernel");
  }

  const float* norm() const { return scalars_; }         // device scalar: the norm before clipping
  const float* clip_scale() const { return scalars_ + 1; }  // device scalar: what AdamW multiplies g by

 private:
  ChunkTable chunks_;
  GradTensor* tensors_ = nullptr;
  float* partials_ = nullptr;
  float* scalars_ = nullptr;
};

}  // namespace peft::cuda
