// Test support: finite-difference checks of the hand-written backwards. Every layer computes in
// float, so the check cannot be exact: the objective is accumulated in double, the derivative
// is a fourth-order central difference
//   f'(x) ~ [8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))] / (12 h)
// (truncation O(h^4), so h can be large, ~1e-2, which keeps float rounding of f from dominating),
// and the comparison is against the scale of the whole gradient tensor:
//   max over checked entries |fd - analytic| <= tol * max over all entries |analytic|.
// A wrong formula (a missing term, a wrong sign, a missed accumulation) is an O(1) error on that
// scale; float noise is ~1e-4 of it. Each test states its step and tolerance.
// PEFT_GRADCHECK_VERBOSE=1 in the environment prints every check's error / scale.
#pragma once
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "peft/core/rng.hpp"
#include "peft/core/tensor.hpp"

namespace peft::test {

// Two packed samples of 4 and 3 tokens; positions restart at 0 in each.
inline const std::vector<std::int64_t> kCuSeqlens = {0, 4, 7};
inline const std::vector<std::int32_t> kPositions = {0, 1, 2, 3, 0, 1, 2};

// Entries N(0, stddev^2) from a fixed-seed generator.
inline Matrix random_matrix(Eigen::Index rows, Eigen::Index cols, Rng& rng, float stddev = 1.0f) {
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = stddev * rng.normal();
  return m;
}

// The scalar objective L = sum(w .* y), summed in double: dL/dy = w.
inline double weighted_sum(const Matrix& w, const Matrix& y) {
  if (w.rows() != y.rows() || w.cols() != y.cols())  // not REQUIRE: this runs per evaluation
    FAIL("weighted_sum: weights " << w.rows() << "x" << w.cols() << " vs values " << y.rows() << "x" << y.cols());
  double s = 0.0;
  for (Eigen::Index i = 0; i < y.size(); ++i) s += static_cast<double>(w.data()[i]) * y.data()[i];
  return s;
}

// dL/dx[i] by fourth-order central differences; x[i] is restored afterwards. The offsets are the
// float values actually taken by x[i], so a step that rounds is still divided correctly.
template <class Loss>
double central_difference(Matrix& x, Eigen::Index i, double step, Loss&& loss) {
  float& v = x.data()[i];
  const float orig = v;
  auto at = [&](double k) {
    v = static_cast<float>(orig + k * step);
    const double off = static_cast<double>(v) - orig;
    return std::pair{loss(), off};
  };
  const auto p1 = at(1), m1 = at(-1), p2 = at(2), m2 = at(-2);
  v = orig;
  // Second-order estimates over two widths...
  const double d1 = (p1.first - m1.first) / (p1.second - m1.second);
  const double d2 = (p2.first - m2.first) / (p2.second - m2.second);
  return (4.0 * d1 - d2) / 3.0;  // ...combined by Richardson extrapolation (= the stencil above)
}

// Which entries of a tensor to difference: all of them when `count` covers the tensor, else the
// `count / 2` largest |analytic| (they test the magnitude) plus random ones from a fixed seed
// (they test that zeros are zeros where they should be).
inline std::vector<Eigen::Index> pick_entries(const Matrix& analytic, Eigen::Index count, std::uint64_t seed) {
  std::vector<Eigen::Index> all(static_cast<std::size_t>(analytic.size()));
  std::iota(all.begin(), all.end(), Eigen::Index{0});
  if (count <= 0 || count >= analytic.size()) return all;
  const auto largest = static_cast<std::ptrdiff_t>(count / 2);
  std::partial_sort(all.begin(), all.begin() + largest, all.end(), [&](Eigen::Index a, Eigen::Index b) {
    return std::abs(analytic.data()[a]) > std::abs(analytic.data()[b]);
  });
  std::vector<Eigen::Index> out(all.begin(), all.begin() + largest);
  Rng rng(seed);
  while (static_cast<Eigen::Index>(out.size()) < count) {
    const auto i = static_cast<Eigen::Index>(rng.below(static_cast<std::uint64_t>(analytic.size())));
    if (std::find(out.begin(), out.end(), i) == out.end()) out.push_back(i);
  }
  return out;
}

struct GradientComparison {
  double max_error = 0.0;  // max |fd - analytic| over the checked entries
  double scale = 0.0;      // max |analytic| over the whole tensor
  Eigen::Index worst = -1;
  double fd_at_worst = 0.0, analytic_at_worst = 0.0;
  std::size_t checked = 0;
  bool passes(double tol) const { return max_error <= tol * scale; }
};

struct GradCheckOptions {
  double step = 1e-2;
  double tol = 1e-3;
  Eigen::Index entries = 0;       // 0: every entry
  std::uint64_t seed = 1234;      // for the random choice of entries
  double min_scale = 1e-6;        // the analytic gradient must not be (vacuously) all zero
};

// Differences L with respect to the entries of `x` and compares with `analytic` (same shape).
template <class Loss>
GradientComparison compare_gradient(Matrix& x, const Matrix& analytic, Loss&& loss, const GradCheckOptions& o) {
  REQUIRE(x.rows() == analytic.rows());
  REQUIRE(x.cols() == analytic.cols());
  GradientComparison c;
  for (Eigen::Index i = 0; i < analytic.size(); ++i)
    c.scale = std::max(c.scale, static_cast<double>(std::abs(analytic.data()[i])));
  for (const Eigen::Index i : pick_entries(analytic, o.entries, o.seed)) {
    const double fd = central_difference(x, i, o.step, loss);
    const double err = std::abs(fd - analytic.data()[i]);
    if (err > c.max_error || c.worst < 0) {
      c.max_error = err;
      c.worst = i;
      c.fd_at_worst = fd;
      c.analytic_at_worst = analytic.data()[i];
    }
    ++c.checked;
  }
  return c;
}

// The Catch2 assertion: `what` names the tensor in the failure message.
template <class Loss>
void check_gradient(const std::string& what, Matrix& x, const Matrix& analytic, Loss&& loss,
                    const GradCheckOptions& o = {}) {
  const GradientComparison c = compare_gradient(x, analytic, loss, o);
  INFO(what << ": checked " << c.checked << " entries, max |fd - analytic| " << c.max_error << " (entry "
            << c.worst << ": fd " << c.fd_at_worst << ", analytic " << c.analytic_at_worst
            << "), max |analytic| " << c.scale << ", tol " << o.tol << " -> allowed " << o.tol * c.scale);
  CHECK(c.scale > o.min_scale);
  CHECK(c.passes(o.tol));
  if (std::getenv("PEFT_GRADCHECK_VERBOSE"))  // to see the margins: error / scale against tol
    std::cout << what << ": error/scale " << c.max_error / c.scale << " (scale " << c.scale << ", tol " << o.tol << ", " << c.checked
              << " entries)\n";
}

}  // namespace peft::test
