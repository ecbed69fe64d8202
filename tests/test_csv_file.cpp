// CSV dataset files (data/csv_file.hpp): RFC 4180 quoting (commas, line breaks and doubled quotes
// inside quotes), CRLF, blank lines; rows become the same dataset rows a .jsonl gives; bad input
// names the file and line.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "fixtures/datasets/dataset_test_support.hpp"
#include "peft/data/dataset_file.hpp"

using namespace peft::data;
using Catch::Matchers::Contains;

TEST_CASE("RFC 4180: quoted commas, quotes and line breaks - CRLF - blank lines skipped") {
  const auto recs = parse_csv("a,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n\r\n,,\nlast,\"\",z", "f.csv");
  REQUIRE(recs.size() == 4);
  CHECK(recs[0].fields == std::vector<std::string>{"a", "b", "c"});
  CHECK(recs[1].fields == std::vector<std::string>{"x, y", "say \"hi\"", "two\nlines"});
  CHECK(recs[1].line == 2);
  CHECK(recs[2].fields == std::vector<std::string>{"", "", ""});
  CHECK(recs[2].line == 5);
  CHECK(recs[3].fields == std::vector<std::string>{"last", "", "z"});
  CHECK(recs[3].line == 6);
}

TEST_CASE("CSV errors name the file and line") {
  CHECK_THROWS_WITH(parse_csv("a,b\n\"open,x\n", "f.csv"), Contains("f.csv:2: a quoted CSV field is not closed"));
  CHECK_THROWS_WITH(parse_csv("a,b\nx\"y,z\n", "f.csv"), Contains("f.csv:2: a '\"' inside an unquoted CSV field"));
  CHECK_THROWS_WITH(parse_csv("a,b\n\"x\"y,z\n", "f.csv"), Contains("f.csv:2: text after a closing"));
  CHECK_THROWS_WITH(csv_rows("a,b\nx,y,z\n", "f.csv"), Contains("f.csv:2: 3 CSV fields, but the header has 2 columns"));
  CHECK_THROWS_WITH(csv_rows("a,a\nx,y\n", "f.csv"), Contains("names column 'a' twice"));
  CHECK_THROWS_WITH(csv_rows("\n\n", "f.csv"), Contains("f.csv: the CSV file is empty"));
}

TEST_CASE("a .csv dataset file reads as the same formats as .jsonl (query/response, alpaca)") {
  peft::testing::TempDir dir;
  const auto file = dir.write("d.csv", "query,response\n\"Who, are you?\",\"I am \"\"X\"\".\"\nhi,hello\n");
  const auto rows = read_dataset_file(file, 1000);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].format == RowFormat::QueryResponse);
  CHECK(rows[0].messages.back().content == "I am \"X\".");
  CHECK(rows[0].messages[rows[0].messages.size() - 2].content == "Who, are you?");
  CHECK(rows[1].where.line == 3);
  const auto alpaca = dir.write("a.csv", "instruction,input,output\ndo it,,done\n");
  CHECK(read_dataset_file(alpaca, 1000)[0].format == RowFormat::Alpaca);
  const auto bad = dir.write("b.csv", "question,answer\nq,a\n");
  CHECK_THROWS_WITH(read_dataset_file(bad, 1000), Contains("b.csv:2") && Contains("fits no dataset format"));
}
