// Every dataset row format and file layout, read into chats, and every malformed input rejected
// with the file, the line and (for fields) the field.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "fixtures/datasets/dataset_test_support.hpp"
#include "peft/data/dataset_file.hpp"

namespace fs = std::filesystem;
using namespace peft::data;
using Catch::Matchers::Contains;
using Messages = std::vector<ChatMessage>;

namespace {

const fs::path kFixtures = fs::path(PEFT_FIXTURES) / "datasets";

std::string read_error(const fs::path& file, std::int64_t vocab_size = 1000) {
  try {
    read_dataset_file(file, vocab_size);
  } catch (const peft::Error& e) {
    return e.what();
  }
  FAIL("no error reading " << file);
  return {};
}

}  // namespace

TEST_CASE("alpaca (JSON array): instruction + newline + input / optional system and history") {
  const auto rows = read_dataset_file(kFixtures / "alpaca.json", 1000);
  REQUIRE(rows.size() == 4);
  for (const auto& row : rows) CHECK(row.format == RowFormat::Alpaca);
  CHECK(rows[0].messages == Messages{{Role::User, "Translate to French.\nGood morning"}, {Role::Assistant, "Bonjour"}});
  CHECK(rows[1].messages == Messages{{Role::User, "Name a primary colour."}, {Role::Assistant, "Red."}});
  CHECK(rows[2].messages == Messages{{Role::User, "Only input here"}, {Role::Assistant, "Fine."}});
  CHECK(rows[3].messages == Messages{{Role::System, "You answer in one word."},
                                     {Role::User, "Capital of France?"},
                                     {Role::Assistant, "Paris"},
                                     {Role::User, "Capital of Spain?"},
                                     {Role::Assistant, "Madrid"},
                                     {Role::User, "Capital of Italy?"},
                                     {Role::Assistant, "Rome"}});
  // Each element's location: its index and the line its '{' is on.
  CHECK(rows[0].where.element == 0);
  CHECK(rows[0].where.line == 2);
  CHECK(rows[2].where.line == 12);
  CHECK(rows[3].where.str() == (kFixtures / "alpaca.json").string() + ":17 (element [3])");
}

TEST_CASE("messages (JSONL): roles system/user/assistant / multi-turn") {
  const auto rows = read_dataset_file(kFixtures / "messages.jsonl", 1000);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].format == RowFormat::Messages);
  CHECK(rows[0].messages == Messages{{Role::User, "2+2?"}, {Role::Assistant, "4"}});
  CHECK(rows[1].messages.size() == 5);
  CHECK(rows[1].messages[0] == ChatMessage{Role::System, "Be terse."});
  CHECK(rows[1].messages[4] == ChatMessage{Role::Assistant, "Bye."});
  CHECK(rows[1].where.str() == (kFixtures / "messages.jsonl").string() + ":2");
}

TEST_CASE("sharegpt (JSON array): from human/gpt/system / and a top-level system") {
  const auto rows = read_dataset_file(kFixtures / "sharegpt.json", 1000);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].format == RowFormat::ShareGpt);
  CHECK(rows[0].messages == Messages{{Role::User, "Are you a robot?"}, {Role::Assistant, "I am a language model."}});
  CHECK(rows[1].messages ==
        Messages{{Role::System, "Reply in Chinese."}, {Role::User, "Thanks"}, {Role::Assistant, "不客气"}});
  CHECK(rows[2].messages == Messages{{Role::System, "S"}, {Role::User, "Q"}, {Role::Assistant, "A"}});
}

TEST_CASE("query/response (JSONL): history / system / tag - blank lines skipped but counted") {
  const auto rows = read_dataset_file(kFixtures / "query_response.jsonl", 1000);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].format == RowFormat::QueryResponse);
  CHECK(rows[0].messages == Messages{{Role::User, "What is 3*3?"}, {Role::Assistant, "9"}});
  CHECK(rows[1].messages == Messages{{Role::System, "Math tutor."},
                                     {Role::User, "What is 3*3?"},
                                     {Role::Assistant, "9"},
                                     {Role::User, "And 4*4?"},
                                     {Role::Assistant, "16"}});
  CHECK(rows[1].where.line == 3);
  CHECK(rows[2].tag == "zh");
  CHECK(rows[0].tag.empty());
}

