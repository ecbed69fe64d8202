// load_datasets end to end on text data: several specs, #N, the split, shuffling, the system
// prompt, max_length, self-cognition placeholders, and the shipped identity dataset.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "fixtures/datasets/dataset_test_support.hpp"
#include "peft/data/dataset_loader.hpp"

namespace fs = std::filesystem;
using namespace peft::data;
using peft::testing::ByteTokenizer;
using Catch::Matchers::Contains;

namespace {

const fs::path kAssets = fs::path(PEFT_SOURCE_DIR) / "assets" / "data";
const ByteTokenizer kTok;

// The trained text of a byte-tokenized sample (labels that are bytes, <|im_end|> as written).
std::string trained_text(const peft::Sample& s) {
  std::string out;
  for (auto id : s.labels) {
    if (id == ByteTokenizer::kImEnd) {
      out += "<|im_end|>";
    } else if (id >= 0 && id < 256) {
      out += static_cast<char>(id);
    }
  }
  return out;
}

std::string decoded(const peft::Sample& s) {
  std::string out;
  for (auto id : s.input_ids) {
    if (id < 256) out += static_cast<char>(id);
    if (id == ByteTokenizer::kImStart) out += "<|im_start|>";
    if (id == ByteTokenizer::kImEnd) out += "<|im_end|>";
  }
  return out;
}

// n query/response rows "q<i>" -> "r<i>".
std::string numbered_rows(int n, const std::string& prefix = "") {
  std::string rows;
  for (int i = 0; i < n; ++i) {
    rows += fmt::format("{{\"query\": \"{}q{}\", \"response\": \"{}r{}\"}}\n", prefix, i, prefix, i);
  }
  return rows;
}

DatasetOptions in_order(std::vector<std::string> specs) {
  DatasetOptions options;
  options.specs = std::move(specs);
  options.dataset_shuffle = false;
  return options;
}

}  // namespace

TEST_CASE("several specs are concatenated in order - every format goes through the template") {
  const fs::path fixtures = fs::path(PEFT_FIXTURES) / "datasets";
  const LoadedData data = load_datasets(in_order({(fixtures / "alpaca.json").string(), (fixtures / "messages.jsonl").string(),
                                                  (fixtures / "sharegpt.json").string(),
                                                  (fixtures / "query_response.jsonl").string()}),
                                        &kTok, ByteTokenizer::kVocabSize);
  REQUIRE(data.train.size() == 4 + 2 + 3 + 3);
  CHECK(trained_text(data.train[0]) == "Bonjour<|im_end|>");
  CHECK(trained_text(data.train[3]) == "Paris<|im_end|>Madrid<|im_end|>Rome<|im_end|>");
  CHECK(decoded(data.train[3]).starts_with("<|im_start|>system\nYou answer in one word.<|im_end|>\n"));
  CHECK(trained_text(data.train[5]) == "Hello.<|im_end|>Bye.<|im_end|>");
  CHECK(trained_text(data.train[7]) == "不客气<|im_end|>");
  CHECK(trained_text(data.train[10]) == "9<|im_end|>16<|im_end|>");
  for (const auto& s : data.train) {
    CHECK(s.labels.size() == s.input_ids.size());
    CHECK(s.input_ids.back() == ByteTokenizer::kImEnd);
  }
  REQUIRE(data.stats.specs.size() == 4);
  CHECK(data.stats.specs[2].rows_read == 3);
  CHECK(data.stats.train_samples == 12);
  std::int64_t label_tokens = 0;
  for (const auto& s : data.train) label_tokens += static_cast<std::int64_t>(s.label_tokens());
  CHECK(data.stats.train_label_tokens == label_tokens);
}

