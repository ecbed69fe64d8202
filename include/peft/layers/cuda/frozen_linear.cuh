// cuda::Linear<Frozen, Base>: the base W (+ b; bf16 or NF4) is read-only: no gradient buffer, no
// optimizer state; only the input gradient flows back.
#pragma once
#include "peft/core/rng.hpp"
#include "peft/layers/cuda/linear.cuh"

namespace peft::cuda {

template <class Base>
class Linear<Frozen, Base> {
 public:
  Linear(std::string module, LinearShape s, const LoraConfig&) : base_{std::move(module), s} {}

  void plan_weights(MemoryPlan& m) { base_.plan(m); }
  void plan_grads(MemoryPlan&) {}
  void load(WeightSource& src, cudaStream_t stream) { base_.load(src, stream); }
  void base_weights(std::vector<WeightDestination>& out) const { base_.base_weights(out); }
  void widen_masters(cudaStream_t) {}
  void fill_random(std::uint64_t seed, cudaStream_t stream) { base_.fill_random(seed, stream); }
  void init_adapter(Rng&, cudaStream_t) {}
  void parameters(std::vector<DeviceParameter>&) const {}

  void forward(GemmContext c, const bf16* x, bf16* y, bf16*, bf16*, int tokens, const std::uint64_t*) const {
    weights().forward(c, x, y, nullptr, nullptr, tokens, nullptr);
  }
  void backward(GemmContext c, const bf16*, const bf16* dy, bf16* dx, bool accumulate, const bf16*, bf16*, bf16*,
                int tokens, const std::uint64_t*) const {
    base_.backward_input(c, dy, dx, accumulate, tokens);
  }

  ProjectionWeights weights() const { return base_.weights(); }
  int padded_rank() const { return 0; }
  bool reads_input_in_backward() const { return false; }
  const std::string& module() const { return base_.module; }

 private:
  Base base_;  // bf16 (detail::DenseBase) or NF4 (detail::Nf4FrozenBase)
};

}  // namespace peft::cuda
