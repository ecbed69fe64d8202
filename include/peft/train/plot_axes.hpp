// Axis arithmetic shared by the SVG and PNG chart writers: 1-2-5 "nice" tick steps, tick labels,
// and an x-axis that ends where the data ends (a run of 880 steps is drawn to 880, not to 1000).
#pragma once
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <string>
#include <vector>

namespace peft::detail {

struct AxisRange {
  double lo = 0, hi = 1, step = 0.2;
};

// Ticks at multiples of 1, 2 or 5 x 10^k, about `target` of them, covering [lo, hi].
inline AxisRange nice_range(double lo, double hi, int target = 6) {
  if (!(hi > lo)) {
    const double pad = std::abs(lo) > 0 ? std::abs(lo) * 0.1 : 1.0;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) { step = m * mag; break; }
  return {std::floor(lo / step) * step, std::ceil(hi / step) * step, step};
}

// The data's own range [lo, hi] with the tick step nice_range would choose: the axis ends at the
// last point, the ticks are the multiples of the step inside it.
inline AxisRange tight_range(double lo, double hi, int target = 6) {
  if (!(hi > lo)) return nice_range(lo, hi, target);
  return {lo, hi, nice_range(lo, hi, target).step};
}

// The tick positions of `r`: multiples of its step within [lo, hi].
inline std::vector<double> ticks(const AxisRange& r) {
  std::vector<double> t;
  for (double v = std::ceil(r.lo / r.step - 1e-9) * r.step; v <= r.hi + r.step * 1e-9; v += r.step)
    t.push_back(std::abs(v) < r.step * 1e-9 ? 0.0 : v);
  return t;
}

inline std::string tick_label(double v, double step) {
  if (v == 0) return "0";
  if (std::abs(v) < 1e-3 || std::abs(v) >= 1e5) return fmt::format("{:.1e}", v);
  const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step))));
  return fmt::format("{:.{}f}", v, decimals);
}

// 4% headroom above the highest value, so a flat series (a constant learning rate) is not drawn
// on the frame.
inline double with_headroom(double lo, double hi) { return hi + 0.04 * std::max(hi - lo, std::abs(hi)); }

}  // namespace peft::detail
