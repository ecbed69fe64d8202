// One `--dataset` value, parsed as ms-swift's DatasetSyntax.parse does and resolved to local files:
// - an existing file is taken whole, even when its name contains '#';
// - otherwise `source#N` asks for N rows (the last '#');
// - source is a file, a directory (its *.json / *.jsonl / *.csv), or a dataset id such as
//   `AI-ModelScope/alpaca-gpt4-data-zh`, optionally `id:subset`, found where ms-swift and HF users
//   have it (io/hub_cache.hpp: the ModelScope and HF dataset caches, then `$PEFT_DATA_HOME`): the
//   data files of that folder and its subfolders, or of its `<subset>/` subfolder (the subset
//   `default` is the whole dataset). Nothing is ever downloaded: a missing id is an error that
//   lists where we looked. `dataset_info(s).json`, which ModelScope downloads carry next to the
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
#include "peft/io/hub_cache.hpp"

namespace peft::data {

struct DatasetSpec {
  std::string text;                          // as the user wrote it
  std::string source;                        // the path or id part
  std::optional<std::int64_t> sample_count;  // from `#N`
  std::string subset;                        // from `id:subset`
  std::vector<std::filesystem::path> files;  // resolved, in load order
};

namespace detail {

inline bool is_dataset_file(const std::filesystem::path& p) {
  const std::string ext = p.extension().string();
  const std::string name = p.filename().string();
  return (ext == ".json" || ext == ".jsonl" || ext == ".csv") && name != "dataset_info.json" && name != "dataset_infos.json";
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

// A hub snapshot keeps its data in subfolders (data/train-*.jsonl); hidden folders (.git,
// .cache) hold none.
inline std::vector<std::filesystem::path> dataset_files_under(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->path().filename().string().starts_with(".")) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec) && is_dataset_file(it->path())) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

inline bool looks_like_dataset_id(std::string_view s) { return io::looks_like_hub_id(s); }

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
  } else if (std::string id = spec.source; detail::looks_like_dataset_id(id.substr(0, id.find(':'))) &&
                                            (id.find(':') == std::string::npos || id.find(':') + 1 < id.size())) {
    if (const std::size_t colon = id.find(':'); colon != std::string::npos) {
      spec.subset = id.substr(colon + 1);
      id.resize(colon);
    }
    auto files_of = [&](const fs::path& dir) {
      if (spec.subset.empty() || spec.subset == "default") return detail::dataset_files_under(dir);
      return detail::dataset_files_under(dir / spec.subset);
    };
    // $PEFT_DATA_HOME from the options (tests) stands in for the environment's.
    const std::string home = data_home.string();
    const io::HubLookup found = io::find_in_hub_caches(
        id, io::HubKind::Dataset, [&](const fs::path& dir) { return !files_of(dir).empty(); },
        [&](const char* n) -> const char* {
          if (std::string_view(n) == "PEFT_DATA_HOME") return home.empty() ? nullptr : home.c_str();
          return std::getenv(n);
        });
    require(found.found.has_value(),
            "--dataset '{}': dataset id '{}'{} not found: no .json, .jsonl or .csv files{} in any local cache; "
            "peft never downloads. Looked in:{}\n(put the dataset's files in one of them, e.g. $PEFT_DATA_HOME/{}/)",
            text, id, spec.subset.empty() ? "" : fmt::format(" subset '{}'", spec.subset),
            spec.subset.empty() || spec.subset == "default" ? "" : fmt::format(" under <folder>/{}/", spec.subset),
            found.tried_list(), id);
    spec.files = files_of(*found.found);
  } else {
    fail("--dataset '{}': no such file or directory: {}", text, source.string());
  }
  return spec;
}

}  // namespace peft::data
