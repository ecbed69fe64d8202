// What the forward keeps for the backward, as a compile-time policy of the device type:
//   Qwen2<Lora<8>, Bf16Mixed, CudaDevice<KeepActivations>>     (= Cuda)
//   Qwen2<Lora<8>, Bf16Mixed, CudaDevice<SelectiveRecompute>>  (= CudaSelective)
//   Qwen2<Lora<8>, Bf16Mixed, CudaDevice<RecomputeLayer>>      (= CudaRecompute)
// An ActivationPolicy is a tag with a name and two decisions:
//   keeps_layers true  - every decoder layer keeps its own set of activations (q/k/v, attention
//                        output and log-sum-exp, h, LoRA intermediates, and with keeps_mlp the
//                        normed inputs n1/n2 and gate/up);
//   keeps_layers false - only each layer's input (the residual stream) is kept, and the backward
//                        re-runs one layer's forward into a single set of buffers right before
//                        that layer's backward: ~1/3 more matrix work, activation memory of one layer;
//   keeps_mlp false    - (with keeps_layers) n1, n2, gate and up, 2 x (hidden + intermediate) values
//                        a token, ~4/5 of a 7B layer's set, live in one set shared by the layers
//                        and are rebuilt right before each layer's backward: the two norms and the
//                        gate/up projections again (their GEMMs are ~58% of a layer's forward
//                        matrix work), nothing on the attention side.
// Planned activations of the 7B at 2048 tokens, residual stream included: keep 6.96 GB, selective
// 1.97 GB, recompute 0.66 GB; selective's backward does ~half of recompute's extra matrix work.
// The SwiGLU product (silu(gate) * up, intermediate-wide) is never kept under any policy: it
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
  { A::keeps_mlp } -> std::convertible_to<bool>;
};

struct KeepActivations {
  static constexpr std::string_view name = "keep";
  static constexpr bool keeps_layers = true;
  static constexpr bool keeps_mlp = true;
};

struct SelectiveRecompute {
  static constexpr std::string_view name = "selective";
  static constexpr bool keeps_layers = true;
  static constexpr bool keeps_mlp = false;
};

struct RecomputeLayer {
  static constexpr std::string_view name = "recompute";
  static constexpr bool keeps_layers = false;
  static constexpr bool keeps_mlp = true;  // within the one re-run layer's buffers
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
using CudaSelective = CudaDevice<cuda::SelectiveRecompute>;
using CudaRecompute = CudaDevice<cuda::RecomputeLayer>;

}  // namespace peft
