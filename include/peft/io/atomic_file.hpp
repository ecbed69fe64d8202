// Files and directories that appear all at once. A training run can be killed at any moment (Ctrl-C,
// OOM, preemption); a reader must then find either the previous adapter/checkpoint or the new one,
// never a torn file. So everything is written to a temporary name in the same directory (same
// filesystem, so rename is atomic), fsynced, renamed over the target, and the directory fsynced so
// the rename itself survives a power cut.
#pragma once
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "peft/core/error.hpp"

namespace peft {

namespace detail {

// A name unlikely to collide; creation uses O_EXCL / mkdir, so a collision only costs a retry.
inline std::string unique_suffix() {
  static std::atomic<std::uint64_t> counter{0};
  std::uint64_t x = static_cast<std::uint64_t>(::getpid()) << 40;
  x ^= static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  x ^= (counter.fetch_add(1) + 1) * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return fmt::format("{:012x}", x & 0xFFFFFFFFFFFFull);
}

// "out/ckpt/" names the directory "out/ckpt"; rename and sibling names need the latter.
inline std::filesystem::path without_trailing_separator(std::filesystem::path p) {
  if (p.has_filename()) return p;
  return p.parent_path();
}

inline std::filesystem::path parent_dir_of(const std::filesystem::path& p) {
  std::filesystem::path dir = p.parent_path();
  return dir.empty() ? std::filesystem::path(".") : dir;
}

// The outermost folder of `p` that does not exist yet (`p` itself when only it is missing; empty
// when `p` exists, or when it cannot be told: a lookup that fails for another reason than "not
// found" claims nothing), what creating `p` with its parents would add, so a failed run can take
// it back.
inline std::filesystem::path outermost_missing(std::filesystem::path p) {
  const auto missing = [](const std::filesystem::path& q) {
    std::error_code ec;
    return std::filesystem::symlink_status(q, ec).type() == std::filesystem::file_type::not_found;
  };
  p = p.lexically_normal();
  if (!missing(p)) return {};
  while (p.has_parent_path() && p.parent_path() != p && missing(p.parent_path())) p = p.parent_path();
  return p;
}

inline void create_parent_dirs(const std::filesystem::path& target) {
  std::error_code ec;
  std::filesystem::create_directories(parent_dir_of(target), ec);
  if (ec) fail("{}: cannot create directory {}: {}", target.string(), parent_dir_of(target).string(), ec.message());
}

inline void fsync_path(const std::filesystem::path& p, bool directory) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) fail("{}: cannot open to fsync: {}", p.string(), std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some filesystems cannot fsync a directory (EINVAL); the data itself is already synced.
  if (rc != 0 && !(directory && err == EINVAL)) fail("{}: fsync failed: {}", p.string(), std::strerror(err));
}

inline void fsync_tree(const std::filesystem::path& root) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    if (entry.is_symlink()) continue;
    if (entry.is_regular_file()) fsync_path(entry.path(), false);
    else if (entry.is_directory()) fsync_path(entry.path(), true);
  }
  fsync_path(root, true);
}

inline void write_all(int fd, const std::byte* data, std::size_t size, const std::filesystem::path& shown) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", shown.string(), std::strerror(errno));
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

}  // namespace detail

// Streams a file under a temporary name and publishes it on commit(). Destroyed without commit
// (an exception on the way), it removes the temporary file and leaves the target untouched.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path target)
      : target_(detail::without_trailing_separator(std::move(target))) {
    detail::create_parent_dirs(target_);
    for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
      temp_ = target_;
      temp_ += ".tmp-" + detail::unique_suffix();
      fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ < 0 && errno != EEXIST)
        fail("{}: cannot create temporary file {}: {}", target_.string(), temp_.string(), std::strerror(errno));
    }
    if (fd_ < 0) fail("{}: cannot find a free temporary file name", target_.string());
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temp_.c_str());
  }

  void write(std::span<const std::byte> bytes) { detail::write_all(fd_, bytes.data(), bytes.size(), target_); }
  void write(std::string_view text) { write(std::as_bytes(std::span<const char>(text.data(), text.size()))); }

  void commit() {
    require(!committed_ && fd_ >= 0, "{}: AtomicFileWriter::commit called twice", target_.string());
    if (::fsync(fd_) != 0) fail("{}: fsync failed: {}", target_.string(), std::strerror(errno));
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail("{}: close failed: {}", target_.string(), std::strerror(errno));
    if (::rename(temp_.c_str(), target_.c_str()) != 0)
      fail("{}: cannot rename {} over it: {}", target_.string(), temp_.string(), std::strerror(errno));
    committed_ = true;
    detail::fsync_path(detail::parent_dir_of(target_), true);
  }

  const std::filesystem::path& target() const { return target_; }

 private:
  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
  bool committed_ = false;
};

inline void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  AtomicFileWriter out(path);
  out.write(bytes);
  out.commit();
}

inline void write_text_atomic(const std::filesystem::path& path, std::string_view text) {
  AtomicFileWriter out(path);
  out.write(text);
  out.commit();
}

// Builds a directory (a checkpoint) in `<target>.tmp-XXXX` through `fill(staging_dir)`, fsyncs
// everything in it, then renames it to `target`. An existing target is first renamed to
// `<target>.old-XXXX` and removed once the new one is in place, so at every moment either the old
// or the new directory is complete on disk. If `fill` throws, the staging directory is removed.
inline void write_directory_atomic(const std::filesystem::path& target_in,
                                   const std::function<void(const std::filesystem::path&)>& fill) {
  namespace fs = std::filesystem;
  const fs::path target = detail::without_trailing_separator(target_in);
  detail::create_parent_dirs(target);
  auto sibling = [&](std::string_view tag) {
    fs::path p = target;
    p += std::string(tag) + detail::unique_suffix();
    return p;
  };

  fs::path staging;
  for (int attempt = 0; attempt < 100 && staging.empty(); ++attempt) {
    fs::path candidate = sibling(".tmp-");
    if (::mkdir(candidate.c_str(), 0777) == 0) staging = candidate;
    else if (errno != EEXIST)
      fail("{}: cannot create staging directory {}: {}", target.string(), candidate.string(), std::strerror(errno));
  }
  if (staging.empty()) fail("{}: cannot find a free staging directory name", target.string());

  std::error_code ignored;
  try {
    fill(staging);
    detail::fsync_tree(staging);
  } catch (...) {
    fs::remove_all(staging, ignored);
    throw;
  }

  fs::path old;
  if (fs::exists(fs::symlink_status(target))) {
    old = sibling(".old-");
    if (::rename(target.c_str(), old.c_str()) != 0) {
      const int err = errno;
      fs::remove_all(staging, ignored);
      fail("{}: cannot move the existing directory aside to {}: {}", target.string(), old.string(), std::strerror(err));
    }
  }
  if (::rename(staging.c_str(), target.c_str()) != 0) {
    const int err = errno;
    if (!old.empty()) ::rename(old.c_str(), target.c_str());  // put the previous version back
    fs::remove_all(staging, ignored);
    fail("{}: cannot rename {} to it: {}", target.string(), staging.string(), std::strerror(err));
  }
  detail::fsync_path(detail::parent_dir_of(target), true);
  if (!old.empty()) fs::remove_all(old, ignored);
}

}  // namespace peft
