// Linear<Policy, Precision>: one projection y = x W^T (+ b), declared once here; each policy's
// implementation is a specialization in its own header (frozen_linear.hpp, full_linear.hpp,
// lora_linear.hpp). Every specialization offers the same members:
//   Linear(module_path, LinearShape, const LoraConfig&)
//   load(WeightSource&)                 base weight (and bias) by HF name
//   forward(x, y, Rng* dropout)         y overwritten; caches what its backward needs
//   backward(x, dy, dx)                 dx overwritten; parameter gradients accumulate (+=)
//   parameters(ParameterList&)          the trainable tensors, HF/PEFT names
//   zero_grad(), weight(), bias()
// Parameter gradients accumulate so gradient accumulation over micro-batches is a plain sum;
// input gradients overwrite, and the caller adds them into the residual stream.
#pragma once
#include <cstdint>
#include <string>

#include "peft/core/tensor.hpp"
#include "peft/layers/weight_source.hpp"
#include "peft/policies/linear_policy.hpp"
#include "peft/policies/precision.hpp"

namespace peft {

struct LinearShape {
  std::int64_t in = 0, out = 0;
  bool bias = false;
};

template <LinearPolicy Policy, PrecisionPolicy P>
class Linear;

namespace detail {

// The frozen base every policy shares: W [out, in] and the optional bias [1, out].
template <PrecisionPolicy P>
struct DenseBase {
  std::string module;
  LinearShape shape;
  Matrix w, b;

  DenseBase(std::string path, LinearShape s) : module(std::move(path)), shape(s) {}

  void load(WeightSource& src, bool store_as_activation_dtype) {
    w.resize(shape.out, shape.in);
    src.read(module + ".weight", w);
    if (shape.bias) {
      b.resize(1, shape.out);
      src.read(module + ".bias", b);
    }
    if (store_as_activation_dtype) { P::store(w); if (shape.bias) P::store(b); }
  }

  // y = x W^T + b, computed with the given (possibly rounded) weight.
  void apply(const Matrix& x, const Matrix& weight, const Matrix& bias, Matrix& y) const {
    y.noalias() = x * weight.transpose();
    if (shape.bias) y.rowwise() += bias.row(0);
  }
};

}  // namespace detail
}  // namespace peft
