// Pre-tokenized JSONL ({"input_ids", "labels"}) loads without a tokenizer, exactly as written,
// and every malformed row is rejected with its file and line.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "fixtures/datasets/dataset_test_support.hpp"
#include "peft/data/dataset_loader.hpp"

namespace fs = std::filesystem;
using namespace peft::data;
using Catch::Matchers::Contains;

namespace {

const fs::path kTinyTokens = fs::path(PEFT_FIXTURES) / "tiny_public" / "tokens.jsonl";

DatasetOptions options_for(const fs::path& file) {
  DatasetOptions options;
  options.specs = {file.string()};
  options.dataset_shuffle = false;
  return options;
}

}  // namespace

TEST_CASE("tiny_public tokens.jsonl loads without a tokenizer / in file order / exactly as written") {
  const LoadedData data = load_datasets(options_for(kTinyTokens), nullptr, 512);
  REQUIRE(data.train.size() == 16);
  CHECK(data.val.empty());
  std::ifstream in(kTinyTokens);
  std::string line;
  for (std::size_t i = 0; std::getline(in, line); ++i) {
    const auto row = nlohmann::json::parse(line);
    CHECK(data.train[i].input_ids == row["input_ids"].get<std::vector<std::int32_t>>());
    CHECK(data.train[i].labels == row["labels"].get<std::vector<std::int32_t>>());
  }
  CHECK(data.stats.specs.size() == 1);
  CHECK(data.stats.specs[0].rows_read == 16);
  CHECK(data.stats.train_samples == 16);
  CHECK(data.stats.dropped == 0);
  CHECK(data.stats.truncated == 0);
  CHECK_THAT(data.stats.summary(), Contains("16 rows read") && Contains("16 train"));
}

TEST_CASE("pre-tokenized rows: labels absent means train on every token") {
  peft::testing::TempDir dir;
  const fs::path file = dir.write("t.jsonl", "{\"input_ids\": [5, 6, 7]}\n\n{\"input_ids\": [1], \"labels\": [-100]}\n");
  const LoadedData data = load_datasets(options_for(file), nullptr, 10);
  REQUIRE(data.train.size() == 2);
  CHECK(data.train[0].labels == std::vector<std::int32_t>{5, 6, 7});
  CHECK(data.train[1].labels == std::vector<std::int32_t>{-100});
  CHECK(data.stats.samples_without_labels == 1);
}

TEST_CASE("pre-tokenized rows: shuffling with a seed is deterministic and keeps every row") {
  DatasetOptions options = options_for(kTinyTokens);
  options.dataset_shuffle = true;
  const LoadedData a = load_datasets(options, nullptr, 512);
  const LoadedData b = load_datasets(options, nullptr, 512);
  const LoadedData in_order = load_datasets(options_for(kTinyTokens), nullptr, 512);
  REQUIRE(a.train.size() == 16);
  bool same_order = true;
  for (std::size_t i = 0; i < 16; ++i) {
    CHECK(a.train[i].input_ids == b.train[i].input_ids);
    same_order = same_order && a.train[i].input_ids == in_order.train[i].input_ids;
  }
  CHECK_FALSE(same_order);
}

