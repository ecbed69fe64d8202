// What the forward keeps for the backward, as a compile-time policy of the device type:
//   Qwen2<Lora<8>, Bf16Mixed, CudaDevice<KeepActivations>>   (= Cuda)
//   Qwen2<Lora<8>, Bf16Mixed, CudaDevice<RecomputeLayer>>
// An ActivationPolicy is a tag with a name and one decision, `keeps_layers`:
//   true  - every decoder layer keeps its activations (normed inputs, q/k/v, attention output
//           and log-sum-exp, gate/up, LoRA intermediates): the fastest backward, ~3.3 GB per
//           1k tokens for the 7B;
//   false - only each layer's input (the residual stream, hidden floats per token) is kept, and
//           the backward re-runs one layer's forward into a single set of buffers right before
//           that layer's backward: ~1/3 more matrix work, activation memory of one layer.
// The SwiGLU product (silu(gate) * up, intermediate-wide) is never kept under either policy: it
// is recomputed from gate and up in the backward, one cheap element-wise pass.
// The policy changes code paths and the memory plan, so it is a type, not a flag.
#pragma once
#include <concepts>
#include <string_view>

namespace peft::cuda {

template <class A>
concept ActivationPolicy = requires {
  { A::name } -> std::convertible_to<std::string_view>;
  { A::keeps_layers } -> std::convertible_to<bool>;
};

struct KeepActivations {
  static constexpr std::string_view name = "keep";
  static constexpr bool keeps_layers = true;
};

struct RecomputeLayer {
  static constexpr std::string_view name = "recompute";
  static constexpr bool keeps_layers = false;
};

}  // namespace peft::cuda

namespace peft {

// The Cuda device policy (a DevicePolicy, policies/device.hpp), parameterised by what the
// forward keeps. Visible only to nvcc translation units (include peft/qwen_cuda.cuh).
template <cuda::ActivationPolicy Activations = cuda::KeepActivations>
struct CudaDevice {
  static constexpr std::string_view name = "cuda";
  using activations = Activations;
};
using Cuda = CudaDevice<cuda::KeepActivations>;
using CudaRecompute = CudaDevice<cuda::RecomputeLayer>;

}  // namespace peft
