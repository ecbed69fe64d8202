// chat's --result_path. As ms-swift's infer, the {query, response} lines are appended: a file that
// exists keeps every line it had and gets this run's after them (a rerun adds, never truncates).
// It is checked when chat starts, before the model is loaded: a folder, a path that cannot be
// written (no permission, a folder that cannot be made) is refused before any work. The run's
// lines are held until the session ends, or stops at a signal with the answers so far, and are
// then added at once, so a run that fails adds nothing (a failed append is cut back); a new file is written beside its path and
// renamed into place, so it never appears as half a run.
#pragma once
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "peft/core/error.hpp"
#include "peft/io/atomic_file.hpp"

namespace peft::examples {

class ResultFile {
 public:
  ResultFile() = default;  // no --result_path
  explicit ResultFile(const std::string& path) {
    if (path.empty()) return;
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::exists(fs::symlink_status(path, ec))) {
      require(fs::is_regular_file(path, ec), "--result_path {}: {}; give the path of a JSONL file, new or one to "
              "append to", path, fs::is_directory(path, ec) ? "is a folder" : "exists and is not a regular file");
      append_to_ = path;
      append(path, "");  // can it be written? Now, not after the answers
      return;
    }
    try {
      writer_ = std::make_unique<AtomicFileWriter>(path);
    } catch (const Error& e) {
      fail("--result_path {}: cannot write there ({})", path, e.what());
    }
  }
  void add(const std::string& line) {
    if (writer_) writer_->write(line);
    else if (!append_to_.empty()) pending_ += line;
  }
  void commit() {
    if (committed_) return;
    committed_ = true;
    if (writer_) writer_->commit();
    else if (!append_to_.empty() && !pending_.empty()) append(append_to_, pending_);
  }
  std::string path() const { return writer_ ? writer_->target().string() : append_to_; }

 private:
  // A file whose last line has no newline gets one first: its line stays whole, and so do ours.
  static void append(const std::string& path, const std::string& lines) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) fail("--result_path {}: cannot append to it ({})", path, std::strerror(errno));
    std::string text;
    if (!lines.empty()) {
      std::ifstream in(path, std::ios::binary | std::ios::ate);
      char last = '\n';
      if (in && in.tellg() > 0 && in.seekg(-1, std::ios::end)) in.get(last);
      text = (last == '\n' ? "" : "\n") + lines;
    }
    // A write that fails part way (disk full) is cut back to the file's old end: the user's file
    // keeps exactly its lines, never half of one of ours.
    struct stat before{};
    if (::fstat(fd, &before) != 0) {
      ::close(fd);
      fail("--result_path {}: cannot read its size ({})", path, std::strerror(errno));
    }
    try {
      peft::detail::write_all(fd, reinterpret_cast<const std::byte*>(text.data()), text.size(), path);
      if (!text.empty() && ::fsync(fd) != 0) fail("{}: fsync failed: {}", path, std::strerror(errno));
    } catch (...) {
      if (::ftruncate(fd, before.st_size) == 0) ::fsync(fd);
      ::close(fd);
      throw;
    }
    if (::close(fd) != 0) fail("--result_path {}: close failed: {}", path, std::strerror(errno));
  }

  std::unique_ptr<AtomicFileWriter> writer_;
  std::string append_to_, pending_;  // an existing file, and the lines it is to get
  bool committed_ = false;
};

}  // namespace peft::examples
