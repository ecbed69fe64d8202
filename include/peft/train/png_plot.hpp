// Line charts as PNG files, drawn with cairo (Debian's libcairo2): what ms-swift leaves in a run's
// images/ folder (train_loss.png, ...), for the users and tools that expect pictures, not SVG.
// One chart per file, each curve a polyline (a NaN leaves a gap) with optional point markers; the
// x-axis ends at the last point; text through cairo's "toy" font API (no font dependency beyond
// what cairo itself brings).
#pragma once
#include <cairo.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/train/plot_axes.hpp"

namespace peft {

struct PngCurve {
  std::string label;  // empty: not in the legend
  std::vector<double> x, y;
  std::uint32_t rgb = 0xFF7043;  // 0xRRGGBB
  double line_width = 2.0;
  bool markers = false;  // a dot at every point (sparse series such as eval loss)
};

struct PngChart {
  std::string title, x_label, y_label;
  std::vector<PngCurve> curves;
  int width = 800, height = 500;  // ms-swift's figsize (8, 5) at dpi 100
};

// Where the plot area lies in the image and which data ranges its edges stand for.
struct PngFrame {
  double left = 70, top = 40, width = 0, height = 0;
  detail::AxisRange x, y;
  double px(double v) const { return left + (v - x.lo) / (x.hi - x.lo) * width; }
  double py(double v) const { return top + height - (v - y.lo) / (y.hi - y.lo) * height; }
};

inline PngFrame png_frame(const PngChart& c) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  double xlo = inf, xhi = -inf, ylo = inf, yhi = -inf;
  for (const auto& s : c.curves)
    for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      xlo = std::min(xlo, s.x[i]), xhi = std::max(xhi, s.x[i]);
      ylo = std::min(ylo, s.y[i]), yhi = std::max(yhi, s.y[i]);
    }
  if (!std::isfinite(xlo)) xlo = 0, xhi = 1;
  if (!std::isfinite(ylo)) ylo = 0, yhi = 1;
  PngFrame f;
  f.width = c.width - f.left - 24;
  f.height = c.height - f.top - 50;
  f.x = detail::tight_range(xlo, xhi);
  f.y = detail::nice_range(ylo, detail::with_headroom(ylo, yhi));
  return f;
}

namespace detail {

struct CairoDeleter {
  void operator()(cairo_surface_t* s) const { cairo_surface_destroy(s); }
  void operator()(cairo_t* c) const { cairo_destroy(c); }
};

inline void set_rgb(cairo_t* cr, std::uint32_t rgb) {
  cairo_set_source_rgb(cr, ((rgb >> 16) & 0xFF) / 255.0, ((rgb >> 8) & 0xFF) / 255.0, (rgb & 0xFF) / 255.0);
}

// Text anchored at (x, y): align 0 left, 0.5 centred, 1 right; y is the baseline.
inline void draw_text(cairo_t* cr, const std::string& s, double x, double y, double align, double angle = 0) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s.c_str(), &e);
  cairo_save(cr);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, angle);
  cairo_move_to(cr, -align * e.x_advance, 0);
  cairo_show_text(cr, s.c_str());
  cairo_restore(cr);
}

inline cairo_status_t append_png_bytes(void* closure, const unsigned char* data, unsigned int length) {
  auto* out = static_cast<std::vector<std::byte>*>(closure);
  const auto* p = reinterpret_cast<const std::byte*>(data);
  out->insert(out->end(), p, p + length);
  return CAIRO_STATUS_SUCCESS;
}

}  // namespace detail

