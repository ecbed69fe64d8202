// What a training run shows while it runs, in ms-swift's words: the keys its logging.jsonl lines
// carry beside the trainer's own (global_step/max_steps, percentage, elapsed_time,
// remaining_time, memory(GiB), train_speed(iter/s)), and the tqdm bar it draws on a terminal
// ("Train:  45%|████▌     | 27/60 [00:10<00:12,  2.60it/s]"). Written here once so the format
// is tested apart from the trainer, and parsers written for ms-swift's files read ours.
#pragma once
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <string>

namespace peft {

// ms-swift's format_time: "45s", "1m 2s", "2h 0m 5s", "1d 3h 0m 0s".
inline std::string swift_format_time(double seconds) {
  const auto s = static_cast<long long>(std::max(0.0, seconds));
  const long long d = s / 86400, h = s % 86400 / 3600, m = s % 3600 / 60, sec = s % 60;
  if (d > 0) return fmt::format("{}d {}h {}m {}s", d, h, m, sec);
  if (h > 0) return fmt::format("{}h {}m {}s", h, m, sec);
  if (m > 0) return fmt::format("{}m {}s", m, sec);
  return fmt::format("{}s", sec);
}

// The log lines' clock: "00:00:10".
inline std::string hms_clock(double seconds) {
  const auto t = static_cast<long long>(seconds + 0.5);
  return fmt::format("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
}

// tqdm's clock: "00:10", or "1:02:03" past an hour.
inline std::string tqdm_clock(double seconds) {
  const auto s = static_cast<long long>(std::max(0.0, seconds));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{:02}:{:02}", s / 60, s % 60);
}

// Peak resident memory of this process in GiB (the CPU backend's memory; ms-swift reports the
// GPU's reserved memory under the same key).
inline double peak_memory_gib() {
  rusage u{};
  if (::getrusage(RUSAGE_SELF, &u) != 0) return 0.0;
  return static_cast<double>(u.ru_maxrss) * 1024.0 / (1024.0 * 1024.0 * 1024.0);  // ru_maxrss is in KiB
}

// ms-swift's progress keys, which its callback adds to every logged entry (training, evaluation,
// the train end). `done`/`elapsed`: steps taken and seconds spent by this process (a resumed run's
// remaining time counts only those).
inline void add_swift_train_message(nlohmann::json& entry, std::int64_t global_step, std::int64_t max_steps,
                                    std::int64_t done, double elapsed) {
  const double fraction = max_steps > 0 ? static_cast<double>(global_step) / static_cast<double>(max_steps) : 0.0;
  entry["global_step/max_steps"] = fmt::format("{}/{}", global_step, max_steps);
  entry["percentage"] = fmt::format("{:.2f}%", fraction * 100.0);
  entry["elapsed_time"] = swift_format_time(elapsed);
  const double per_step = done > 0 ? elapsed / static_cast<double>(done) : 0.0;
  entry["remaining_time"] = swift_format_time(per_step * static_cast<double>(max_steps - global_step));
}
// HF's speed_metrics(prefix, ...): "<prefix>_runtime" (seconds, 4 decimals) and the samples and
// steps a second (3 decimals), as its Trainer logs them at the train end and after an evaluation.
inline void add_speed_metrics(nlohmann::json& entry, const std::string& prefix, double runtime, double samples,
                              double steps) {
  const auto rate = [&](double n) { return runtime > 0 ? std::round(n / runtime * 1e3) / 1e3 : 0.0; };
  entry[prefix + "_runtime"] = std::round(runtime * 1e4) / 1e4;
  entry[prefix + "_samples_per_second"] = rate(samples);
  entry[prefix + "_steps_per_second"] = rate(steps);
}
// A training entry's: the above, and the peak memory and step rate ms-swift's trainer adds.
inline void add_swift_progress_keys(nlohmann::json& entry, std::int64_t global_step, std::int64_t max_steps,
                                    std::int64_t done, double elapsed, double memory_gib) {
  add_swift_train_message(entry, global_step, max_steps, done, elapsed);
  entry["memory(GiB)"] = std::round(memory_gib * 100.0) / 100.0;
  entry["train_speed(iter/s)"] = elapsed > 0 ? std::round(static_cast<double>(done) / elapsed * 1e6) / 1e6 : 0.0;
}

// One tqdm line: "Train:  45%|████▌     | 27/60 [00:10<00:12,  2.60it/s]". The bar is `width`
// cells of eighth blocks, as tqdm draws it.
inline std::string tqdm_line(std::int64_t n, std::int64_t total, std::int64_t done, double elapsed, int width = 20) {
  const double frac = total > 0 ? std::clamp(static_cast<double>(n) / static_cast<double>(total), 0.0, 1.0) : 0.0;
  const int eighths = static_cast<int>(frac * width * 8);
  std::string bar;
  for (int i = 0; i < eighths / 8; ++i) bar += "█";
  static const char* partial[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
  int cells = eighths / 8;
  if (cells < width && eighths % 8) {
    bar += partial[eighths % 8];
    ++cells;
  }
  bar += std::string(static_cast<std::size_t>(width - cells), ' ');
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  const std::string eta = rate > 0 ? tqdm_clock(static_cast<double>(total - n) / rate) : "?";
  const std::string speed = rate >= 1 || rate == 0 ? fmt::format("{:5.2f}it/s", rate) : fmt::format("{:5.2f}s/it", 1.0 / rate);
  return fmt::format("Train: {:3.0f}%|{}| {}/{} [{}<{}, {}]", std::floor(frac * 100), bar, n, total, tqdm_clock(elapsed),
                     eta, speed);
}

// A terminal gets the bar, redrawn in place every step, with log lines printed above it; a pipe
// or file gets the log lines only, so `2>&1 | tee log` stays a plain, ordered text.
class ProgressDisplay {
 public:
  explicit ProgressDisplay(bool terminal = ::isatty(STDOUT_FILENO) == 1) : terminal_(terminal) {}
  bool terminal() const { return terminal_; }

  void bar(std::int64_t n, std::int64_t total, std::int64_t done, double elapsed) {
    if (!terminal_) return;
    fmt::print("\r\033[K{}", tqdm_line(n, total, done, elapsed));
    std::fflush(stdout);
    drawn_ = true;
  }
  // A line above the bar (the bar is redrawn at the next step).
  void line(const std::string& text) {
    if (drawn_) fmt::print("\r\033[K");
    fmt::print("{}\n", text);
    std::fflush(stdout);
    drawn_ = false;
  }
  // Leaves the last bar on screen and moves below it.
  void finish() {
    if (drawn_) fmt::print("\n");
    std::fflush(stdout);
    drawn_ = false;
  }

 private:
  bool terminal_;
  bool drawn_ = false;
};

}  // namespace peft
