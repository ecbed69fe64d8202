// RmsNorm layer: y = w * rms_normalize(x). The weight trains only under a layout that trains
// norms (full fine-tuning); its gradient then accumulates like every parameter gradient.
// The input gradient is ADDED into dx because a norm always sits on the residual stream's branch.
#pragma once
#include <string>

#include "peft/kernels/cpu/rms_norm.hpp"
#include "peft/core/parameter.hpp"
#include "peft/layers/weight_source.hpp"
#include "peft/policies/precision.hpp"

namespace peft {

template <PrecisionPolicy P, bool Trainable>
class RmsNorm {
 public:
  RmsNorm(std::string name, std::int64_t hidden, double eps) : name_(std::move(name)), eps_(static_cast<float>(eps)) {
    w_.setOnes(1, hidden);
    if constexpr (Trainable) dw_.setZero(1, hidden);
  }
  void load(WeightSource& src) {
    src.read(name_ + ".weight", w_);
    if constexpr (!Trainable) P::store(w_);
  }

  void forward(const Matrix& x, Matrix& y) {
    cpu::rms_normalize(x, eps_, xhat_, rstd_);
    P::store(xhat_);
    if constexpr (Trainable && P::storage != DType::F32) {
      RowVector w = w_.row(0).unaryExpr([](float v) { return P::store(v); });
      y = xhat_.array().rowwise() * w.array();
    } else {
      y = xhat_.array().rowwise() * w_.row(0).array();
    }
    P::store(y);
  }
  // dx += d(norm)/dx applied to dy.
  void backward(const Matrix& dy, Matrix& dx) {
    if constexpr (Trainable) dw_.row(0) += dy.cwiseProduct(xhat_).colwise().sum();
    const Matrix dxhat = dy.array().rowwise() * w_.row(0).array();
    cpu::rms_normalize_backward(dxhat, xhat_, rstd_, dx);
  }

  void parameters(ParameterList& out) {
    if constexpr (Trainable) out.push_back({name_ + ".weight", &w_, &dw_, true});
  }
  void zero_grad() {
    if constexpr (Trainable) dw_.setZero();
  }
  const Matrix& weight() const { return w_; }

 private:
  std::string name_;
  float eps_;
  Matrix w_, dw_;
  Matrix xhat_;
  Eigen::VectorXf rstd_;
};

}  // namespace peft
