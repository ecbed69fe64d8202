// `--dataset` values as ms-swift parses them: paths, `#N`, directories, and dataset ids resolved
// in the local caches and $PEFT_DATA_HOME (never downloaded; the caches: test_hub_cache.cpp),
// with errors that say where we looked; --val_dataset specs.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "fixtures/datasets/dataset_test_support.hpp"
#include "peft/data/dataset_loader.hpp"

namespace fs = std::filesystem;
using namespace peft::data;
using Catch::Matchers::Contains;

namespace {
const std::string kRow = "{\"input_ids\": [1, 2, 3]}\n";
}

TEST_CASE("a path is taken whole - path#N asks for N rows") {
  peft::testing::TempDir dir;
  const fs::path file = dir.write("a.jsonl", kRow);
  const DatasetSpec whole = resolve_dataset_spec(file.string(), {});
  CHECK(whole.source == file.string());
  CHECK_FALSE(whole.sample_count.has_value());
  CHECK(whole.files == std::vector<fs::path>{file});

  const DatasetSpec sampled = resolve_dataset_spec(file.string() + "#500", {});
  CHECK(sampled.text == file.string() + "#500");
  CHECK(sampled.source == file.string());
  CHECK(sampled.sample_count == 500);
  CHECK(sampled.files == std::vector<fs::path>{file});
}

TEST_CASE("an existing file whose name contains '#' is not split") {
  peft::testing::TempDir dir;
  const fs::path file = dir.write("data#3.jsonl", kRow);
  const DatasetSpec spec = resolve_dataset_spec(file.string(), {});
  CHECK_FALSE(spec.sample_count.has_value());
  CHECK(spec.files == std::vector<fs::path>{file});
  const DatasetSpec sampled = resolve_dataset_spec(file.string() + "#2", {});
  CHECK(sampled.sample_count == 2);
  CHECK(sampled.files == std::vector<fs::path>{file});
}

TEST_CASE("bad sample counts are errors") {
  peft::testing::TempDir dir;
  const std::string file = dir.write("a.jsonl", kRow).string();
  for (const std::string suffix : {"#0", "#-3", "#x", "#", "#5x", "#1.5"}) {
    INFO(suffix);
    CHECK_THROWS_WITH(resolve_dataset_spec(file + suffix, {}), Contains("must be a positive integer"));
  }
  // Issue 17: a count past any run's size is refused by name before a row is materialised.
  CHECK_THROWS_WITH(resolve_dataset_spec("nowhere#1000000000", {}),
                    Contains("nowhere#1000000000") && Contains("at most 10000000"));
  CHECK(resolve_dataset_spec(file + "#10000000", {}).sample_count == 10'000'000);
}

TEST_CASE("a directory contributes its .json and .jsonl files in name order / not dataset_infos.json") {
  peft::testing::TempDir dir;
  dir.write("d/b.jsonl", kRow);
  dir.write("d/a.json", "[" + kRow + "]");
  dir.write("d/dataset_infos.json", "{}");
  dir.write("d/README.md", "# readme");
  const DatasetSpec spec = resolve_dataset_spec((dir.path() / "d").string() + "#4", {});
  CHECK(spec.sample_count == 4);
  CHECK(spec.files == std::vector<fs::path>{dir.path() / "d" / "a.json", dir.path() / "d" / "b.jsonl"});
  dir.write("empty/notes.txt", "x");
  CHECK_THROWS_WITH(resolve_dataset_spec((dir.path() / "empty").string(), {}), Contains("has no .json or .jsonl files"));
}

TEST_CASE("a dataset id resolves to $PEFT_DATA_HOME/<org>/<name>/") {
  peft::testing::TempDir home;
  const fs::path file = home.write("AI-ModelScope/alpaca-gpt4-data-zh/alpaca_gpt4_data_zh.json", "[" + kRow + "]");
  const DatasetSpec spec = resolve_dataset_spec("AI-ModelScope/alpaca-gpt4-data-zh#500", home.path());
  CHECK(spec.source == "AI-ModelScope/alpaca-gpt4-data-zh");
  CHECK(spec.sample_count == 500);
  CHECK(spec.files == std::vector<fs::path>{file});
}

TEST_CASE("a dataset id that is not there: the error says where we looked / and nothing is downloaded") {
  peft::testing::TempDir home;
  CHECK_THROWS_WITH(resolve_dataset_spec("AI-ModelScope/alpaca-gpt4-data-en#500", home.path()),
                    Contains("dataset id 'AI-ModelScope/alpaca-gpt4-data-en' not found") &&
                        Contains((home.path() / "AI-ModelScope" / "alpaca-gpt4-data-en").string()) &&
                        Contains("datasets--AI-ModelScope--alpaca-gpt4-data-en") && Contains("never downloads"));
  CHECK_THROWS_WITH(resolve_dataset_spec("no_such_file.jsonl", home.path()),
                    Contains("no such file or directory: no_such_file.jsonl"));
  CHECK_THROWS_WITH(resolve_dataset_spec("./a/b/c.json", home.path()), Contains("no such file or directory"));
  CHECK_THROWS_WITH(resolve_dataset_spec("", home.path()), Contains("empty dataset name"));
}

TEST_CASE("load_datasets reads PEFT_DATA_HOME from the environment when data_home is empty") {
  peft::testing::TempDir home;
  home.write("org/tokens/part-0.jsonl", kRow + kRow);
  home.write("org/tokens/part-1.jsonl", "{\"input_ids\": [4]}\n");
  const char* previous = std::getenv("PEFT_DATA_HOME");
  const std::string saved = previous ? previous : "";
  ::setenv("PEFT_DATA_HOME", home.path().c_str(), 1);
  DatasetOptions options;
  options.specs = {"org/tokens"};
  options.dataset_shuffle = false;
  const LoadedData data = load_datasets(options, nullptr, 10);
  if (previous) {
    ::setenv("PEFT_DATA_HOME", saved.c_str(), 1);
  } else {
    ::unsetenv("PEFT_DATA_HOME");
  }
  REQUIRE(data.train.size() == 3);
  CHECK(data.train[2].input_ids == std::vector<std::int32_t>{4});
  CHECK(data.stats.specs[0].files.size() == 2);
  CHECK(data.stats.specs[0].rows_read == 3);
}

TEST_CASE("val_dataset specs go to validation whole (or their first N rows) after the training split") {
  peft::testing::TempDir dir;
  std::string rows;
  for (int i = 0; i < 5; ++i) rows += "{\"input_ids\": [1, 2, " + std::to_string(3 + i) + "]}\n";
  const fs::path train = dir.write("train.jsonl", rows), val = dir.write("val.jsonl", rows);
  DatasetOptions o;
  o.specs = {train.string()};
  o.val_specs = {val.string(), val.string() + "#2"};
  const LoadedData d = load_datasets(o, nullptr, 100);
  CHECK(d.train.size() == 5);
  CHECK(d.val.size() == 7);
  REQUIRE(d.stats.specs.size() == 3);
  CHECK(d.stats.specs[1].train_rows == 0);
  CHECK(d.stats.specs[1].val_rows == 5);
  CHECK(d.stats.specs[2].val_rows == 2);
}
