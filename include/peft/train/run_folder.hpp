// Who may write into a run folder. A run folder holds hours of a user's work, so a program
// never writes into one it does not own and never deletes what it did not create:
//   - a run holds `run.lock` (its pid) while it writes; a second run gets an error naming the
//     holder's pid. A lock whose pid is dead (kill -9, power cut) is taken over with a note: a
//     lock that outlives its run must not make the folder unusable.
//   - only the lock holder writes into the folder, so a staging folder (`checkpoint-N.tmp-*`,
//     `<file>.tmp-*`: write_directory_atomic's and AtomicFileWriter's names) found there once the
//     lock is held belongs to a killed save and is removed; a `checkpoint-N.old-*` (a save killed
//     between moving the previous checkpoint aside and publishing the new one) is put back when
//     its checkpoint is missing, else removed.
//   - a run has an identity (run id, recorded in each checkpoint's peft_state.json), and
//     checkpoint rotation deletes only checkpoints carrying it (train/checkpoint.hpp).
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <regex>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/io/atomic_file.hpp"

namespace peft {

// A fresh run id: time and a random-ish suffix, unique enough to tell two runs apart.
inline std::string new_run_id() {
  return fmt::format("{:x}-{}", static_cast<long long>(std::time(nullptr)), detail::unique_suffix());
}

// Does `dir` hold anything? (A missing folder is empty.)
inline bool folder_has_entries(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return false;
  return std::filesystem::directory_iterator(dir, ec) != std::filesystem::directory_iterator();
}

namespace detail {
inline bool pid_alive(long long pid) {
  if (pid <= 0 || pid > 0x7fffffff) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;  // EPERM: alive, another user's
}
}  // namespace detail

// run.lock in a run folder, held for the object's lifetime. The file is created with O_EXCL, so
// of two runs starting together exactly one gets it.
class RunLock {
 public:
  RunLock() = default;
  explicit RunLock(const std::filesystem::path& run_dir) : file_(run_dir / "run.lock") {
    std::error_code ec;
    std::filesystem::create_directories(run_dir, ec);
    if (ec) fail("{}: cannot create the run folder: {}", run_dir.string(), ec.message());
    const std::string mine = fmt::format("{}\n", ::getpid());
    for (int attempt = 0; attempt < 3; ++attempt) {
      const int fd = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd >= 0) {
        detail::write_all(fd, reinterpret_cast<const std::byte*>(mine.data()), mine.size(), file_);
        ::close(fd);
        held_ = true;
        return;
      }
      if (errno != EEXIST) fail("{}: cannot create the run lock: {}", file_.string(), std::strerror(errno));
      long long holder = -1;
      std::ifstream(file_) >> holder;
      if (detail::pid_alive(holder) && holder != ::getpid())
        fail("{} is in use by another run (pid {}, see {}): wait for it to finish or pick another --output_dir; if "
             "no run is active, delete {}", run_dir.string(), holder, file_.string(), file_.string());
      fmt::print(stderr, "[run] {}: the run that held it (pid {}) is gone; taking the folder over\n", file_.string(),
                 holder);
      std::filesystem::remove(file_, ec);
    }
    fail("{}: cannot take the run lock", file_.string());
  }
  RunLock(RunLock&& o) noexcept : file_(std::move(o.file_)), held_(std::exchange(o.held_, false)) {}
  RunLock& operator=(RunLock&& o) noexcept {
    release();
    file_ = std::move(o.file_);
    held_ = std::exchange(o.held_, false);
    return *this;
  }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  ~RunLock() { release(); }

  void release() {
    if (!held_) return;
    std::error_code ec;
    std::filesystem::remove(file_, ec);
    held_ = false;
  }

 private:
  std::filesystem::path file_;
  bool held_ = false;
};

// What killed saves left in `run_dir` (see the top of this file). Call it with the lock held.
inline void clean_stale_staging(const std::filesystem::path& run_dir) {
  namespace fs = std::filesystem;
  static const std::regex staging(".+\\.tmp-[0-9a-f]{12}");
  static const std::regex moved_aside("(checkpoint-[0-9]+)\\.old-[0-9a-f]{12}");
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return;
  std::vector<fs::path> entries;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) entries.push_back(e.path());
  for (const auto& p : entries) {
    const std::string name = p.filename().string();
    std::smatch m;
    if (std::regex_match(name, staging)) {
      fs::remove_all(p, ec);
      fmt::print(stderr, "[run] removed {}, left by an interrupted save\n", p.string());
    } else if (std::regex_match(name, m, moved_aside)) {
      const fs::path target = run_dir / m[1].str();
      if (fs::exists(target, ec)) {
        fs::remove_all(p, ec);
        fmt::print(stderr, "[run] removed {}, the previous copy of {} left by an interrupted save\n", p.string(),
                   target.string());
      } else if (::rename(p.c_str(), target.c_str()) == 0) {
        fmt::print(stderr, "[run] restored {} from {}, left by an interrupted save\n", target.string(), p.string());
      }
    }
  }
}

}  // namespace peft
