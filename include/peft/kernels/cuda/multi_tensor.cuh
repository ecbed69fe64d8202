// One launch over many tensors: the optimizer update and the gradient norm touch every trainable
// tensor (392 LoRA matrices for the 7B), and a launch per tensor would cost more than the work.
// A chunk table, built once at setup, cuts each tensor into fixed-size element ranges; block b of
// a multi-tensor kernel handles chunk b, whichever tensor it belongs to. Chunks never straddle
// two tensors, so a kernel reads one tensor's pointers per block.
//
// The fused optimizers (adamw.cuh, sgd.cuh) differ only in their per-element arithmetic: the
// chunk loop, the gradient scaling and clearing, the bf16 refresh and the tensor list are written
// once here (MultiTensorList::update), and each optimizer passes its update rule as a functor.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_arena.cuh"

namespace peft::cuda {

struct TensorChunk {
  int tensor;              // index into the kernel's tensor list
  std::int64_t begin, end;  // element range [begin, end) of that tensor
};

// The element counts of a list of tensor descriptors (anything with a `numel`), what ChunkTable cuts.
template <class Tensor>
std::vector<std::int64_t> numels_of(const std::vector<Tensor>& tensors) {
  std::vector<std::int64_t> n;
  for (const auto& t : tensors) n.push_back(t.numel);
  return n;
}

class ChunkTable {
 public:
  static constexpr std::int64_t kChunkElements = 16384;

  // Uploads the table once (a synchronous copy: setup time, never inside a step).
  ChunkTable(DeviceArena& arena, std::span<const std::int64_t> numels) {
    std::vector<TensorChunk> chunks;
    for (std::size_t t = 0; t < numels.size(); ++t)
      for (std::int64_t b = 0; b < numels[t]; b += kChunkElements)
        chunks.push_back({static_cast<int>(t), b, b + kChunkElements < numels[t] ? b + kChunkElements : numels[t]});
    count_ = static_cast<int>(chunks.size());
    if (count_ == 0) return;
    chunks_ = arena.alloc<TensorChunk>(chunks.size(), "multi-tensor chunk table");
    PEFT_CUDA_CHECK(cudaMemcpy(chunks_, chunks.data(), chunks.size() * sizeof(TensorChunk), cudaMemcpyHostToDevice));
  }

  const TensorChunk* device() const { return chunks_; }
  int count() const { return count_; }

 private:
  TensorChunk* chunks_ = nullptr;
  int count_ = 0;
};

// Copies a host array of POD descriptors into the arena once, at setup.
template <class T>
T* upload_once(DeviceArena& arena, std::span<const T> host, const char* what) {
  if (host.empty()) return nullptr;
  T* d = arena.alloc<T>(host.size(), what);
  PEFT_CUDA_CHECK(cudaMemcpy(d, host.data(), host.size_bytes(), cudaMemcpyHostToDevice));
  return d;
}

// Block b updates chunk b: g = grad * grad_scale (the clip coefficient, or 1), the gradient cleared
// after reading when zero_grad, p = rule(tensor, i, p, g), and the bf16 copy the GEMMs read
// refreshed from the new fp32 value. Tensor needs param, grad and param_bf16 (may be null).
template <class Tensor, class Rule>
__global__ void multi_tensor_update_kernel(const Tensor* __restrict__ tensors, const TensorChunk* __restrict__ chunks,
                                           Rule rule, const float* __restrict__ grad_scale, bool zero_grad) {
  const TensorChunk chunk = chunks[blockIdx.x];
  const Tensor t = tensors[chunk.tensor];
  const float scale = grad_scale ? *grad_scale : 1.0f;
  for (std::int64_t i = chunk.begin + threadIdx.x; i < chunk.end; i += blockDim.x) {
    const float g = t.grad[i] * scale;
    if (zero_grad) t.grad[i] = 0.0f;
    const float p = rule(t, i, t.param[i], g);
    t.param[i] = p;
    if (t.param_bf16) t.param_bf16[i] = to_bf16(p);
  }
}

// The tensor descriptors of one fused optimizer, with their chunk table, uploaded once at setup.
template <class Tensor>
class MultiTensorList {
 public:
  MultiTensorList(DeviceArena& arena, std::vector<Tensor> tensors, const char* what)
      : chunks_(arena, numels_of(tensors)), host_(std::move(tensors)) {
    device_ = upload_once<Tensor>(arena, host_, what);
  }

  // One launch over every tensor with the optimizer's per-element rule.
  template <class Rule>
  void update(const Rule& rule, const float* grad_scale, cudaStream_t stream, bool zero_grad, const char* kernel) const {
    if (chunks_.count() == 0) return;
    multi_tensor_update_kernel<<<chunks_.count(), 256, 0, stream>>>(device_, chunks_.device(), rule, grad_scale,
                                                                    zero_grad);
    PEFT_CUDA_CHECK_LAUNCH(kernel);
  }

  const std::vector<Tensor>& tensors() const { return host_; }

 private:
  ChunkTable chunks_;
  std::vector<Tensor> host_;
  Tensor* device_ = nullptr;
};

// A per-tensor optimizer buffer (exp_avg, momentum_buffer, ...): its name as the host optimizer
// saves it, and one device array per tensor in the tensor's layout.
struct OptimizerBuffer {
  std::string name;
  std::vector<float*> per_tensor;
};

// What the training hooks hold a fused optimizer by (optim/cuda/device_parameters.cuh): the
// step, the step count a checkpoint carries, and the buffers a checkpoint saves.
class MultiTensorOptimizer {
 public:
  virtual ~MultiTensorOptimizer() = default;
  // One optimizer step at learning rate lr. grad_scale: device scalar multiplying every gradient
  // (the clip coefficient), or null.
  virtual void step(double lr, const float* grad_scale, cudaStream_t stream, bool zero_grad = false) = 0;
  virtual std::vector<OptimizerBuffer> buffers() const = 0;

  std::int64_t step_count() const { return step_count_; }
  void set_step_count(std::int64_t n) { step_count_ = n; }  // resuming from a checkpoint

 protected:
  std::int64_t step_count_ = 0;
};

}  // namespace peft::cuda
