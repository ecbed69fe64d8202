// loss.svg in every run folder: train loss, eval loss and learning rate against the step, drawn
// from the run's logging.jsonl (the same numbers a user reads, including a resumed run's restored
// history). Rewritten at every checkpoint and at the end, so a killed run still has its picture.
#pragma once
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "peft/io/atomic_file.hpp"
#include "peft/train/svg_plot.hpp"

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

inline void write_loss_plot(const std::filesystem::path& run_dir, const std::string& title = "training") {
  const LogCurves log = LogCurves::read(run_dir / "logging.jsonl");
  PlotSeries train = log.series("loss"), eval = log.series("eval_loss"), lr = log.series("learning_rate");
  train.name = "train loss";
  eval.name = "eval loss";
  eval.color = plot_color(1);
  eval.markers = true;
  lr.name = "learning rate";
  lr.color = "#999999";
  lr.dash = "6,4";
  lr.right_axis = true;
  std::vector<PlotSeries> all = {train};
  if (!eval.x.empty()) all.push_back(eval);
  all.push_back(lr);
  write_text_atomic(run_dir / "loss.svg",
                    render_line_plot({title, "optimizer step", "loss (cross entropy)", "learning rate"}, all));
}

}  // namespace peft