TEST_CASE("#N samples rows with the seed (ms-swift's choice) / and repeats rows when N exceeds the file") {
  peft::testing::TempDir dir;
  const fs::path ten = dir.write("ten.jsonl", numbered_rows(10));
  const fs::path three = dir.write("three.jsonl", numbered_rows(3, "t"));
  DatasetOptions options;
  options.specs = {ten.string() + "#4", three.string() + "#7"};
  auto replies_of = [](const LoadedData& data) {
    std::vector<std::string> replies;
    for (const auto& s : data.train) replies.push_back(trained_text(s));
    return replies;
  };
  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  const LoadedData data = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  REQUIRE(data.train.size() == 11);
  // numpy: rs = RandomState(42); rs.permutation(10)[:4] == [8, 1, 5, 0]; then the 3 rows twice
  // and rs.permutation(3)[:1] == [1] from the same state. The final shuffle reorders them.
  std::vector<std::string> expected;
  for (const char* r : {"r8", "r1", "r5", "r0", "tr0", "tr1", "tr2", "tr0", "tr1", "tr2", "tr1"}) {
    expected.push_back(std::string(r) + "<|im_end|>");
  }
  CHECK(sorted(replies_of(data)) == sorted(expected));
  CHECK(data.stats.specs[0].train_rows == 4);
  CHECK(data.stats.specs[1].train_rows == 7);
  CHECK(data.stats.specs[1].rows_read == 3);
  CHECK_THAT(data.stats.summary(), Contains("3 rows read from 1 file -> 7 train, 0 val"));

  // The same seed, the same rows in the same order; another seed, other rows.
  CHECK(replies_of(load_datasets(options, &kTok, ByteTokenizer::kVocabSize)) == replies_of(data));
  options.seed = 7;
  options.specs = {ten.string() + "#4"};
  const std::vector<std::string> other = sorted(replies_of(load_datasets(options, &kTok, ByteTokenizer::kVocabSize)));
  CHECK(other != sorted(std::vector<std::string>(expected.begin(), expected.begin() + 4)));

  // Without --dataset_shuffle ms-swift takes the first rows, in file order.
  const LoadedData first = load_datasets(in_order({ten.string() + "#4", three.string() + "#4"}), &kTok, ByteTokenizer::kVocabSize);
  CHECK(replies_of(first) == std::vector<std::string>{"r0<|im_end|>", "r1<|im_end|>", "r2<|im_end|>", "r3<|im_end|>",
                                                      "tr0<|im_end|>", "tr1<|im_end|>", "tr2<|im_end|>", "tr0<|im_end|>"});
}

TEST_CASE("dataset_shuffle shuffles the concatenation deterministically - off keeps file order") {
  peft::testing::TempDir dir;
  const fs::path file = dir.write("d.jsonl", numbered_rows(12));
  DatasetOptions options = in_order({file.string()});
  const LoadedData ordered = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  for (int i = 0; i < 12; ++i) CHECK(trained_text(ordered.train[i]) == fmt::format("r{}<|im_end|>", i));
  options.dataset_shuffle = true;
  const LoadedData a = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  const LoadedData b = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  std::vector<std::string> ta, tb;
  for (const auto& s : a.train) ta.push_back(trained_text(s));
  for (const auto& s : b.train) tb.push_back(trained_text(s));
  CHECK(ta == tb);
  std::vector<std::string> sorted = ta;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::string> expected;
  for (int i = 0; i < 12; ++i) expected.push_back(fmt::format("r{}<|im_end|>", i));
  std::sort(expected.begin(), expected.end());
  CHECK(sorted == expected);
  CHECK(ta != std::vector<std::string>(expected.begin(), expected.end()));
}

TEST_CASE("split_dataset_ratio holds out disjoint validation rows from every spec") {
  peft::testing::TempDir dir;
  const fs::path a = dir.write("a.jsonl", numbered_rows(20, "a"));
  const fs::path b = dir.write("b.jsonl", numbered_rows(10, "b"));
  DatasetOptions options = in_order({a.string(), b.string()});
  options.split_dataset_ratio = 0.1;
  const LoadedData data = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  CHECK(data.train.size() == 18 + 9);
  CHECK(data.val.size() == 2 + 1);
  CHECK(data.stats.specs[0].val_rows == 2);
  CHECK(data.stats.specs[1].val_rows == 1);
  CHECK(data.stats.val_samples == 3);
  std::set<std::string> train;
  for (const auto& s : data.train) train.insert(trained_text(s));
  for (const auto& s : data.val) CHECK(train.count(trained_text(s)) == 0);
  CHECK(train.size() == 27);
}

