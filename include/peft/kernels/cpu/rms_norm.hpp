// RMSNorm on the CPU, HF Qwen2RMSNorm's arithmetic: normalise in fp32, store the normalised row
// in the activation dtype, then scale by the weight. The backward treats that storage rounding
// as identity (straight-through), as autograd does for a dtype cast.
#pragma once
#include <Eigen/Core>
#include <cmath>

#include "peft/core/tensor.hpp"

namespace peft::cpu {

// xhat = x / sqrt(mean(x^2) + eps), rstd = that 1 / sqrt(...) per row.
inline void rms_normalize(const Matrix& x, float eps, Matrix& xhat, Eigen::VectorXf& rstd) {
  const auto n = x.cols();
  rstd.resize(x.rows());
  xhat.resize(x.rows(), n);
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double ms = static_cast<double>(x.row(t).squaredNorm()) / static_cast<double>(n);
    rstd[t] = static_cast<float>(1.0 / std::sqrt(ms + eps));
    xhat.row(t) = x.row(t) * rstd[t];
  }
}

// Given dxhat (= dy * w), the input gradient of xhat = x * rstd:
// dx = rstd * (dxhat - xhat * mean(dxhat . xhat)). Accumulates into dx (residual stream).
inline void rms_normalize_backward(const Matrix& dxhat, const Matrix& xhat, const Eigen::VectorXf& rstd,
                                   Matrix& dx) {
  const auto n = static_cast<float>(xhat.cols());
  for (Eigen::Index t = 0; t < xhat.rows(); ++t) {
    const float dot = dxhat.row(t).dot(xhat.row(t)) / n;
    dx.row(t) += rstd[t] * (dxhat.row(t) - dot * xhat.row(t));
  }
}

}  // namespace peft::cpu
