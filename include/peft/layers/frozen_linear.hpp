// Linear<Frozen>: the base weight is read-only and stored in the activation dtype, so it needs
// no gradient buffer and no optimizer state; only the input gradient flows back.
#pragma once
#include "peft/layers/linear.hpp"
#include "peft/io/lora_config.hpp"

namespace peft {

template <PrecisionPolicy P>
class Linear<Frozen, P> {
 public:
  Linear(std::string module, LinearShape s, const LoraConfig&) : base_(std::move(module), s) {}

  void load(WeightSource& src) { base_.load(src, true); }
  void forward(const Matrix& x, Matrix& y, Rng*) {
    base_.apply(x, base_.weight(), base_.b, y);
    P::store(y);
  }
  void backward(const Matrix&, const Matrix& dy, Matrix& dx) { dx.noalias() = dy * base_.weight(); }
  void parameters(ParameterList&) {}
  void zero_grad() {}
  const Matrix& weight() const { return base_.weight(); }
  const Matrix& bias() const { return base_.b; }
  const std::string& module() const { return base_.module; }

 private:
  detail::DenseBase<P> base_;
};

}  // namespace peft
