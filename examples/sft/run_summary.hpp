// ms-swift's closing line of logging.jsonl (swift/llm/train/sft.py, _save_trainer_state, v3):
// the run's last and best checkpoints, the best metric, the step count, the whole log history
// and the peak memory in one entry, beside the parameter summary and the datasets' token-length
// statistics it gathered before training. Scripts written for ms-swift read this last line to
// find the trained adapter, so ours carries the same keys in the same formats.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft/data/sample.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/model_config.hpp"
#include "peft/models/parameter_count.hpp"
#include "peft/train/trainer_state.hpp"

namespace peft::examples {

// swift.utils.stat_array's string of the samples' token lengths (numpy's mean and population std).
inline std::string swift_length_stats(const std::vector<Sample>& samples) {
  if (samples.empty()) return "size=0";
  double sum = 0, sq = 0, lo = static_cast<double>(samples.front().size()), hi = lo;
  for (const auto& s : samples) {
    const auto n = static_cast<double>(s.size());
    sum += n;
    lo = std::min(lo, n);
    hi = std::max(hi, n);
  }
  const double mean = sum / static_cast<double>(samples.size());
  for (const auto& s : samples) sq += (static_cast<double>(s.size()) - mean) * (static_cast<double>(s.size()) - mean);
  return fmt::format("{:.6f}±{:.6f}, min={:.6f}, max={:.6f}, size={}", mean,
                     std::sqrt(sq / static_cast<double>(samples.size())), lo, hi, samples.size());
}

// swift.utils.get_model_parameter_info of the model ms-swift trains: PEFT's wrapper around the
// base for LoRA, the base itself for a full fine-tune. Its one buffer is the rotary inv_freq.
inline std::string swift_parameter_info(const ModelConfig& cfg, std::int64_t trainable, bool lora) {
  const double params = static_cast<double>(trained_model_parameters(cfg, trainable, lora)) / 1e6;
  const double grads = static_cast<double>(trainable) / 1e6;
  return fmt::format("{}: {:.4f}M Params ({:.4f}M Trainable [{:.4f}%]), {:.4f}M Buffers.",
                     lora ? "PeftModelForCausalLM" : "Qwen2ForCausalLM", params, grads, 100.0 * grads / params,
                     static_cast<double>(cfg.head_dim / 2) / 1e6);
}

// What ms-swift gathers before training and appends at the end, given the former.
struct SwiftRunInfo {
  std::string model_parameter_info;
  std::string train_dataset, val_dataset;  // swift_length_stats; val empty: no validation set
};

// Appends the closing line to run_dir/logging.jsonl, rewriting the file atomically (a failed
// write leaves the log as training left it, never a torn last line).
inline void append_swift_run_summary(const std::filesystem::path& run_dir, const SwiftRunInfo& info,
                                     const TrainResult& r) {
  const auto file = run_dir / "logging.jsonl";
  std::ifstream in(file);
  std::string text, line;
  nlohmann::json history = nlohmann::json::array();
  double memory = 0;
  for (std::size_t n = 1; std::getline(in, line); ++n) {
    text += line + "\n";
    auto entry = nlohmann::json::parse(line, nullptr, false);
    if (entry.is_discarded()) throw std::runtime_error(fmt::format("{}:{}: not a JSON line", file.string(), n));
    if (const auto m = entry.find("memory(GiB)"); m != entry.end() && m->is_number())
      memory = std::max(memory, m->get<double>());
    history.push_back(std::move(entry));
  }
  const auto path_or_null = [](const std::filesystem::path& p) {  // absolute, as ms-swift's output_dir
    return p.empty() ? nlohmann::json() : nlohmann::json(std::filesystem::absolute(p).lexically_normal().string());
  };
  nlohmann::json summary = {{"model_parameter_info", info.model_parameter_info},
                            {"train_dataset", info.train_dataset},
                            {"last_model_checkpoint", path_or_null(r.last_checkpoint)},
                            {"best_model_checkpoint", path_or_null(r.best_model_checkpoint)},
                            {"best_metric", peft::detail::finite_or_null(r.best_metric)},
                            {"global_step", r.global_step},
                            {"log_history", std::move(history)},
                            {"memory", memory}};
  if (!info.val_dataset.empty()) summary["val_dataset"] = info.val_dataset;
  write_text_atomic(file, text + summary.dump() + "\n");
}

}  // namespace peft::examples
