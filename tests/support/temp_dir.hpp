// A fresh directory under the system temp dir, unique per process and use, removed at the end
// of the test (tests that write files: safetensors, plans, checkpoints).
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace peft::test {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("peft_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + tag);
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

}  // namespace peft::test