TEST_CASE("formats are detected per row / so one file may mix them") {
  peft::testing::TempDir dir;
  const auto rows = read_dataset_file(dir.write("mixed.jsonl",
                                                "{\"input_ids\": [1, 2]}\n"
                                                "{\"instruction\": \"i\", \"output\": \"o\"}\n"
                                                "{\"query\": \"q\", \"response\": \"r\", \"extra\": 1}\n"
                                                "{\"conversations\": [{\"from\": \"user\", \"value\": \"u\"}, "
                                                "{\"from\": \"assistant\", \"value\": \"a\"}]}\n"),
                                      1000);
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].format == RowFormat::PreTokenized);
  CHECK_FALSE(rows[0].is_text());
  CHECK(rows[1].format == RowFormat::Alpaca);
  CHECK(rows[2].format == RowFormat::QueryResponse);
  CHECK(rows[3].format == RowFormat::ShareGpt);
  CHECK(rows[3].messages == Messages{{Role::User, "u"}, {Role::Assistant, "a"}});
}

TEST_CASE("a row that fits no format names the file / the line and the keys it has") {
  peft::testing::TempDir dir;
  CHECK_THAT(read_error(dir.write("x.jsonl", "{\"query\": \"q\", \"response\": \"r\"}\n{\"prompt\": \"p\", \"answer\": \"a\"}\n")),
             Contains("x.jsonl:2") && Contains("fits no dataset format") && Contains("its keys: answer, prompt"));
  CHECK_THAT(read_error(dir.write("y.json", "[\n  {\"query\": \"q\", \"response\": \"r\"},\n\n  {\"text\": \"t\"}\n]")),
             Contains("y.json:4 (element [1])") && Contains("fits no dataset format"));
  CHECK_THAT(read_error(dir.write("z.jsonl", "[1, 2]\n")), Contains("z.jsonl:1") && Contains("must be a JSON object"));
  CHECK_THAT(read_error(dir.write("w.json", "[{\"query\": \"q\", \"response\": \"r\"}, 7]")),
             Contains("w.json:1 (element [1])") && Contains("must be a JSON object, got integer"));
}

TEST_CASE("missing and mistyped fields name the file / the line and the field") {
  peft::testing::TempDir dir;
  auto row_error = [&](const std::string& row) { return read_error(dir.write("r.jsonl", "\n" + row + "\n")); };
  CHECK_THAT(row_error(R"({"instruction": "i", "input": ""})"),
             Contains("r.jsonl:2") && Contains("missing required field 'output'"));
  CHECK_THAT(row_error(R"({"output": "o"})"), Contains("r.jsonl:2") && Contains("missing required field 'instruction'"));
  CHECK_THAT(row_error(R"({"instruction": "i", "output": 3})"), Contains("field 'output' must be a string"));
  CHECK_THAT(row_error(R"({"instruction": "i", "output": null})"), Contains("missing required field 'output'"));
  CHECK_THAT(row_error(R"({"query": "q"})"), Contains("r.jsonl:2") && Contains("missing required field 'response'"));
  CHECK_THAT(row_error(R"({"response": "r"})"), Contains("missing required field 'query'"));
  CHECK_THAT(row_error(R"({"query": "q", "response": "r", "history": [["only one"]]})"),
             Contains("'history[0]' must be a [query, response] pair"));
  CHECK_THAT(row_error(R"({"query": "q", "response": "r", "history": "h"})"), Contains("'history' must be an array"));
  CHECK_THAT(row_error(R"({"query": "q", "response": "r", "system": 1})"), Contains("field 'system' must be a string"));
  CHECK_THAT(row_error(R"({"messages": []})"), Contains("'messages' must be a non-empty array"));
  CHECK_THAT(row_error(R"({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]})"),
             Contains("r.jsonl:2") && Contains("missing required field 'messages[0].content'"));
  CHECK_THAT(row_error(R"({"messages": [{"content": "q"}]})"), Contains("missing required field 'messages[0].role'"));
  CHECK_THAT(row_error(R"({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "a"}]})"),
             Contains("'messages[0].role' has role 'tool'"));
  CHECK_THAT(row_error(R"({"messages": [{"role": "user", "content": "q"}]})"),
             Contains("last message in 'messages' must be from the assistant"));
  CHECK_THAT(row_error(R"({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]})"),
             Contains("'messages[1]' is a system message"));
  CHECK_THAT(row_error(R"({"messages": ["hello"]})"), Contains("'messages[0]' must be an object"));
  CHECK_THAT(row_error(R"({"conversations": [{"from": "human", "value": 5}, {"from": "gpt", "value": "a"}]})"),
             Contains("field 'conversations[0].value' must be a string"));
  CHECK_THAT(row_error(R"({"system": "s", "messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]})"),
             Contains("both a top-level 'system' and a system message"));
  CHECK_THAT(row_error(R"({"query": "q", "response": "r", "tag": 1})"), Contains("field 'tag' must be a string"));
}

