// A scratch folder under the system's temp dir, removed with everything in it when the program
// is done with it: where export and `chat --merge_lora true` put a merged model nobody asked to keep.
#pragma once
#include <filesystem>

#include "peft/io/atomic_file.hpp"  // detail::unique_suffix

namespace peft::examples {

struct TempDir {
  std::filesystem::path path = std::filesystem::temp_directory_path() / ("peft-" + peft::detail::unique_suffix());
  TempDir() = default;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

}  // namespace peft::examples
