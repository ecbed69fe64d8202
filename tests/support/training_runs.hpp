// Two training runs that must take the same steps up to the fp32 summation order (data-parallel
// ranks vs one process, packed vs one call per micro-batch): relative 1e-5 on every step's loss
// and grad norm, the same token count, and 1e-4 on every trainable value (relative to 1e-3 +
// |value|). A wrong shard or a miscounted normalisation is off by percents. Catch2 only.
#pragma once
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "peft/qwen.hpp"

namespace peft::test {

struct TrainedRun {
  TrainResult res;
  std::vector<Matrix> values;  // the trainable parameters after training, in the model's order
};

inline bool close_fp32_order(double a, double b) { return std::abs(a - b) <= 1e-5 * (1 + std::abs(b)); }

inline void check_same_training(const TrainedRun& a, const TrainedRun& b) {
  REQUIRE(a.res.step_losses.size() == b.res.step_losses.size());
  for (std::size_t i = 0; i < a.res.step_losses.size(); ++i) {
    INFO("step " << i + 1 << " loss " << a.res.step_losses[i] << " vs " << b.res.step_losses[i]);
    CHECK(close_fp32_order(a.res.step_losses[i], b.res.step_losses[i]));
    CHECK(close_fp32_order(a.res.step_grad_norms[i], b.res.step_grad_norms[i]));
  }
  CHECK(a.res.tokens == b.res.tokens);
  REQUIRE(a.values.size() == b.values.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.values.size(); ++i)
    for (Eigen::Index k = 0; k < a.values[i].size(); ++k)
      worst = std::max(worst, std::abs(a.values[i].data()[k] - b.values[i].data()[k]) /
                                  (1e-3 + std::abs(b.values[i].data()[k])));
  INFO("largest relative difference of a trainable value: " << worst);
  CHECK(worst < 1e-4);
}

}  // namespace peft::test
