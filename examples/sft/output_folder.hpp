// Which folder a training run writes, and making sure it may. The rules (docs/training.md,
// "Output folders"):
//   - --add_version true (the default): a new output_dir/vN-<time>/ folder, created exclusively,
//     so two runs started in the same second get two folders.
//   - --add_version false: output_dir itself; an existing non-empty folder is refused unless
//     --overwrite true (ms-swift would write into it; an earlier run's files would then mix with
//     this one's, so we ask).
//   - --resume_from_checkpoint DIR/checkpoint-N continues in DIR, unless --output_dir is given and
//     names another folder, or DIR is not the checkpoint's run folder (its args.json does not
//     record DIR: a checkpoint copied into a folder of the user's): then a new run folder is
//     started under --output_dir (versioned as above), with resume_source.json saying where it
//     came from; DIR is only read.
// The chosen folder is then locked for the run (train/run_folder.hpp) and cleaned of what killed
// saves left behind.
#pragma once
#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <regex>
#include <ctime>
#include <system_error>
#include <utility>

#include "peft/io/atomic_file.hpp"
#include "peft/train/checkpoint.hpp"
#include "peft/train/run_folder.hpp"
#include "sft_args.hpp"

namespace peft::examples {

// output_dir/vN-YYYYMMDD-HHMMSS, N one past the highest existing version (ms-swift's naming).
inline std::filesystem::path versioned_run_dir(const std::filesystem::path& output_dir) {
  int next = 0;
  static const std::regex pattern("v([0-9]+)-.*");
  if (std::filesystem::exists(output_dir))
    for (const auto& e : std::filesystem::directory_iterator(output_dir)) {
      std::smatch m;
      const std::string name = e.path().filename().string();
      if (std::regex_match(name, m, pattern)) next = std::max(next, std::stoi(m[1]) + 1);
    }
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return output_dir / fmt::format("v{}-{}", next, stamp);
}

// The folders a run created (its vN- folder, and --output_dir with any parents it had to make)
// are removed again if the run fails before writing anything into them, so a bad dataset path
// leaves no empty folder behind. `dir`: the run folder; `top`: the outermost folder this run made
// (empty: none). A folder that held anything, or that the run did not make, stays.
struct RemoveIfLeftEmpty {
  std::filesystem::path dir, top;
  RemoveIfLeftEmpty() = default;
  RemoveIfLeftEmpty(RemoveIfLeftEmpty&& o) noexcept : dir(std::exchange(o.dir, {})), top(std::exchange(o.top, {})) {}
  RemoveIfLeftEmpty& operator=(RemoveIfLeftEmpty&&) = delete;
  ~RemoveIfLeftEmpty() {
    if (top.empty()) return;
    const std::filesystem::path last = top.lexically_normal();
    std::error_code ec;
    for (std::filesystem::path p = dir.lexically_normal();; p = p.parent_path()) {
      if (!std::filesystem::is_directory(std::filesystem::symlink_status(p, ec)) || folder_has_entries(p) ||
          !std::filesystem::remove(p, ec))
        return;
      if (p == last || !p.has_parent_path() || p.parent_path() == p) return;
    }
  }
};

// Creates `dir` with its parents; returns the outermost folder this call made (empty when `dir`
// existed, another run having perhaps made it first: not ours to remove).
inline std::filesystem::path create_folders(const std::filesystem::path& dir, std::error_code& ec) {
  std::filesystem::path made = peft::detail::outermost_missing(dir);
  if (!std::filesystem::create_directories(dir, ec)) made.clear();
  return made;
}

struct RunFolder {
  std::filesystem::path dir;
  std::filesystem::path resumed_from;  // set when a resume starts a new run folder
  bool continues_checkpoint_run = false;
  RemoveIfLeftEmpty created;  // declared before the lock: checked after the lock file is gone
  RunLock lock;
};

// A run folder a resume may continue in: the args.json there records it as the run's output_dir
// (ours and ms-swift's alike). A checkpoint copied into a folder of the user's is not continued
// there: the run's logging.jsonl, images/ and loss.svg would replace the user's files.
inline bool is_run_folder(const std::filesystem::path& dir) {
  const auto args = dir / "args.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(args, ec)) return false;
  try {
    const nlohmann::json j = read_json_file(args);
    const auto* recorded = find_field(j, "output_dir");
    return recorded && recorded->is_string() && same_folder(recorded->get<std::string>(), dir);
  } catch (const Error&) {
    return false;
  }
}

// `writer`: this process writes the run folder (rank 0); the others only learn its name.
inline RunFolder open_run_folder(const SftArgs& a, bool writer) {
  namespace fs = std::filesystem;
  RunFolder f;
  const auto given = [&](const char* flag) { return std::find(a.given.begin(), a.given.end(), flag) != a.given.end(); };
  const fs::path out = a.train.output_dir;
  if (!a.train.resume_from_checkpoint.empty()) {
    const fs::path ckpt = fs::absolute(peft::detail::without_trailing_separator(a.train.resume_from_checkpoint));
    const bool in_place = !given("output_dir") || checkpoint_in_folder(ckpt, out);
    if (in_place && is_run_folder(ckpt.parent_path())) {
      f.dir = ckpt.parent_path();
      f.continues_checkpoint_run = true;
    } else {
      if (in_place)
        fmt::print("[run] {} is not the run folder {} came from (its args.json does not name it): the resumed run "
                   "gets a new run folder under --output_dir {}\n", ckpt.parent_path().string(), ckpt.string(),
                   out.string());
      f.resumed_from = ckpt;
    }
  }
  if (f.dir.empty()) {
    if (!a.add_version) {
      f.dir = out;
      if (writer) {  // claimed only if this run makes it; a failure here is the run lock's to report
        std::error_code ec;
        if (fs::path made = create_folders(out, ec); !made.empty()) {
          f.created.dir = out;
          f.created.top = std::move(made);
        }
      }
      require(!writer || a.overwrite || !folder_has_entries(out),
              "--output_dir {}: the folder exists and is not empty (another run's files?); pass --overwrite true to "
              "write into it anyway, pick another --output_dir, or leave --add_version true for a new vN- folder",
              out.string());
    } else if (writer) {
      std::error_code ec;
      const fs::path made = create_folders(out, ec);
      if (ec) fail("--output_dir {}: cannot create it: {}", out.string(), ec.message());
      for (int attempt = 0; f.dir.empty(); ++attempt) {  // another run may take the name first
        const fs::path candidate = versioned_run_dir(out);
        if (fs::create_directory(candidate, ec)) {
          f.dir = f.created.dir = candidate;
          f.created.top = made.empty() ? candidate : made;
        } else {
          require(attempt < 100, "--output_dir {}: cannot create a new version folder ({}): {}", out.string(),
                  candidate.string(), ec ? ec.message() : "it exists");
        }
      }
    } else {
      f.dir = versioned_run_dir(out);  // not written by this rank
    }
  }
  if (!writer) return f;
  f.lock = RunLock(f.dir);
  clean_stale_staging(f.dir);
  return f;
}

// A resume into a new run folder records where it came from (written once the resume is known to
// be accepted: a refused one leaves the folder empty, and so removed).
inline void write_resume_source(const RunFolder& f) {
  if (f.resumed_from.empty()) return;
  const nlohmann::json source = {{"resumed_from", f.resumed_from.string()},
                                 {"run_id", checkpoint_run_id(f.resumed_from)}};
  write_text_atomic(f.dir / "resume_source.json", source.dump(2) + "\n");
  fmt::print("[run] resuming {} into a new run folder {} (the checkpoint's folder is left as it is)\n",
             f.resumed_from.string(), f.dir.string());
}

}  // namespace peft::examples