// Training needs every row's reply (the errors above); rows read to be answered (chat, as `swift
// infer --val_dataset`) may be questions alone, in every text format, and keep a reply when present.
TEST_CASE("Replies::Optional reads question-only rows in every text format / replies stay when given") {
  peft::testing::TempDir dir;
  const auto file = dir.write("questions.jsonl",
                              "{\"query\": \"hi\"}\n"
                              "{\"instruction\": \"say hi\", \"input\": \"\"}\n"
                              "{\"messages\": [{\"role\": \"user\", \"content\": \"m\"}]}\n"
                              "{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"gpt\", \"value\": \"b\"}, "
                              "{\"from\": \"human\", \"value\": \"c\"}]}\n"
                              "{\"system\": \"s\", \"query\": \"q\", \"response\": \"r\"}\n"
                              "{\"input_ids\": [1, 2]}\n");
  const auto rows = read_dataset_file(file, 1000, Replies::Optional);
  REQUIRE(rows.size() == 6);
  CHECK(rows[0].messages == Messages{{Role::User, "hi"}});
  CHECK(rows[1].messages == Messages{{Role::User, "say hi"}});
  CHECK(rows[2].messages == Messages{{Role::User, "m"}});
  CHECK(rows[3].messages == Messages{{Role::User, "a"}, {Role::Assistant, "b"}, {Role::User, "c"}});
  CHECK(rows[4].messages == Messages{{Role::System, "s"}, {Role::User, "q"}, {Role::Assistant, "r"}});
  // The question is still required, and ids past the model's vocabulary are still input to it.
  CHECK_THROWS_WITH(read_dataset_file(dir.write("r.jsonl", "{\"response\": \"r\"}\n"), 1000, Replies::Optional),
                    Contains("r.jsonl:1") && Contains("missing required field 'query'"));
  CHECK_THROWS_WITH(read_dataset_file(dir.write("o.jsonl", "{\"output\": \"o\"}\n"), 1000, Replies::Optional),
                    Contains("missing required field 'instruction'"));
  CHECK_THROWS_WITH(read_dataset_file(dir.write("ids.jsonl", "{\"query\": \"q\"}\n{\"input_ids\": [1, 1000]}\n"), 1000,
                                      Replies::Optional),
                    Contains("ids.jsonl:2") && Contains("outside the vocabulary [0, 1000)"));
  // Training (the default) refuses each of them.
  CHECK_THAT(read_error(file), Contains("questions.jsonl:1") && Contains("missing required field 'response'"));
}

