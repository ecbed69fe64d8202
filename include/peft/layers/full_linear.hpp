// Linear<Full>: the weight and bias train. The fp32 master is the parameter; under Bf16Mixed the
// forward uses a bf16-rounded copy of it, as a bf16 model would hold its weight.
#pragma once
#include "peft/core/parameter.hpp"
#include "peft/layers/linear.hpp"
#include "peft/io/lora_config.hpp"

namespace peft {

template <PrecisionPolicy P>
class Linear<Full, P> {
  static_assert(!QuantisedBase<P>, "Linear<Full, Nf4<...>>: a trained weight cannot be stored in NF4; QLoRA trains "
                                   "LoRA adapters on a frozen quantised base (use Lora<r> or Frozen)");

 public:
  Linear(std::string module, LinearShape s, const LoraConfig&) : base_(std::move(module), s) {}

  void load(WeightSource& src) {
    base_.load(src, false);
    dw_.setZero(base_.w.rows(), base_.w.cols());
    if (base_.shape.bias) db_.setZero(1, base_.shape.out);
  }
  void forward(const Matrix& x, Matrix& y, Rng*) {
    if constexpr (P::storage == DType::F32) {
      base_.apply(x, base_.w, base_.b, y);
    } else {
      Matrix w = base_.w, b = base_.b;
      P::store(w);
      P::store(b);
      base_.apply(x, w, b, y);
    }
    P::store(y);
  }
  void backward(const Matrix& x, const Matrix& dy, Matrix& dx) {
    dw_.noalias() += dy.transpose() * x;
    if (base_.shape.bias) db_.row(0) += dy.colwise().sum();
    dx.noalias() = dy * base_.w;
  }
  void parameters(ParameterList& out) {
    out.push_back({base_.module + ".weight", &base_.w, &dw_});
    if (base_.shape.bias) out.push_back({base_.module + ".bias", &base_.b, &db_, true});
  }
  void zero_grad() {
    dw_.setZero();
    db_.setZero();
  }
  const Matrix& weight() const { return base_.w; }
  const Matrix& bias() const { return base_.b; }
  const std::string& module() const { return base_.module; }

 private:
  detail::DenseBase<P> base_;
  Matrix dw_, db_;
};

}  // namespace peft
