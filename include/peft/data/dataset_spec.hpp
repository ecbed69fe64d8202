// One `--dataset` value, parsed as ms-swift's DatasetSyntax.parse does and resolved to local files:
// - an existing file is taken whole, even when its name contains '#';
// - otherwise `source#N` asks for N rows (the last '#');
// - source is a file, a directory (its *.json / *.jsonl), or a dataset id such as
//   `AI-ModelScope/alpaca-gpt4-data-zh`, which resolves to the *.json / *.jsonl files under
//   `$PEFT_DATA_HOME/<org>/<name>/`. Nothing is ever downloaded: a missing id is an error that
//   says where we looked. `dataset_info(s).json`, which ModelScope downloads carry next to the
//   data (ms-swift sets it aside too), is not a data file.
#pragma once
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::data {

struct DatasetSpec {
  std::string text;                          // as the user wrote it
  std::string source;                        // the path or id part
  std::optional<std::int64_t> sample_count;  // from `#N`
  std::vector<std::filesystem::path> files;  // resolved, in load order
};

namespace detail {

inline bool is_dataset_file(const std::filesystem::path& p) {
  const std::string ext = p.extension().string();
  const std::string name = p.filename().string();
  return (ext == ".json" || ext == ".jsonl") && name != "dataset_info.json" && name != "dataset_infos.json";
}

inline std::vector<std::filesystem::path> dataset_files_in(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.is_regular_file(ec) && is_dataset_file(entry.path())) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// `org/name` with the characters hub ids use.
inline bool looks_like_dataset_id(std::string_view s) {
  const std::size_t slash = s.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == s.size()) return false;
  if (s.find('/', slash + 1) != std::string_view::npos || s.front() == '.') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '/';
  });
}

}  // namespace detail

// `#N` above this is refused before any row is read: N rows are materialised (sampled again when
// the dataset is smaller), so an N past any fine-tuning run's size only ends in std::bad_alloc.
inline constexpr std::int64_t kMaxDatasetSampleCount = 10'000'000;

// data_home: $PEFT_DATA_HOME (empty when unset).
inline DatasetSpec resolve_dataset_spec(std::string_view text, const std::filesystem::path& data_home) {
  namespace fs = std::filesystem;
  std::error_code ec;
  DatasetSpec spec;
  spec.text = std::string(text);
  require(!text.empty(), "--dataset: empty dataset name");
  spec.source = spec.text;
  if (!fs::is_regular_file(fs::path(spec.text), ec)) {
    if (const std::size_t hash = text.rfind('#'); hash != std::string_view::npos) {
      const std::string_view count = text.substr(hash + 1);
      std::int64_t n = 0;
      const auto [end, err] = std::from_chars(count.data(), count.data() + count.size(), n);
      require(err == std::errc() && end == count.data() + count.size() && n > 0,
              "--dataset '{}': the sample count after '#' must be a positive integer, got '{}'", text, count);
      require(n <= kMaxDatasetSampleCount,
              "--dataset '{}': at most {} samples can be asked for with '#' (got {}); rows are drawn again when N "
              "exceeds the dataset, so a larger N only repeats them", text, kMaxDatasetSampleCount, n);
      spec.source = std::string(text.substr(0, hash));
      spec.sample_count = n;
    }
  }
  const fs::path source(spec.source);
  if (fs::is_regular_file(source, ec)) {
    spec.files = {source};
  } else if (fs::is_directory(source, ec)) {
    spec.files = detail::dataset_files_in(source);
    require(!spec.files.empty(), "--dataset '{}': the directory {} has no .json or .jsonl files", text,
            source.string());
  } else if (detail::looks_like_dataset_id(spec.source)) {
    require(!data_home.empty(),
            "--dataset '{}': no such file, and '{}' looks like a dataset id, but PEFT_DATA_HOME is not set. "
            "peft never downloads: put the dataset's .json/.jsonl files in $PEFT_DATA_HOME/{}/",
            text, spec.source, spec.source);
    const fs::path dir = data_home / source;
    spec.files = detail::dataset_files_in(dir);
    require(!spec.files.empty(),
            "--dataset '{}': dataset id '{}' not found: no .json or .jsonl files in {} (PEFT_DATA_HOME={}). "
            "peft never downloads: put the dataset's files there",
            text, spec.source, dir.string(), data_home.string());
  } else {
    fail("--dataset '{}': no such file or directory: {}", text, source.string());
  }
  return spec;
}

}  // namespace peft::data