TEST_CASE("malformed JSON names the file and the line") {
  peft::testing::TempDir dir;
  CHECK_THAT(read_error(dir.write("a.jsonl", "{\"query\": \"q\", \"response\": \"r\"}\n\n{\"query\": \"q\" \"response\": \"r\"}\n")),
             Contains("a.jsonl:3") && Contains("malformed JSON"));
  CHECK_THAT(read_error(dir.write("b.json", "[\n  {\"query\": \"q\", \"response\": \"r\"},\n  {\"query\": \"q\",, }\n]\n")),
             Contains("b.json:3") && Contains("malformed JSON"));
  CHECK_THAT(read_error(dir.write("c.json", "[\n  {\"query\": \"q\", \"response\": \"r\"}\n")),
             Contains("c.json:") && Contains("malformed JSON"));
  // A pretty-printed object is not JSONL.
  CHECK_THAT(read_error(dir.write("d.jsonl", "{\n  \"query\": \"q\",\n  \"response\": \"r\"\n}\n")),
             Contains("d.jsonl:1") && Contains("one JSON object per line"));
  // A number past a double's range (found by tests/test_fuzz_inputs.cpp): nlohmann throws
  // out_of_range, not parse_error; it must still be a named error.
  CHECK_THAT(read_error(dir.write("e.jsonl", "{\"query\": \"q\", \"response\": \"r\"}\n{\"input_ids\": [1e400]}\n")),
             Contains("e.jsonl:2") && Contains("malformed JSON") && Contains("number overflow"));
  CHECK_THAT(read_error(dir.write("f.json", "[{\"input_ids\": [1e400]}]")), Contains("f.json") && Contains("number overflow"));
}

TEST_CASE("empty files and empty arrays are errors") {
  peft::testing::TempDir dir;
  CHECK_THAT(read_error(dir.write("e.jsonl", "")), Contains("e.jsonl") && Contains("empty"));
  CHECK_THAT(read_error(dir.write("f.json", " \n\t\n")), Contains("f.json") && Contains("empty"));
  CHECK_THAT(read_error(dir.write("g.json", "[ ]")), Contains("g.json") && Contains("empty JSON array"));
  CHECK_THAT(read_error(dir.path() / "missing.jsonl"), Contains("missing.jsonl") && Contains("cannot open"));
}

TEST_CASE("invalid UTF-8 names the file and the line") {
  peft::testing::TempDir dir;
  CHECK_THAT(read_error(dir.write("u.jsonl", "{\"query\": \"ok\", \"response\": \"ok\"}\n{\"query\": \"caf\xE9\", \"response\": \"r\"}\n")),
             Contains("u.jsonl:2") && Contains("invalid UTF-8") && Contains("0xE9") && Contains("column 15"));
  CHECK_THAT(read_error(dir.write("v.json", "[\n{\"query\": \"\xC0\xAF\", \"response\": \"r\"}]")),
             Contains("v.json:2") && Contains("invalid UTF-8"));
  // An encoded surrogate is not valid UTF-8 either.
  CHECK_THAT(read_error(dir.write("w.jsonl", "{\"query\": \"\xED\xA0\x80\", \"response\": \"r\"}\n")),
             Contains("w.jsonl:1") && Contains("invalid UTF-8"));
  // A lone surrogate escape decodes to no character: rejected as malformed JSON.
  CHECK_THAT(read_error(dir.write("x.jsonl", "{\"query\": \"\\ud800\", \"response\": \"r\"}\n")),
             Contains("x.jsonl:1") && Contains("malformed JSON"));
}

TEST_CASE("a UTF-8 byte-order mark and CRLF line ends are accepted") {
  peft::testing::TempDir dir;
  const auto rows = read_dataset_file(
      dir.write("bom.jsonl", "\xEF\xBB\xBF{\"query\": \"q\", \"response\": \"r\"}\r\n{\"query\": \"2\", \"response\": \"3\"}\r\n"), 10);
  REQUIRE(rows.size() == 2);
  CHECK(rows[1].messages[1].content == "3");
  CHECK(rows[1].where.line == 2);
}
