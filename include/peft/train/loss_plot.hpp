// The pictures of a run, drawn from the numbers a user reads (logging.jsonl, including a resumed
// run's restored history) and the trainer's per-step series (every step's loss, learning rate and
// gradient norm, not only the logged ones, so warmup is a ramp and not a jump):
//   - loss.svg: train loss, eval loss and learning rate; below it gradient norm and eval identity
//     accuracy (when evaluated);
//   - images/*.png as ms-swift writes them (train_loss.png smoothed as its plot_images does,
//     train_learning_rate.png, train_grad_norm.png, eval_loss.png, eval_identity_accuracy.png),
//     where the build has cairo (PEFT_HAS_CAIRO; the CUDA programs are built without it).
// Rewritten at every checkpoint and at the end, so a killed run still has its pictures.
#pragma once
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "peft/io/atomic_file.hpp"
#include "peft/train/plot_smoothing.hpp"
#include "peft/train/svg_plot.hpp"
#include "peft/train/trainer_state.hpp"
#ifdef PEFT_HAS_CAIRO
#include "peft/train/png_plot.hpp"
#endif

namespace peft {

// One metric of logging.jsonl as a curve: (x_key, key) of every entry that has both.
struct LogCurves {
  std::vector<nlohmann::json> entries;

  static LogCurves read(const std::filesystem::path& log_file) {
    LogCurves c;
    std::ifstream in(log_file);
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) c.entries.push_back(nlohmann::json::parse(line, nullptr, false));
    return c;
  }
  PlotSeries series(const std::string& key, const std::string& x_key = "step") const {
    PlotSeries s;
    s.name = key;
    for (const auto& e : entries) {
      if (!e.is_object() || !e.contains(key) || !e.contains(x_key)) continue;
      s.x.push_back(e[x_key].get<double>());
      s.y.push_back(e[key].is_number() ? e[key].get<double>() : std::numeric_limits<double>::quiet_NaN());
    }
    return s;
  }
};

// The curves of a run: per step where the trainer's series cover every step so far, else the
// logged points.
struct RunCurves {
  PlotSeries loss, learning_rate, grad_norm, eval_loss, eval_identity_accuracy;

  static RunCurves of(const LogCurves& log, const TrainResult* steps) {
    RunCurves c;
    c.loss = log.series("loss");
    c.learning_rate = log.series("learning_rate");
    c.grad_norm = log.series("grad_norm");
    const auto n = steps ? static_cast<std::size_t>(steps->global_step) : 0;
    if (n > 0 && steps->step_losses.size() == n && steps->step_lrs.size() == n && steps->step_grad_norms.size() == n) {
      auto per_step = [&](const std::vector<double>& y, PlotSeries& s) {
        s.x.resize(n);
        for (std::size_t i = 0; i < n; ++i) s.x[i] = static_cast<double>(i + 1);
        s.y = y;
      };
      per_step(steps->step_losses, c.loss);
      per_step(steps->step_lrs, c.learning_rate);
      per_step(steps->step_grad_norms, c.grad_norm);
    }
    c.eval_loss = log.series("eval_loss");
    c.eval_identity_accuracy = log.series("eval_identity_accuracy");
    return c;
  }
};

// loss.svg: two panels stacked in one SVG document.
inline std::string render_run_svg(const RunCurves& c, const std::string& title) {
  PlotSeries train = c.loss, eval = c.eval_loss, lr = c.learning_rate, gn = c.grad_norm, acc = c.eval_identity_accuracy;
  train.name = "train loss";
  eval.name = "eval loss";
  eval.color = plot_color(1);
  eval.markers = true;
  lr.name = "learning rate";
  lr.color = "#999999";
  lr.dash = "6,4";
  lr.right_axis = true;
  gn.name = "grad norm (before clipping)";
  gn.color = plot_color(2);
  acc.name = "eval identity accuracy";
  acc.color = plot_color(3);
  acc.markers = true;
  acc.right_axis = true;
  std::vector<PlotSeries> top = {train};
  if (!eval.x.empty()) top.push_back(eval);
  top.push_back(lr);
  std::vector<PlotSeries> bottom = {gn};
  if (!acc.x.empty()) bottom.push_back(acc);
  const PlotLayout upper{title, "optimizer step", "loss (cross entropy)", "learning rate"};
  PlotLayout lower{"", "optimizer step", "gradient norm", acc.x.empty() ? "" : "identity accuracy"};
  lower.height = 320;
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\">\n"
      "{2}<g transform=\"translate(0,{3})\">\n{4}</g>\n</svg>\n",
      upper.width, upper.height + lower.height, render_line_plot(upper, top), upper.height,
      render_line_plot(lower, bottom));
}

#ifdef PEFT_HAS_CAIRO
// images/<tag>.png as ms-swift's plot_images draws them: the raw values light, the smoothed ones
// (weight 0.9) strong, for the noisy per-step series; the others as they are.
inline void write_run_images(const std::filesystem::path& images, const RunCurves& c) {
  constexpr std::uint32_t raw_color = 0xFFE2D9, smooth_color = 0xFF7043;  // ms-swift's colours
  auto chart = [&](const std::string& tag, const PlotSeries& s, bool smoothed, bool markers) {
    if (s.x.empty()) return;
    PngChart p{tag, "step", tag, {}};
    if (smoothed) {
      p.curves.push_back({"raw", s.x, s.y, raw_color, 1.5, false});
      p.curves.push_back({"smoothed (0.9)", s.x, tensorboard_smoothing(s.y, 0.9), smooth_color, 2.0, false});
    } else {
      p.curves.push_back({"", s.x, s.y, smooth_color, 2.0, markers});
    }
    std::string name = tag;
    std::replace(name.begin(), name.end(), '/', '_');
    write_png_chart(images / (name + ".png"), p);
  };
  chart("train/loss", c.loss, true, false);
  chart("train/learning_rate", c.learning_rate, false, false);
  chart("train/grad_norm", c.grad_norm, true, false);
  chart("eval/loss", c.eval_loss, false, true);
  chart("eval/identity_accuracy", c.eval_identity_accuracy, false, true);
}
#endif

// Every picture of the run folder from curves read before (the trainer reads them at a save and
// draws them on a thread of their own: ~65 ms of drawing a save on a development CPU).
inline void write_run_plots(const std::filesystem::path& run_dir, const std::string& title, const RunCurves& c) {
  write_text_atomic(run_dir / "loss.svg", render_run_svg(c, title));
#ifdef PEFT_HAS_CAIRO
  write_run_images(run_dir / "images", c);
#endif
}

// The run folder's curves now: its log, and `steps` (the trainer's per-step series; may be null).
inline RunCurves read_run_curves(const std::filesystem::path& run_dir, const TrainResult* steps = nullptr) {
  return RunCurves::of(LogCurves::read(run_dir / "logging.jsonl"), steps);
}

inline void write_run_plots(const std::filesystem::path& run_dir, const std::string& title = "training",
                            const TrainResult* steps = nullptr) {
  write_run_plots(run_dir, title, read_run_curves(run_dir, steps));
}

}  // namespace peft
