// Linear<Lora<R>>: frozen base plus PEFT's low-rank update,
//   y = x W^T + b + scaling * (dropout(x) A^T) B^T,  scaling = alpha / r (alpha / sqrt(r) with use_rslora),
// with A [r, in] initialised kaiming-uniform(a = sqrt(5)) (= U(-1/sqrt(in), 1/sqrt(in))) and
// B [out, r] zero, so training starts from the base model. A and B are fp32 masters (PEFT's
// autocast_adapter_dtype); under Bf16Mixed the sum is rounded back to bf16 as PEFT casts the
// result to the base layer's dtype. A projection not named by --target_modules has no adapter.
#pragma once
#include <cmath>

#include "peft/core/parameter.hpp"
#include "peft/core/rng.hpp"
#include "peft/layers/linear.hpp"
#include "peft/io/lora_config.hpp"

namespace peft {

template <int Rank, PrecisionPolicy P>
class Linear<Lora<Rank>, P> {
 public:
  Linear(std::string module, LinearShape s, const LoraConfig& cfg)
      : base_(std::move(module), s), targeted_(cfg.targets(base_.module)), r_(cfg.r),
        scaling_(static_cast<float>(cfg.scaling())), dropout_(static_cast<float>(cfg.lora_dropout)) {
    if constexpr (Rank != kDynamicRank)
      check_compiled_rank(Rank, cfg);
    if (targeted_) {
      a_.setZero(r_, s.in);
      b_lora_.setZero(s.out, r_);
      da_.setZero(r_, s.in);
      db_lora_.setZero(s.out, r_);
    }
  }

  void load(WeightSource& src) { base_.load(src, true); }

  // PEFT's init: A ~ kaiming_uniform(a=sqrt(5)), B = 0.
  void init_adapter(Rng& rng) {
    if (!targeted_) return;
    const float bound = 1.0f / std::sqrt(static_cast<float>(base_.shape.in));
    for (Eigen::Index i = 0; i < a_.size(); ++i) a_.data()[i] = rng.uniform(-bound, bound);
    b_lora_.setZero();
  }

  void forward(const Matrix& x, Matrix& y, Rng* dropout_rng) {
    base_.apply(x, base_.weight(), base_.b, y);
    P::store(y);
    if (!targeted_) return;
    const bool drop = dropout_rng && dropout_ > 0.0f;
    if (drop) {  // inverted dropout on the adapter's input only, as nn.Dropout in train mode
      mask_.resize(x.rows(), x.cols());
      const float keep = 1.0f / (1.0f - dropout_);
      for (Eigen::Index i = 0; i < mask_.size(); ++i)
        mask_.data()[i] = dropout_rng->uniform(0.0f, 1.0f) < dropout_ ? 0.0f : keep;
      xa_.noalias() = x.cwiseProduct(mask_) * a_.transpose();
    } else {
      mask_.resize(0, 0);
      xa_.noalias() = x * a_.transpose();
    }
    y.noalias() += (xa_ * b_lora_.transpose()) * scaling_;
    P::store(y);
  }

  void backward(const Matrix& x, const Matrix& dy, Matrix& dx) {
    dx.noalias() = dy * base_.weight();
    if (!targeted_) return;
    db_lora_.noalias() += (dy.transpose() * xa_) * scaling_;
    const Matrix dxa = (dy * b_lora_) * scaling_;  // [tokens, r]
    if (mask_.size()) {
      da_.noalias() += dxa.transpose() * x.cwiseProduct(mask_);
      dx.noalias() += (dxa * a_).cwiseProduct(mask_);
    } else {
      da_.noalias() += dxa.transpose() * x;
      dx.noalias() += dxa * a_;
    }
  }

  void parameters(ParameterList& out) {
    if (!targeted_) return;
    out.push_back({base_.module + ".lora_A.weight", &a_, &da_});
    out.push_back({base_.module + ".lora_B.weight", &b_lora_, &db_lora_});
  }
  void zero_grad() {
    da_.setZero();
    db_lora_.setZero();
  }

  bool targeted() const { return targeted_; }
  float scaling() const { return scaling_; }
  const Matrix& weight() const { return base_.weight(); }
  const Matrix& bias() const { return base_.b; }
  const Matrix& lora_a() const { return a_; }
  const Matrix& lora_b() const { return b_lora_; }
  const std::string& module() const { return base_.module; }

 private:
  detail::DenseBase<P> base_;
  bool targeted_;
  int r_;
  float scaling_, dropout_;
  Matrix a_, b_lora_, da_, db_lora_;
  Matrix xa_, mask_;  // forward cache
};

}  // namespace peft