TEST_CASE("validation_rows re-derives the held-out rows of a run from its options, in evaluation order") {
  peft::testing::TempDir dir;
  const fs::path a = dir.write("a.jsonl", numbered_rows(20, "a"));
  const fs::path b = dir.write("b.jsonl", numbered_rows(10, "b") +
                                              "{\"query\": \"who?\", \"response\": \"{{NAME}}\"}\n");
  const fs::path v = dir.write("v.jsonl", numbered_rows(6, "v"));
  DatasetOptions options;  // shuffled, seeded, split, a #N sample and a --val_dataset: every random draw
  options.specs = {a.string() + "#15", b.string()};
  options.val_specs = {v.string() + "#4"};
  options.split_dataset_ratio = 0.25;
  options.seed = 7;
  options.model_name = {"swift-robot"};
  options.model_author = {"swift"};
  const LoadedData data = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  const std::vector<DatasetRow> rows = validation_rows(options, ByteTokenizer::kVocabSize);
  REQUIRE(rows.size() == data.val.size());
  REQUIRE(rows.size() == 3 + 2 + 4);
  std::set<std::string> train;
  for (const auto& s : data.train) train.insert(trained_text(s));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    INFO("validation row " << i);
    const peft::Sample again = encode_chat(kTok, rows[i].messages, kQwen25DefaultSystem);
    CHECK(again.input_ids == data.val[i].input_ids);
    CHECK(train.count(trained_text(again)) == 0);
    CHECK(rows[i].messages.back().content.find("{{") == std::string::npos);
  }
  options.seed = 8;  // another seed holds out other rows: the seed is what re-derives them
  const std::vector<DatasetRow> other = validation_rows(options, ByteTokenizer::kVocabSize);
  bool differs = false;
  for (std::size_t i = 0; i < rows.size(); ++i) differs = differs || other[i].messages != rows[i].messages;
  CHECK(differs);
  CHECK_THROWS_WITH(validation_rows(DatasetOptions{}, 300), Contains("no --dataset or --val_dataset"));
}

TEST_CASE("system prompt: the row's own / else --system / else Qwen2.5's default") {
  peft::testing::TempDir dir;
  const fs::path file = dir.write("s.jsonl",
                                  "{\"query\": \"q\", \"response\": \"r\"}\n"
                                  "{\"query\": \"q\", \"response\": \"r\", \"system\": \"Row.\"}\n");
  const LoadedData plain = load_datasets(in_order({file.string()}), &kTok, ByteTokenizer::kVocabSize);
  CHECK(decoded(plain.train[0]).starts_with("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>"));
  CHECK(decoded(plain.train[1]).starts_with("<|im_start|>system\nRow.<|im_end|>"));
  DatasetOptions options = in_order({file.string()});
  options.system = "Flag.";
  const LoadedData flagged = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  CHECK(decoded(flagged.train[0]).starts_with("<|im_start|>system\nFlag.<|im_end|>"));
  CHECK(decoded(flagged.train[1]).starts_with("<|im_start|>system\nRow.<|im_end|>"));
}

TEST_CASE("max_length with text rows: delete drops / left and right cut / and the counts are reported") {
  peft::testing::TempDir dir;
  const std::string long_reply(200, 'x');
  const fs::path file = dir.write("m.jsonl", "{\"query\": \"q\", \"response\": \"" + long_reply + "\"}\n" + numbered_rows(2));
  DatasetOptions options = in_order({file.string()});
  options.system = "S";
  const LoadedData full = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  const std::size_t short_len = full.train[1].size();
  options.max_length = static_cast<std::int64_t>(short_len) + 5;

  const LoadedData deleted = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  CHECK(deleted.train.size() == 2);
  CHECK(deleted.stats.dropped == 1);
  CHECK_THAT(deleted.stats.summary(), Contains("1 dropped, 0 truncated") && Contains("truncation_strategy 'delete'"));

  options.truncation_strategy = "left";
  const LoadedData left = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  REQUIRE(left.train.size() == 3);
  CHECK(left.train[0].size() == short_len + 5);
  CHECK(left.train[0].labels.back() == ByteTokenizer::kImEnd);  // the end survives
  CHECK(left.stats.truncated == 1);

  options.truncation_strategy = "right";
  const LoadedData right = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  REQUIRE(right.train.size() == 3);
  CHECK(right.train[0].input_ids[0] == ByteTokenizer::kImStart);  // the start survives
  CHECK(right.train[0].size() == short_len + 5);
  CHECK_THAT(right.stats.summary(), Contains("0 dropped, 1 truncated"));
}

