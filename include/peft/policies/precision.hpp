// How numbers are stored while training. Trainable parameters, their gradients and the optimizer
// state are always fp32 masters, and every sum accumulates in fp32; the policy decides the
// storage of frozen weights and of activations. On the CPU backend Bf16Mixed rounds those
// values to bf16 where HF's bf16 run would hold them in bf16, so the CPU is an oracle for the
// CUDA backend's numerics as well as for the fp32 reference. Nf4<Compute> (QLoRA) stores the
// frozen projection weights in 4-bit NF4 and computes as Compute does (docs/qlora.md).
#pragma once
#include <concepts>
#include <string_view>

#include "peft/core/dtype.hpp"
#include "peft/core/tensor.hpp"

namespace peft {

template <class P>
concept PrecisionPolicy = requires(Matrix& m) {
  { P::name } -> std::convertible_to<std::string_view>;
  { P::storage } -> std::convertible_to<DType>;
  P::store(m);
};

struct Fp32 {
  static constexpr std::string_view name = "float32";
  static constexpr DType storage = DType::F32;
  static void store(Matrix&) {}
  static float store(float x) { return x; }
};

struct Bf16Mixed {
  static constexpr std::string_view name = "bfloat16";
  static constexpr DType storage = DType::BF16;
  static void store(Matrix& m) { m = m.unaryExpr([](float x) { return round_to_bf16(x); }); }
  static float store(float x) { return round_to_bf16(x); }
};

// QLoRA's base: every frozen projection weight (q, k, v, o, gate, up, down) is held in NF4 with
// double quantisation (peft/quant/nf4.hpp), quantised on load from its bf16 value, and
// dequantised to bf16 for each matmul; embedding, norms and lm_head, activations and the
// adapters are stored as Compute stores them. `name` stays Compute's: it is the torch_dtype of
// what is computed and saved.
template <PrecisionPolicy Compute>
struct Nf4 {
  using compute = Compute;
  static constexpr std::string_view name = Compute::name;
  static constexpr DType storage = Compute::storage;
  static constexpr bool nf4_frozen_weights = true;
  static void store(Matrix& m) { Compute::store(m); }
  static float store(float x) { return Compute::store(x); }
};

// ms-swift's `--quant_bits 4 --bnb_4bit_compute_dtype bfloat16`: PEFT's QLoRA numerics.
using Nf4Base = Nf4<Bf16Mixed>;
// The oracle: fp32 arithmetic on the dequantised (bf16-valued) weights, which is exactly HF
// PEFT training LoRA in fp32 on a model whose projections were replaced by their NF4 round trip.
using Nf4Fp32 = Nf4<Fp32>;

template <class P>
concept QuantisedBase = requires { requires P::nf4_frozen_weights; };

}  // namespace peft
