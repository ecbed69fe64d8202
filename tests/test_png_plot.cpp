// The PNG chart writer (train/png_plot.hpp) and ms-swift's smoothing (train/plot_smoothing.hpp):
// a written chart reads back with cairo at its size, is not blank, and its curve spans exactly
// the pixels its data range maps to (the x-axis ends at the last step).
#include <cairo.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <memory>

#include "peft/train/plot_smoothing.hpp"
#include "peft/train/png_plot.hpp"
#include "support/temp_dir.hpp"

using namespace peft;

namespace {

struct Png {
  std::unique_ptr<cairo_surface_t, void (*)(cairo_surface_t*)> s{nullptr, cairo_surface_destroy};
  int width() const { return cairo_image_surface_get_width(s.get()); }
  int height() const { return cairo_image_surface_get_height(s.get()); }
  std::uint32_t rgb(int x, int y) const {
    const auto* row = cairo_image_surface_get_data(s.get()) + static_cast<std::ptrdiff_t>(y) * cairo_image_surface_get_stride(s.get());
    return reinterpret_cast<const std::uint32_t*>(row)[x] & 0xFFFFFF;
  }
};

Png read_png(const std::filesystem::path& f) {
  Png p;
  p.s.reset(cairo_image_surface_create_from_png(f.c_str()));
  REQUIRE(cairo_surface_status(p.s.get()) == CAIRO_STATUS_SUCCESS);
  cairo_surface_flush(p.s.get());
  return p;
}

// A pixel drawn in (or anti-aliased toward) 0x1f77b4 on white: blue clearly above red.
bool bluish(std::uint32_t c) {
  const int r = (c >> 16) & 0xFF, b = c & 0xFF;
  return b - r > 60;
}

}  // namespace

TEST_CASE("a PNG chart reads back at its size, with the curve where its data maps") {
  test::TempDir dir("png_plot");
  PngChart chart{"train/loss", "step", "loss", {}};
  PngCurve line{"", {}, {}, 0x1f77b4, 2.0, false};  // no legend entry: only the curve is blue
  for (int s = 1; s <= 880; ++s) {  // 880 steps, falling from 3 to 1
    line.x.push_back(s);
    line.y.push_back(3.0 - 2.0 * (s - 1) / 879.0);
  }
  chart.curves = {line};
  const auto file = dir / "images/train_loss.png";
  write_png_chart(file, chart);

  const Png png = read_png(file);
  CHECK(png.width() == 800);
  CHECK(png.height() == 500);
  int xmin = 1 << 30, xmax = -1, ymin = 1 << 30, ymax = -1, blue = 0;
  for (int y = 0; y < png.height(); ++y)
    for (int x = 0; x < png.width(); ++x)
      if (bluish(png.rgb(x, y))) {
        ++blue;
        xmin = std::min(xmin, x), xmax = std::max(xmax, x), ymin = std::min(ymin, y), ymax = std::max(ymax, y);
      }
  REQUIRE(blue > 500);  // not blank: a 2-px line across most of the width
  const PngFrame f = png_frame(chart);
  CHECK(f.x.lo == 1);
  CHECK(f.x.hi == 880);  // the axis ends at the last step, not at the next round number
  CHECK(std::abs(xmin - f.px(1)) <= 3);
  CHECK(std::abs(xmax - f.px(880)) <= 3);
  CHECK(std::abs(xmax - (f.left + f.width)) <= 3);  // the curve reaches the right edge of the plot
  CHECK(std::abs(ymin - f.py(3.0)) <= 3);
  CHECK(std::abs(ymax - f.py(1.0)) <= 3);
}

TEST_CASE("a PNG chart leaves a gap at a NaN and draws a single point as a dot") {
  test::TempDir dir("png_gap");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  PngChart chart{"eval/loss", "step", "loss", {}};
  chart.curves = {{"", {1, 2, 3, 4}, {2, 2, nan, 2}, 0x1f77b4, 2.0, false},
                  {"", {2.5}, {3}, 0x1f77b4, 2.0, false},
                  {"", {1}, {1}, 0x1f77b4, 2.0, false}};
  write_png_chart(dir / "gap.png", chart);
  const Png png = read_png(dir / "gap.png");
  const PngFrame f = png_frame(chart);
  const int row = static_cast<int>(std::lround(f.py(2)));
  CHECK(bluish(png.rgb(static_cast<int>(f.px(1.5)), row)));
  CHECK_FALSE(bluish(png.rgb(static_cast<int>(f.px(2.5)), row)));  // steps 2 to 4 pass through the NaN
  CHECK(bluish(png.rgb(static_cast<int>(std::lround(f.px(2.5))), static_cast<int>(std::lround(f.py(3))))));
}

TEST_CASE("a PNG chart that cannot be written names the file") {
  test::TempDir dir("png_fail");
  std::filesystem::create_directories(dir / "blocker");
  PngChart chart{"t", "x", "y", {{"", {1, 2}, {1, 2}, 0, 2.0, false}}};
  write_text_atomic(dir / "file", "not a folder");
  CHECK_THROWS_WITH(write_png_chart(dir / "file" / "x.png", chart), Catch::Contains("file"));
}

TEST_CASE("tensorboard_smoothing is ms-swift's debiased exponential moving average") {
  const auto s = tensorboard_smoothing({1, 2, 3}, 0.9);
  REQUIRE(s.size() == 3);
  CHECK(s[0] == Approx(1.0));
  CHECK(s[1] == Approx((0.9 * 1 + 2) / 1.9));
  CHECK(s[2] == Approx((0.81 * 1 + 0.9 * 2 + 3) / 2.71));  // the formula in ms-swift's comment
  CHECK(tensorboard_smoothing({5, 5, 5, 5}, 0.9)[3] == Approx(5.0));  // a constant stays itself
  CHECK(tensorboard_smoothing({1, 3}, 0.0)[1] == Approx(3.0));       // weight 0: no smoothing
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto g = tensorboard_smoothing({1, nan, 3}, 0.9);
  CHECK(std::isnan(g[1]));                       // a skipped step stays a gap
  CHECK(g[2] == Approx((0.9 * 1 + 3) / 1.9));    // and does not enter the average
}
