// How numbers are stored while training. Trainable parameters, their gradients and the optimizer
// state are always fp32 masters, and every sum accumulates in fp32; the policy decides the
// storage of frozen weights and of activations. On the CPU backend Bf16Mixed rounds those
// values to bf16 where HF's bf16 run would hold them in bf16, so the CPU is an oracle for the
// CUDA backend's numerics as well as for the fp32 reference.
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

}  // namespace peft
