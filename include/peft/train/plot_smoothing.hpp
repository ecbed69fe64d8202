// The smoothing ms-swift applies to the curves it draws into images/ (swift.utils' tensorboard
// smoothing, TensorBoard's own "smoothing" slider): an exponential moving average with weight
// `smooth` on the past, debiased by the sum of the weights so far, so the first points are not
// pulled toward zero. ms-swift's default weight is 0.9.
#pragma once
#include <cmath>
#include <vector>

namespace peft {

inline std::vector<double> tensorboard_smoothing(const std::vector<double>& values, double smooth = 0.9) {
  std::vector<double> out;
  out.reserve(values.size());
  double sum = 0, norm = 0;
  for (double v : values) {
    if (!std::isfinite(v)) {  // a skipped step: a gap in the curve, not a poisoned average
      out.push_back(v);
      continue;
    }
    sum = sum * smooth + v;
    norm = norm * smooth + 1;
    out.push_back(sum / norm);
  }
  return out;
}

}  // namespace peft
