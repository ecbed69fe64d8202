// Token embedding. Frozen (LoRA runs): no backward at all, the gradient stops here. Trainable
// (full fine-tuning): the rows of the tokens seen accumulate their gradient. With tied word
// embeddings the same matrix is also the lm_head (see models/qwen2.hpp).
#pragma once
#include <cstdint>
#include <span>

#include "peft/core/error.hpp"
#include "peft/core/parameter.hpp"
#include "peft/layers/weight_source.hpp"
#include "peft/policies/precision.hpp"

namespace peft {

template <PrecisionPolicy P, bool Trainable>
class Embedding {
 public:
  Embedding(std::int64_t vocab, std::int64_t hidden) { w_.resize(vocab, hidden); }
  void load(WeightSource& src) {
    src.read("model.embed_tokens.weight", w_);
    if constexpr (Trainable) dw_.setZero(w_.rows(), w_.cols()); else P::store(w_);
  }

  void forward(std::span<const std::int32_t> ids, Matrix& x) const {
    x.resize(static_cast<Eigen::Index>(ids.size()), w_.cols());
    for (std::size_t t = 0; t < ids.size(); ++t) {
      require(ids[t] >= 0 && ids[t] < w_.rows(), "token id {} at position {} is outside the vocabulary (size {})",
              ids[t], t, w_.rows());
      x.row(static_cast<Eigen::Index>(t)) = w_.row(ids[t]);
    }
    if constexpr (Trainable) P::store(x);
  }
  void backward(std::span<const std::int32_t> ids, const Matrix& dx) {
    if constexpr (Trainable)
      for (std::size_t t = 0; t < ids.size(); ++t) dw_.row(ids[t]) += dx.row(static_cast<Eigen::Index>(t));
  }

  void parameters(ParameterList& out) {
    if constexpr (Trainable) out.push_back({"model.embed_tokens.weight", &w_, &dw_});
  }
  void zero_grad() {
    if constexpr (Trainable) dw_.setZero();
  }
  Matrix& weight() { return w_; }
  const Matrix& weight() const { return w_; }
  Matrix* grad() { return Trainable ? &dw_ : nullptr; }

 private:
  Matrix w_, dw_;
};

}  // namespace peft
