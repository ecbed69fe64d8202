// The lm_head projection fused with cross entropy, in row chunks: only positions that carry a
// label are projected at all (a position with target -100 contributes neither loss nor
// gradient, so skipping it is exact), and at most `chunk` rows of vocabulary-wide logits exist
// at once. For Qwen2.5's 152k vocabulary that is what keeps the CPU demo fast and small.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>

#include "peft/core/tensor.hpp"

namespace peft::cpu {

struct CrossEntropyResult {
  double loss_sum = 0.0;   // sum over rows of -log softmax(logits)[target]
  std::int64_t tokens = 0;
  std::int64_t correct = 0;  // rows whose largest logit is the target's (ties: the first index)
};

// h: [n, hidden] rows that carry a target; w: [vocab, hidden]. With grad_scale != 0, writes
// dh = dlogits * w and adds dlogits^T * h to *dw (when dw is given), dlogits = (softmax - onehot)
// * grad_scale. `Store` rounds logits and their gradient to the activation dtype.
template <class Store>
CrossEntropyResult cross_entropy(const Matrix& h, const Matrix& w, std::span<const std::int32_t> targets,
                                 float grad_scale, Matrix* dh, Matrix* dw, Store store, Eigen::Index chunk = 256) {
  CrossEntropyResult r;
  if (dh) dh->setZero(h.rows(), h.cols());
  Matrix logits;
  for (Eigen::Index r0 = 0; r0 < h.rows(); r0 += chunk) {
    const Eigen::Index n = std::min(chunk, h.rows() - r0);
    logits.noalias() = h.middleRows(r0, n) * w.transpose();
    store(logits);
    for (Eigen::Index i = 0; i < n; ++i) {
      auto row = logits.row(i);
      Eigen::Index arg = 0;
      const float mx = row.maxCoeff(&arg);
      const double sum = (row.array() - mx).exp().template cast<double>().sum();
      const std::int32_t t = targets[r0 + i];
      r.loss_sum += std::log(sum) + mx - row[t];
      r.correct += arg == t;
      if (grad_scale != 0.0f) {
        row = ((row.array() - mx).exp() / static_cast<float>(sum)) * grad_scale;
        row[t] -= grad_scale;
      }
    }
    r.tokens += n;
    if (grad_scale == 0.0f) continue;
    store(logits);
    if (dh) dh->middleRows(r0, n).noalias() = logits * w;
    if (dw) dw->noalias() += logits.transpose() * h.middleRows(r0, n);
  }
  return r;
}

}  // namespace peft::cpu
