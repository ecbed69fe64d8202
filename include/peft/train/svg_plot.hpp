// A small line-chart writer in SVG (no plotting dependency): x/y series on linear axes with
// 1-2-5 "nice" ticks (train/plot_axes.hpp; the x-axis ends at the last point), an optional
// right-hand axis with its own scale (the learning rate beside the losses), a legend, and gaps
// where a value is missing (NaN: a skipped step). Enough for a training curve that a browser or
// rsvg-convert renders the same everywhere.
#pragma once
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <string>
#include <vector>

#include "peft/train/plot_axes.hpp"

namespace peft {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;
  std::string color = "#1f77b4";
  bool right_axis = false;
  std::string dash;      // SVG stroke-dasharray ("6,4"); empty: a solid line
  bool markers = false;  // draw points (sparse series such as eval loss)
};

struct PlotLayout {
  std::string title, x_label, y_label, y2_label;
  int width = 900, height = 500;
  bool legend_outside = false;  // many series: the legend gets a column right of the plot
};

// A palette that stays distinguishable for a dozen lines (matplotlib's tab10 plus two).
inline const char* plot_color(std::size_t i) {
  static const char* c[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                            "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"};
  return c[i % (sizeof c / sizeof c[0])];
}

namespace detail {

inline std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

}  // namespace detail

inline std::string render_line_plot(const PlotLayout& L, const std::vector<PlotSeries>& series) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  double xlo = inf, xhi = -inf, ylo[2] = {inf, inf}, yhi[2] = {-inf, -inf};
  bool has_right = false;
  for (const auto& s : series)
    for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      const int a = s.right_axis ? 1 : 0;
      has_right = has_right || s.right_axis;
      xlo = std::min(xlo, s.x[i]);
      xhi = std::max(xhi, s.x[i]);
      ylo[a] = std::min(ylo[a], s.y[i]);
      yhi[a] = std::max(yhi[a], s.y[i]);
    }
  if (!std::isfinite(xlo)) xlo = 0, xhi = 1;
  for (int a = 0; a < 2; ++a)
    if (!std::isfinite(ylo[a])) ylo[a] = 0, yhi[a] = 1;
  const detail::AxisRange xr = detail::tight_range(xlo, xhi);
  const detail::AxisRange yr[2] = {
      detail::nice_range(ylo[0], detail::with_headroom(ylo[0], yhi[0])),
      detail::nice_range(std::min(0.0, ylo[1]), detail::with_headroom(std::min(0.0, ylo[1]), yhi[1]))};

  const double legend_w = L.legend_outside ? 200 : 0;
  const double left = 70, right = (has_right ? 80 : 20) + legend_w, top = 40, bottom = 50;
  const double pw = L.width - left - right, ph = L.height - top - bottom;
  auto px = [&](double x) { return left + (x - xr.lo) / (xr.hi - xr.lo) * pw; };
  auto py = [&](double y, int a) { return top + ph - (y - yr[a].lo) / (yr[a].hi - yr[a].lo) * ph; };

  std::string o = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      L.width, L.height, L.width, L.height);
  o += fmt::format("<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n", L.width / 2,
                   detail::xml_escape(L.title));
  // Grid and ticks.
  for (double x : detail::ticks(xr))
    o += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#e0e0e0\"/>"
                     "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
                     px(x), top, top + ph, top + ph + 16, detail::tick_label(x, xr.step));
  for (double y : detail::ticks(yr[0]))
    o += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#e0e0e0\"/>"
                     "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5}</text>\n",
                     left, py(y, 0), left + pw, left - 6, py(y, 0) + 4, detail::tick_label(y, yr[0].step));
  if (has_right)
    for (double y : detail::ticks(yr[1]))
      o += fmt::format("<text x=\"{}\" y=\"{:.1f}\" fill=\"#555\">{}</text>\n", left + pw + 6, py(y, 1) + 4,
                       detail::tick_label(y, yr[1].step));
  o += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n", left, top, pw, ph);
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2, L.height - 10,
                   detail::xml_escape(L.x_label));
  o += fmt::format("<text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n", top + ph / 2,
                   detail::xml_escape(L.y_label));
  if (has_right)
    o += fmt::format("<text transform=\"translate({},{}) rotate(90)\" text-anchor=\"middle\" fill=\"#555\">{}</text>\n",
                     L.width - 14, top + ph / 2, detail::xml_escape(L.y2_label));
  // Lines: a NaN breaks the polyline.
  for (const auto& s : series) {
    const int a = s.right_axis ? 1 : 0;
    const std::string style = fmt::format("fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"{}", s.color,
                                          s.dash.empty() ? "" : " stroke-dasharray=\"" + s.dash + "\"");
    std::string pts;
    auto flush = [&] {
      if (!pts.empty()) o += fmt::format("<polyline {} points=\"{}\"/>\n", style, pts);
      pts.clear();
    };
    for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) { flush(); continue; }
      pts += fmt::format("{:.1f},{:.1f} ", px(s.x[i]), py(s.y[i], a));
      if (s.markers)
        o += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>\n", px(s.x[i]), py(s.y[i], a), s.color);
    }
    flush();
  }
  // Legend: top right inside the plot on a white box (so lines under it do not cross the text),
  // or in its own column.
  const double lx = L.legend_outside ? left + pw + (has_right ? 70 : 14) : left + pw - 190;
  if (!L.legend_outside)
    o += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"186\" height=\"{}\" fill=\"white\" fill-opacity=\"0.85\" "
                     "stroke=\"#ccc\"/>\n", lx - 6, top + 4, 16 * series.size() + 6);
  double ly = top + 16;
  for (const auto& s : series) {
    o += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"{}/>"
                     "<text x=\"{}\" y=\"{}\">{}</text>\n",
                     lx, ly - 4, lx + 24, ly - 4, s.color, s.dash.empty() ? "" : " stroke-dasharray=\"" + s.dash + "\"",
                     lx + 30, ly, detail::xml_escape(s.name + (s.right_axis ? " (right axis)" : "")));
    ly += 16;
  }
  o += "</svg>\n";
  return o;
}

}  // namespace peft
