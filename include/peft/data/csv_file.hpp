// CSV dataset files, as ms-swift reads them (a header row naming the columns, one row per record:
// query,response or instruction,input,output or system,query,response). The text is split per
// RFC 4180: fields separated by ',', records by CRLF or LF; a field in double quotes may hold
// commas, line breaks and doubled quotes (""). Blank lines are skipped (as pandas does). Every
// record becomes a JSON object {column: text} for the same row parser the JSON formats use, so
// the formats, placeholders and errors are those of a .jsonl file; errors name the file and line.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::data {

struct CsvRecord {
  std::int64_t line = 0;  // 1-based line where the record starts
  std::vector<std::string> fields;
};

// Splits `text` into records (RFC 4180). `file` only names the input in errors.
inline std::vector<CsvRecord> parse_csv(std::string_view text, const std::filesystem::path& file) {
  std::vector<CsvRecord> records;
  CsvRecord rec;
  std::string field;
  std::int64_t line = 1;
  bool in_quotes = false, quoted = false, record_empty = true;
  std::int64_t quote_line = 0;
  auto end_field = [&] {
    rec.fields.push_back(std::move(field));
    field.clear();
    quoted = false;
  };
  auto end_record = [&] {
    end_field();
    if (!(record_empty && rec.fields.size() == 1 && rec.fields[0].empty())) records.push_back(std::move(rec));
    rec = CsvRecord{};
    record_empty = true;
  };
  rec.line = 1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          in_quotes = false;
          quoted = true;
        }
      } else {
        if (c == '\n') ++line;
        field += c;
      }
      continue;
    }
    if (record_empty) rec.line = line;
    if (c == '"') {
      require(field.empty() && !quoted, "{}:{}: a '\"' inside an unquoted CSV field (quote the whole field and double "
              "the quote: \"a \"\"b\"\"\")", file.string(), line);
      in_quotes = true;
      quote_line = line;
      record_empty = false;
    } else if (c == ',') {
      end_field();
      record_empty = false;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_record();
      ++line;
    } else {
      require(!quoted, "{}:{}: text after a closing '\"' in a CSV field", file.string(), line);
      field += c;
      record_empty = false;
    }
  }
  require(!in_quotes, "{}:{}: a quoted CSV field is not closed (its '\"' opens on this line)", file.string(), quote_line);
  if (!record_empty || !field.empty() || !rec.fields.empty()) end_record();
  return records;
}

// The records after the header, as {column: value} objects, with the line each starts on.
inline std::vector<std::pair<nlohmann::json, std::int64_t>> csv_rows(std::string_view text,
                                                                    const std::filesystem::path& file) {
  const std::vector<CsvRecord> records = parse_csv(text, file);
  require(!records.empty(), "{}: the CSV file is empty (it needs a header row naming the columns)", file.string());
  const std::vector<std::string>& header = records.front().fields;
  for (std::size_t i = 0; i < header.size(); ++i) {
    require(!header[i].empty(), "{}:{}: column {} of the CSV header has no name", file.string(),
            records.front().line, i + 1);
    for (std::size_t j = 0; j < i; ++j)
      require(header[i] != header[j], "{}:{}: the CSV header names column '{}' twice", file.string(),
              records.front().line, header[i]);
  }
  std::vector<std::pair<nlohmann::json, std::int64_t>> rows;
  for (std::size_t r = 1; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    require(rec.fields.size() == header.size(), "{}:{}: {} CSV fields, but the header has {} columns", file.string(),
            rec.line, rec.fields.size(), header.size());
    nlohmann::json row = nlohmann::json::object();
    for (std::size_t i = 0; i < header.size(); ++i) row[header[i]] = rec.fields[i];
    rows.emplace_back(std::move(row), rec.line);
  }
  return rows;
}

}  // namespace peft::data