// The chart as PNG bytes.
inline std::vector<std::byte> render_png_chart(const PngChart& c) {
  const PngFrame f = png_frame(c);
  std::unique_ptr<cairo_surface_t, detail::CairoDeleter> surface(
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, c.width, c.height));
  require(cairo_surface_status(surface.get()) == CAIRO_STATUS_SUCCESS, "cairo: cannot create a {}x{} image: {}",
          c.width, c.height, cairo_status_to_string(cairo_surface_status(surface.get())));
  std::unique_ptr<cairo_t, detail::CairoDeleter> owner(cairo_create(surface.get()));
  cairo_t* cr = owner.get();
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);

  // Grid and tick labels.
  cairo_set_font_size(cr, 11);
  cairo_set_line_width(cr, 1);
  for (double v : detail::ticks(f.x)) {
    detail::set_rgb(cr, 0xE0E0E0);
    cairo_move_to(cr, std::round(f.px(v)) + 0.5, f.top);
    cairo_line_to(cr, std::round(f.px(v)) + 0.5, f.top + f.height);
    cairo_stroke(cr);
    detail::set_rgb(cr, 0x333333);
    detail::draw_text(cr, detail::tick_label(v, f.x.step), f.px(v), f.top + f.height + 16, 0.5);
  }
  for (double v : detail::ticks(f.y)) {
    detail::set_rgb(cr, 0xE0E0E0);
    cairo_move_to(cr, f.left, std::round(f.py(v)) + 0.5);
    cairo_line_to(cr, f.left + f.width, std::round(f.py(v)) + 0.5);
    cairo_stroke(cr);
    detail::set_rgb(cr, 0x333333);
    detail::draw_text(cr, detail::tick_label(v, f.y.step), f.left - 6, f.py(v) + 4, 1);
  }
  // Curves, clipped to the plot area.
  cairo_save(cr);
  cairo_rectangle(cr, f.left, f.top, f.width, f.height);
  cairo_clip(cr);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (const auto& s : c.curves) {
    detail::set_rgb(cr, s.rgb);
    cairo_set_line_width(cr, s.line_width);
    bool open = false;
    const std::size_t n = std::min(s.x.size(), s.y.size());
    for (std::size_t i = 0; i < n; ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) { open = false; continue; }
      if (open) cairo_line_to(cr, f.px(s.x[i]), f.py(s.y[i]));
      else cairo_move_to(cr, f.px(s.x[i]), f.py(s.y[i]));
      open = true;
    }
    cairo_stroke(cr);
    if (s.markers || n == 1)
      for (std::size_t i = 0; i < n; ++i)
        if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
          cairo_arc(cr, f.px(s.x[i]), f.py(s.y[i]), 3.5, 0, 2 * M_PI);
          cairo_fill(cr);
        }
  }
  cairo_restore(cr);
  // Frame, labels, title, legend.
  detail::set_rgb(cr, 0x333333);
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, f.left + 0.5, f.top + 0.5, f.width, f.height);
  cairo_stroke(cr);
  cairo_set_font_size(cr, 12);
  detail::draw_text(cr, c.x_label, f.left + f.width / 2, c.height - 12, 0.5);
  detail::draw_text(cr, c.y_label, 18, f.top + f.height / 2, 0.5, -M_PI / 2);
  cairo_set_font_size(cr, 15);
  detail::draw_text(cr, c.title, c.width / 2.0, 24, 0.5);
  cairo_set_font_size(cr, 12);
  double ly = f.top + 18;
  for (const auto& s : c.curves) {
    if (s.label.empty()) continue;
    const double lx = f.left + f.width - 170;
    detail::set_rgb(cr, s.rgb);
    cairo_set_line_width(cr, 2.5);
    cairo_move_to(cr, lx, ly - 4);
    cairo_line_to(cr, lx + 24, ly - 4);
    cairo_stroke(cr);
    detail::set_rgb(cr, 0x333333);
    detail::draw_text(cr, s.label, lx + 30, ly, 0);
    ly += 17;
  }
  cairo_surface_flush(surface.get());
  std::vector<std::byte> png;
  const cairo_status_t st = cairo_surface_write_to_png_stream(surface.get(), detail::append_png_bytes, &png);
  require(st == CAIRO_STATUS_SUCCESS, "cairo: cannot encode the PNG: {}", cairo_status_to_string(st));
  return png;
}

// Written whole or not at all (temp + rename), as every file of a run folder.
inline void write_png_chart(const std::filesystem::path& file, const PngChart& c) {
  write_file_atomic(file, render_png_chart(c));
}

}  // namespace peft
