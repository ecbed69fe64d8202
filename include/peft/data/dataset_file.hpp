// Reading one dataset file into rows. A .csv file is CSV (csv_file.hpp); otherwise the layout is
// told by the first non-space character: '[' is a JSON array of rows, anything else is JSONL (one row per line, blank lines skipped). Every
// problem is reported with the file and line: bytes that are not UTF-8 (checked first, with
// utf8proc, so the message says "invalid UTF-8" rather than a JSON syntax error), malformed
// JSON, an empty file, and everything parse_dataset_row rejects. For arrays the line of each
// element is found by a small scan over the (already validated) text, since nlohmann's parser
// does not report positions of values.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utf8proc.h>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/data/csv_file.hpp"
#include "peft/data/dataset_formats.hpp"
#include "peft/io/json_file.hpp"

namespace peft::data {

namespace detail {

// 1-based line and column (in bytes) of a byte offset.
struct TextPosition {
  std::int64_t line = 1;
  std::size_t column = 1;
};

inline TextPosition position_of(std::string_view text, std::size_t offset) {
  TextPosition at;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++at.line;
      line_start = i + 1;
    }
  }
  at.column = offset - line_start + 1;
  return at;
}

inline void require_valid_utf8(std::string_view text, const std::filesystem::path& file) {
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  std::size_t i = 0;
  while (i < text.size()) {
    utf8proc_int32_t codepoint = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(bytes + i, static_cast<utf8proc_ssize_t>(text.size() - i), &codepoint);
    if (n <= 0) {
      const TextPosition at = position_of(text, i);
      fail("{}:{}: invalid UTF-8 (byte 0x{:02X} at column {}); dataset files must be UTF-8 text",
           file.string(), at.line, static_cast<unsigned>(bytes[i]), at.column);
    }
    i += static_cast<std::size_t>(n);
  }
}

// nlohmann's message is "parse error at line L, column C: <what>"; we name the line ourselves.
inline std::string json_error_reason(const nlohmann::json::parse_error& e) {
  std::string message = peft::detail::strip_json_exception_prefix(e.what());
  if (auto column = message.find("column "); column != std::string::npos) {
    if (auto colon = message.find(": ", column); colon != std::string::npos) return message.substr(colon + 2);
  }
  return message;
}

inline bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Byte offsets where each top-level element of a valid JSON array starts.
inline std::vector<std::size_t> array_element_offsets(std::string_view text) {
  std::vector<std::size_t> offsets;
  int depth = 0;
  bool in_string = false, expect_element = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (is_json_space(c)) continue;
    if (depth == 1 && expect_element && c != ']') {
      offsets.push_back(i);
      expect_element = false;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth == 1) expect_element = true;
    } else if (c == ']' || c == '}') {
      --depth;
    } else if (c == ',' && depth == 1) {
      expect_element = true;
    }
  }
  return offsets;
}

inline std::vector<DatasetRow> read_json_array(std::string_view text, std::size_t start,
                                               const std::filesystem::path& file, std::int64_t vocab_size,
                                               Replies replies) {
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    const TextPosition at = position_of(text, e.byte == 0 ? 0 : e.byte - 1);
    fail("{}:{}: malformed JSON at column {}: {}", file.string(), at.line, at.column, json_error_reason(e));
  } catch (const nlohmann::json::exception& e) {  // out_of_range: a number like 1e400 overflows a double
    fail("{}: malformed JSON: {}", file.string(), peft::detail::strip_json_exception_prefix(e.what()));
  }
  require(document.is_array(), "{}: expected a JSON array of rows", file.string());
  require(!document.empty(), "{}: the dataset is empty (an empty JSON array)", file.string());
  const std::vector<std::size_t> offsets = array_element_offsets(text.substr(start));
  require(offsets.size() == document.size(), "{}: internal error locating array elements", file.string());
  std::vector<DatasetRow> rows;
  rows.reserve(document.size());
  std::int64_t line = 1;  // counted incrementally: offsets only grow
  std::size_t scanned = 0;
  for (std::size_t i = 0; i < document.size(); ++i) {
    const std::size_t offset = start + offsets[i];
    for (; scanned < offset; ++scanned) line += text[scanned] == '\n';
    rows.push_back(parse_dataset_row(document[i], {file, line, static_cast<std::int64_t>(i)}, vocab_size, replies));
  }
  return rows;
}

inline std::vector<DatasetRow> read_json_lines(std::string_view text, const std::filesystem::path& file,
                                               std::int64_t vocab_size, Replies replies) {
  std::vector<DatasetRow> rows;
  std::int64_t line_number = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    ++line_number;
    pos = end + 1;
    if (std::all_of(line.begin(), line.end(), is_json_space)) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line.begin(), line.end());
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}:{}: malformed JSON at column {} (JSONL expects one JSON object per line): {}",
           file.string(), line_number, e.byte, json_error_reason(e));
    } catch (const nlohmann::json::exception& e) {  // out_of_range: a number like 1e400 overflows a double
      fail("{}:{}: malformed JSON: {}", file.string(), line_number, peft::detail::strip_json_exception_prefix(e.what()));
    }
    rows.push_back(parse_dataset_row(row, {file, line_number, -1}, vocab_size, replies));
  }
  return rows;
}

}  // namespace detail

// All rows of one .json (array), .jsonl or .csv file. vocab_size bounds pre-tokenized ids; replies:
// whether text rows must carry their reply (training) or may be questions alone (answering).
inline std::vector<DatasetRow> read_dataset_file(const std::filesystem::path& file, std::int64_t vocab_size,
                                                 Replies replies = Replies::Required) {
  const std::string content = read_text_file(file);
  std::string_view text = content;
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // a UTF-8 byte-order mark
  detail::require_valid_utf8(text, file);
  std::size_t first = 0;
  while (first < text.size() && detail::is_json_space(text[first])) ++first;
  require(first < text.size(), "{}: the dataset file is empty", file.string());
  if (file.extension() == ".csv") {
    std::vector<DatasetRow> rows;
    for (const auto& [row, line] : csv_rows(text, file))
      rows.push_back(parse_dataset_row(row, {file, line, -1}, vocab_size, replies));
    require(!rows.empty(), "{}: the CSV file has a header but no rows", file.string());
    return rows;
  }
  std::vector<DatasetRow> rows = text[first] == '['
                                     ? detail::read_json_array(text, first, file, vocab_size, replies)
                                     : detail::read_json_lines(text, file, vocab_size, replies);
  require(!rows.empty(), "{}: the dataset file has no rows", file.string());
  return rows;
}

}  // namespace peft::data