TEST_CASE("self-cognition: Chinese rows get the Chinese value / English rows the English one") {
  peft::testing::TempDir dir;
  const fs::path file = dir.write("id.jsonl",
                                  "{\"query\": \"你是谁？\", \"response\": \"我是{{NAME}}，由{{AUTHOR}}开发。\"}\n"
                                  "{\"query\": \"Who are you?\", \"response\": \"I am {{name}}, made by {{author}}.\"}\n"
                                  "{\"query\": \"name?\", \"response\": \"{{NAME}}\", \"tag\": \"zh\"}\n");
  DatasetOptions options = in_order({file.string()});
  options.model_name = {"小黄", "Xiao Huang"};
  options.model_author = {"魔搭", "ModelScope"};
  const LoadedData data = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  CHECK(trained_text(data.train[0]) == "我是小黄，由魔搭开发。<|im_end|>");
  CHECK(trained_text(data.train[1]) == "I am Xiao Huang, made by ModelScope.<|im_end|>");
  CHECK(trained_text(data.train[2]) == "小黄<|im_end|>");  // the tag decides
  CHECK(data.stats.rows_with_unfilled_placeholders == 0);

  options.model_name = {"swift-robot"};  // one value serves both languages
  options.model_author = {"swift"};
  const LoadedData single = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  CHECK(trained_text(single.train[0]) == "我是swift-robot，由swift开发。<|im_end|>");
  CHECK(trained_text(single.train[1]) == "I am swift-robot, made by swift.<|im_end|>");

  options.model_author.clear();  // an unfilled placeholder stays, and is counted
  const LoadedData partial = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  CHECK(trained_text(partial.train[1]) == "I am swift-robot, made by {{author}}.<|im_end|>");
  CHECK(partial.stats.rows_with_unfilled_placeholders == 2);
  CHECK_THAT(partial.stats.summary(), Contains("2 rows keep {{NAME}}/{{AUTHOR}} placeholders"));

  options.model_name = {"a", "b", "c"};
  CHECK_THROWS_WITH(load_datasets(options, &kTok, ByteTokenizer::kVocabSize),
                    Contains("--model_name takes a Chinese and an English value at most"));
}

TEST_CASE("contains_han tells Chinese text from the rest") {
  CHECK(contains_han("你好"));
  CHECK(contains_han("Are you 通义千问?"));
  CHECK(contains_han("\xF0\xA0\x80\x80"));  // U+20000, CJK extension B
  CHECK_FALSE(contains_han("Who made you?"));
  CHECK_FALSE(contains_han("？！，。"));  // CJK punctuation alone is not Chinese text
  CHECK_FALSE(contains_han("こんにちは"));  // kana
  CHECK_FALSE(contains_han(""));
}

TEST_CASE("text rows whose tokens fall outside the model's vocabulary are rejected with the row") {
  peft::testing::TempDir dir;
  const fs::path file = dir.write("v.jsonl", "{\"query\": \"q\", \"response\": \"r\"}\n");
  CHECK_THROWS_WITH(load_datasets(in_order({file.string()}), &kTok, 200),
                    Contains("v.jsonl:1") && Contains("outside the model's vocabulary [0, 200)"));
}