TEST_CASE("bad pre-tokenized rows name the file / the line and the field") {
  peft::testing::TempDir dir;
  auto load_error = [&](const std::string& content) {
    const fs::path file = dir.write("bad.jsonl", content);
    try {
      load_datasets(options_for(file), nullptr, 100);
    } catch (const peft::Error& e) {
      return std::string(e.what());
    }
    FAIL("no error for: " << content);
    return std::string();
  };
  const std::string ok = "{\"input_ids\": [1, 2]}\n";
  CHECK_THAT(load_error(ok + "{\"input_ids\": [1, 2], \"labels\": [1]}\n"),
             Contains("bad.jsonl:2") && Contains("'labels' has 1 entries but 'input_ids' has 2"));
  CHECK_THAT(load_error(ok + ok + "{\"input_ids\": [1, 100]}\n"),
             Contains("bad.jsonl:3") && Contains("input_ids[1]") && Contains("outside the vocabulary [0, 100)"));
  CHECK_THAT(load_error("{\"input_ids\": [-100]}\n"), Contains("bad.jsonl:1") && Contains("'input_ids[0]' = -100"));
  CHECK_THAT(load_error("{\"input_ids\": [1, 2], \"labels\": [1, -5]}\n"),
             Contains("bad.jsonl:1") && Contains("'labels[1]' = -5") && Contains("not -100"));
  CHECK_THAT(load_error("{\"input_ids\": [1, 2], \"labels\": [1, 100]}\n"), Contains("'labels[1]' = 100"));
  CHECK_THAT(load_error("{\"input_ids\": [1, 2.5]}\n"), Contains("bad.jsonl:1") && Contains("input_ids[1]") &&
                                                             Contains("must be an integer"));
  CHECK_THAT(load_error("{\"input_ids\": \"1 2\"}\n"), Contains("'input_ids' must be an array"));
  CHECK_THAT(load_error("{\"input_ids\": []}\n"), Contains("bad.jsonl:1") && Contains("'input_ids' is empty"));
  CHECK_THAT(load_error(ok + "{\"input_ids\": [1, 2]\n"), Contains("bad.jsonl:2") && Contains("malformed JSON"));
  CHECK_THAT(load_error(""), Contains("bad.jsonl") && Contains("empty"));
  CHECK_THAT(load_error("\n  \n"), Contains("bad.jsonl") && Contains("empty"));
}

TEST_CASE("a text row without a tokenizer is a clear error naming the row") {
  peft::testing::TempDir dir;
  const fs::path file =
      dir.write("mixed.jsonl", "{\"input_ids\": [1, 2]}\n{\"query\": \"hi\", \"response\": \"hello\"}\n");
  CHECK_THROWS_WITH(load_datasets(options_for(file), nullptr, 100),
                    Contains("mixed.jsonl:2") && Contains("query/response row is text") &&
                        Contains("no tokenizer"));
}

TEST_CASE("pre-tokenized samples longer than max_length are dropped or cut per truncation_strategy") {
  peft::testing::TempDir dir;
  const fs::path file = dir.write("long.jsonl",
                                  "{\"input_ids\": [1, 2, 3, 4, 5], \"labels\": [-100, -100, 3, 4, 5]}\n"
                                  "{\"input_ids\": [6, 7]}\n");
  DatasetOptions options = options_for(file);
  options.max_length = 3;

  const LoadedData deleted = load_datasets(options, nullptr, 10);
  REQUIRE(deleted.train.size() == 1);
  CHECK(deleted.train[0].input_ids == std::vector<std::int32_t>{6, 7});
  CHECK(deleted.stats.dropped == 1);
  CHECK(deleted.stats.truncated == 0);

  options.truncation_strategy = "left";
  const LoadedData left = load_datasets(options, nullptr, 10);
  REQUIRE(left.train.size() == 2);
  CHECK(left.train[0].input_ids == std::vector<std::int32_t>{3, 4, 5});
  CHECK(left.train[0].labels == std::vector<std::int32_t>{3, 4, 5});
  CHECK(left.stats.truncated == 1);
  CHECK(left.stats.dropped == 0);

  options.truncation_strategy = "right";
  const LoadedData right = load_datasets(options, nullptr, 10);
  REQUIRE(right.train.size() == 2);
  CHECK(right.train[0].input_ids == std::vector<std::int32_t>{1, 2, 3});
  CHECK(right.train[0].labels == std::vector<std::int32_t>{-100, -100, 3});

  options.truncation_strategy = "middle";
  CHECK_THROWS_WITH(load_datasets(options, nullptr, 10),
                    Contains("--truncation_strategy 'middle'") && Contains("delete, left, right"));

  options.truncation_strategy = "delete";
  options.max_length = 1;
  CHECK_THROWS_WITH(load_datasets(options, nullptr, 10),
                    Contains("all 2 training samples are longer than --max_length 1"));
}
