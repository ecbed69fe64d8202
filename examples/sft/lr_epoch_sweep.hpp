// lr_epoch_sweep's grid, written once for the CPU build of lr_epoch_sweep.cpp and its CUDA build
// (lr_epoch_sweep_cuda): every cell is an identity fine-tune of the ONE loaded base model
// with its LoRA adapters re-drawn from the run's seed, so cells differ only in lr and epochs and a
// 7B base is loaded once, not once per cell. The program's own comment says what it writes.
#pragma once
#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>

#include "peft/qwen.hpp"
#include "run_sft.hpp"

namespace peft::examples::sweep {

namespace fs = std::filesystem;


struct Cell {
  double lr = 0;
  double epochs = 0;
  nlohmann::json result;  // the row of the table
  fs::path dir;
  SftArgs args;             // the cell's run
  nlohmann::json settings;  // what decides its result
};

inline double parse_number(const std::string& flag, const std::string& v) {
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  require(used == v.size() && x > 0, "--{}: '{}' is not a positive number", flag, v);
  return x;
}

// The last value of `key` among the run's logging.jsonl entries (null if none has it).
inline nlohmann::json last_logged(const LogCurves& log, const std::string& key) {
  for (auto it = log.entries.rbegin(); it != log.entries.rend(); ++it)
    if (it->is_object() && it->contains(key)) return (*it)[key];
  return nullptr;
}

inline std::string cell_text(const nlohmann::json& v, const char* format) {
  return v.is_number() ? fmt::format(fmt::runtime(format), v.get<double>()) : std::string("-");
}

template <class Model>
int run_sweep(examples::SftArgs a, const std::vector<double>& lrs, const std::vector<double>& epochs, bool lrs_given) {
  examples::SftSetup<Model> s = examples::prepare_sft<Model>(a);
  std::vector<double> grid_lrs = lrs;
  // Random weights need a larger step than a pretrained model (see docs/sweep.md).
  if (s.embedded && !lrs_given) grid_lrs = {3e-3, 1e-3, 1e-4};
  const fs::path root = a.train.output_dir;
  fs::create_directories(root);
  auto unset = [&](const char* f) { return std::find(a.given.begin(), a.given.end(), f) == a.given.end(); };

  install_stop_signal_handlers();
  const RunLock lock(root);  // one sweep at a time in a folder

  std::vector<Cell> cells;
  for (double lr : grid_lrs)
    for (double ep : epochs) cells.push_back({lr, ep, {}, root / fmt::format("lr{:g}_ep{:g}", lr, ep), a, {}});
  for (auto& c : cells) {
    SftArgs& ca = c.args;
    ca.train.learning_rate = c.lr;
    ca.train.num_train_epochs = c.epochs;
    ca.train.max_steps = -1;
    // One evaluation and one checkpoint per epoch unless the flags say otherwise.
    const std::int64_t per_epoch = Trainer<Model>(*s.model, ca.train, adamw_from(ca.train), NamedSchedule(ca.train.lr_scheduler_type))
                                       .steps_per_epoch(s.data.train.size());
    if (unset("eval_steps")) ca.train.eval_steps = per_epoch;
    if (unset("save_steps")) ca.train.save_steps = per_epoch;
    if (unset("logging_steps")) ca.train.logging_steps = std::max<std::int64_t>(1, per_epoch / 4);
    if (unset("save_total_limit")) ca.train.save_total_limit = 1;
    c.settings = result_settings(ca.train, s.data.train, &s.model->lora_config(), 1);
    c.settings["model"] = s.base_name;
    c.settings["eval_samples_fingerprint"] = dataset_fingerprint(s.data.val);
    c.settings["eval_identity_dataset"] = ca.eval_identity_dataset;
    c.settings["eval_general_dataset"] = ca.eval_general_dataset;
    c.settings["eval_generation_max_new_tokens"] = ca.eval_generation_max_new_tokens;
  }

  // Cells of another experiment in this folder: refuse before anything is trained or written.
  std::string conflicts;
  for (const auto& c : cells) {
    if (!folder_has_entries(c.dir)) continue;
    const fs::path recorded = c.dir / "cell_settings.json";
    if (!fs::exists(recorded)) {
      conflicts += fmt::format("\n  {}: records no settings (not written by this version of lr_epoch_sweep)", c.dir.string());
      continue;
    }
    const auto diff = settings_differences(read_json_file(recorded), c.settings);
    if (!diff.empty()) conflicts += fmt::format("\n  {}: {}", c.dir.string(), fmt::join(diff, "; "));
  }
  require(conflicts.empty(), "--output_dir {} holds cells trained with other settings; their results would mix with "
          "this sweep's. Pick another --output_dir (nothing was changed):{}", root.string(), conflicts);

  for (auto& c : cells) {
    const fs::path done = c.dir / "result.json";
    if (fs::exists(done)) {
      c.result = read_json_file(done);
      fmt::print("[sweep] lr {:g} epochs {:g}: finished earlier with the same settings, skipped\n", c.lr, c.epochs);
      continue;
    }
    SftArgs& ca = c.args;
    // The loaded base with fresh adapters: the same draws as at load time, so every cell starts
    // where a fresh run would (LoRA leaves the base weights untouched; a device-resident model
    // is not copied at all).
    Model& model = *s.model;
    model.init_adapters(a.train.seed);
    model.zero_grad();
    clean_stale_staging(c.dir);
    const auto ckpts = list_checkpoints(c.dir);
    if (!ckpts.empty()) ca.train.resume_from_checkpoint = ckpts.back();
    else fs::remove_all(c.dir);  // this sweep's own unfinished cell (its settings matched above)
    fs::create_directories(c.dir);
    write_text_atomic(c.dir / "cell_settings.json", c.settings.dump(1) + "\n");

    fmt::print("[sweep] lr {:g} epochs {:g} -> {}{}\n", c.lr, c.epochs, c.dir.string(),
               ckpts.empty() ? "" : " (resuming " + ckpts.back().filename().string() + ")");
    const auto t0 = std::chrono::steady_clock::now();
    const TrainResult r = examples::train_sft(model, s, ca, c.dir, true);
    if (r.stop_signal) {  // the cell is not finished: no result.json, the next run resumes it
      fmt::print("[sweep] stopped by {} in lr {:g} epochs {:g} at {}; re-run the same command to continue\n",
                 stop_signal_name(r.stop_signal), c.lr, c.epochs, r.last_checkpoint.string());
      return 128 + r.stop_signal;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const LogCurves log = LogCurves::read(c.dir / "logging.jsonl");
    c.result = {{"learning_rate", c.lr},
                {"epochs", c.epochs},
                {"steps", r.global_step},
                {"train_loss", last_logged(log, "loss")},
                {"eval_loss", last_logged(log, "eval_loss")},
                {"identity_accuracy", last_logged(log, "eval_identity_accuracy")},
                {"repetition", last_logged(log, "eval_repetition")},
                {"retention", last_logged(log, "eval_general_retention")},
                {"skipped_steps", r.skipped_steps},
                {"seconds", seconds},
                {"settings", c.settings}};
    write_text_atomic(done, c.result.dump(1) + "\n");
    fmt::print("[sweep]   {}\n", c.result.dump());
  }

  // The table, as Markdown and CSV.
  std::string md = "| lr | epochs | steps | final train loss | eval loss | identity acc. | repetition | retention | seconds |\n"
                   "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  std::string csv = "learning_rate,epochs,steps,train_loss,eval_loss,identity_accuracy,repetition,retention,seconds\n";
  std::vector<PlotSeries> curves;
  for (const auto& c : cells) {
    const auto& r = c.result;
    md += fmt::format("| {:g} | {:g} | {} | {} | {} | {} | {} | {} | {:.0f} |\n", c.lr, c.epochs, r["steps"].get<std::int64_t>(),
                      cell_text(r["train_loss"], "{:.3f}"), cell_text(r["eval_loss"], "{:.3f}"),
                      cell_text(r["identity_accuracy"].is_number() ? nlohmann::json(100 * r["identity_accuracy"].get<double>()) : nlohmann::json(), "{:.0f}%"), cell_text(r["repetition"], "{:.2f}"),
                      cell_text(r["retention"], "{:.2f}"), r["seconds"].get<double>());
    auto csv_value = [](const nlohmann::json& v) { return v.is_number() ? fmt::format("{}", v.get<double>()) : std::string(); };
    csv += fmt::format("{},{},{},{},{},{},{},{},{:.1f}\n", c.lr, c.epochs, r["steps"].get<std::int64_t>(),
                       csv_value(r["train_loss"]), csv_value(r["eval_loss"]), csv_value(r["identity_accuracy"]),
                       csv_value(r["repetition"]), csv_value(r["retention"]), r["seconds"].get<double>());
    PlotSeries curve = LogCurves::read(c.dir / "logging.jsonl").series("loss", "epoch");
    curve.name = fmt::format("lr {:g}, {:g} epochs", c.lr, c.epochs);
    // One colour per learning rate, one dash pattern per epoch count.
    static const char* dashes[] = {"", "9,3", "3,3", "12,3,2,3", "1,3"};
    const auto lr_i = static_cast<std::size_t>(std::find(grid_lrs.begin(), grid_lrs.end(), c.lr) - grid_lrs.begin());
    const auto ep_i = static_cast<std::size_t>(std::find(epochs.begin(), epochs.end(), c.epochs) - epochs.begin());
    curve.color = plot_color(lr_i);
    curve.dash = dashes[ep_i % 5];
    curves.push_back(std::move(curve));
  }
  write_text_atomic(root / "sweep.md", md);
  write_text_atomic(root / "sweep.csv", csv);
  PlotLayout layout{"train loss per cell (colour: learning rate, dashes: epochs)", "epoch", "train loss", ""};
  layout.width = 1100;
  layout.height = 560;
  layout.legend_outside = true;
  write_text_atomic(root / "sweep.svg", render_line_plot(layout, curves));
  fmt::print("\n{}\n[sweep] wrote {}, {}, {}\n", md, (root / "sweep.md").string(), (root / "sweep.csv").string(),
             (root / "sweep.svg").string());
  return 0;
}


// The grid's flags beside identity_finetune's. Empty when --help was asked.
struct SweepArgs {
  SftArgs sft;
  std::vector<double> lrs, epochs;
  bool lrs_given = false;
};

inline std::optional<SweepArgs> parse_sweep_args(int argc, char** argv) {
  namespace po = boost::program_options;
  std::vector<std::string> lr_flags = {"1e-3", "1e-4", "5e-5"}, epoch_flags = {"3", "5", "10", "15", "20"};
  po::options_description grid("lr_epoch_sweep: the grid (every other flag as identity_finetune's)");
  grid.add_options()
      ("learning_rates", po::value(&lr_flags)->multitoken(), "learning rates (default 1e-3 1e-4 5e-5; embedded default: 3e-3 1e-3 1e-4)")
      ("epochs", po::value(&epoch_flags)->multitoken(), "epoch counts (default 3 5 10 15 20)");
  SweepArgs s{parse_sft_args(argc, argv, std::cout, &grid, "lr_epoch_sweep")};
  SftArgs& args = s.sft;
  if (args.help) return std::nullopt;
  require(args.train_type == "lora", "lr_epoch_sweep trains LoRA adapters (--train_type lora)");
  require(!args.quant.nf4(), "--quant_bits 4: lr_epoch_sweep does not sweep QLoRA yet (identity_finetune trains it); "
          "drop the --quant_method/--quant_bits flags");
  require(args.train.resume_from_checkpoint.empty(), "--resume_from_checkpoint: re-run the sweep instead; it resumes cells");
  for (const auto& v : lr_flags) s.lrs.push_back(parse_number("learning_rates", v));
  for (const auto& v : epoch_flags) s.epochs.push_back(parse_number("epochs", v));
  auto given = [&](const char* f) { return std::find(args.given.begin(), args.given.end(), f) != args.given.end(); };
  s.lrs_given = given("learning_rates");
  if (!given("output_dir")) args.train.output_dir = "sweep";
  // Eval loss needs held-out rows; the article's table has it.
  if (!given("split_dataset_ratio")) args.data.split_dataset_ratio = 0.1;
  return s;
}

template <class Model>
int run_sweep(SweepArgs s) {
  return run_sweep<Model>(s.sft, s.lrs, s.epochs, s.lrs_given);
}

}  // namespace peft::examples::sweep