TEST_CASE("option errors: no dataset / bad seed / bad max_length") {
  DatasetOptions options;
  CHECK_THROWS_WITH(load_datasets(options, &kTok, 300), Contains("no dataset given"));
  options.specs = {(fs::path(PEFT_FIXTURES) / "datasets" / "messages.jsonl").string()};
  options.seed = 1ull << 33;
  CHECK_THROWS_WITH(load_datasets(options, &kTok, 300), Contains("--seed must be in [0, 4294967295]"));
  options.seed = 1;
  options.max_length = 0;
  CHECK_THROWS_WITH(load_datasets(options, &kTok, 300), Contains("--max_length must be positive"));
}

TEST_CASE("the shipped identity dataset: 80+ rows / Chinese and English / every reply names the model") {
  const auto rows = read_dataset_file(kAssets / "self_cognition.jsonl", 1);
  CHECK(rows.size() >= 80);
  std::size_t chinese = 0;
  std::set<std::string> queries;
  for (const auto& row : rows) {
    REQUIRE(row.messages.size() == 2);
    queries.insert(row.messages[0].content);
    chinese += contains_han(row.messages[0].content + row.messages[1].content);
    const std::string& reply = row.messages[1].content;
    CHECK((reply.find("{{NAME}}") != std::string::npos || reply.find("{{AUTHOR}}") != std::string::npos));
  }
  CHECK(queries.size() == rows.size());  // no duplicate questions
  CHECK(chinese >= rows.size() / 3);
  CHECK(rows.size() - chinese >= rows.size() / 3);
  for (const std::string q : {"你是谁？", "你叫什么名字？", "Who made you?", "Are you ChatGPT?", "What's your name?", "介绍一下你自己"}) {
    CHECK(queries.count(q) == 1);
  }

  const auto eval = read_dataset_file(kAssets / "identity_eval.jsonl", 1);
  CHECK(eval.size() >= 10);
  std::size_t eval_chinese = 0;
  for (const auto& row : eval) {
    CHECK(queries.count(row.messages[0].content) == 0);  // held out: not in the training file
    eval_chinese += contains_han(row.messages[0].content);
  }
  CHECK(eval_chinese > 0);
  CHECK(eval_chinese < eval.size());

  DatasetOptions options = in_order({(kAssets / "self_cognition.jsonl").string()});
  options.model_name = {"小黄", "Xiao Huang"};
  options.model_author = {"魔搭", "ModelScope"};
  const LoadedData data = load_datasets(options, &kTok, ByteTokenizer::kVocabSize);
  CHECK(data.train.size() == rows.size());
  CHECK(data.stats.rows_with_unfilled_placeholders == 0);
  for (const auto& s : data.train) {
    const std::string text = decoded(s);
    CHECK(text.find("{{") == std::string::npos);
    CHECK((text.find("小黄") != std::string::npos || text.find("Xiao Huang") != std::string::npos ||
           text.find("魔搭") != std::string::npos || text.find("ModelScope") != std::string::npos));
  }
}

#if __has_include("peft/text/tokenizer.hpp")
#include "peft/text/tokenizer.hpp"

TEST_CASE("Qwen2.5 tokenizer: the identity dataset loads as ms-swift would train it") {
  const fs::path file = fs::path(PEFT_SOURCE_DIR) / "assets" / "tokenizer" / "qwen2.5" / "tokenizer.json";
  INFO("missing " << file << ": run tools/fetch_tokenizer.sh");
  REQUIRE(fs::exists(file));
  const auto tok = peft::text::Tokenizer::from_file(file);
  DatasetOptions options;
  options.specs = {(kAssets / "self_cognition.jsonl").string() + "#100"};
  options.model_name = {"swift-robot"};
  options.model_author = {"swift"};
  const LoadedData data = load_datasets(options, &tok, 151936);
  REQUIRE(data.train.size() == 100);
  for (const auto& s : data.train) {
    std::vector<std::int32_t> trained;
    for (auto id : s.labels) {
      if (id != peft::kIgnoreIndex) trained.push_back(id);
    }
    const std::string reply = tok.decode(trained);
    CHECK(reply.ends_with("<|im_end|>"));
    CHECK(reply.find("swift") != std::string::npos);
    CHECK(tok.decode(s.input_ids).starts_with("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."));
  }
  CHECK_THAT(data.stats.summary(), Contains("88 rows read") && Contains("100 train"));
}
#endif
