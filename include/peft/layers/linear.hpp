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
#include "peft/quant/nf4.hpp"

namespace peft {

struct LinearShape {
  std::int64_t in = 0, out = 0;
  bool bias = false;
};

template <LinearPolicy Policy, PrecisionPolicy P>
class Linear;

namespace detail {

// The frozen base every policy shares: W [out, in] and the optional bias [1, out]. Under a
// QuantisedBase precision W lives only in `nf4` (w stays empty) and weight() dequantises it.
template <PrecisionPolicy P>
struct DenseBase {
  std::string module;
  LinearShape shape;
  Matrix w, b;
  nf4::Nf4Tensor nf4;

  DenseBase(std::string path, LinearShape s) : module(std::move(path)), shape(s) {}

  void load(WeightSource& src, bool store_as_activation_dtype) {
    w.resize(shape.out, shape.in);
    src.read(module + ".weight", w);
    if (shape.bias) {
      b.resize(1, shape.out);
      src.read(module + ".bias", b);
    }
    if constexpr (QuantisedBase<P>) {
      // bitsandbytes quantises the bf16 weight; an fp32 checkpoint is rounded first, as loading
      // it with torch_dtype=bfloat16 would. Only this one tensor is ever held in fp32.
      for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = round_to_bf16(w.data()[i]);
      nf4 = nf4::quantize(std::span<const float>(w.data(), static_cast<std::size_t>(w.size())), module + ".weight");
      w = Matrix();
    }
    if (store_as_activation_dtype) { P::store(w); if (shape.bias) P::store(b); }
  }

  // The weight the matmuls use. NF4: its bf16 dequantisation, into one scratch matrix shared by
  // every layer of the thread (valid until the next call), so the model never holds it whole.
  const Matrix& weight() const {
    if constexpr (QuantisedBase<P>) {
      static thread_local Matrix scratch;
      scratch.resize(shape.out, shape.in);
      nf4::dequantize(nf4, scratch.data());
      return scratch;
    } else {
      return w;
    }
  }

  // y = x W^T + b, computed with the given (possibly rounded) weight.
  void apply(const Matrix& x, const Matrix& weight, const Matrix& bias, Matrix& y) const {
    y.noalias() = x * weight.transpose();
    if (shape.bias) y.rowwise() += bias.row(0);
  }
};

}  // namespace detail
}  // namespace peft
