// Reads a Hugging Face tokenizer.json. Qwen2's holds 151k vocabulary entries and 151k merges;
// as a JSON DOM they cost more to build and free than everything else in loading together, so
// the parser's callback streams those two arrays straight into vectors and drops them from the
// DOM, which keeps only the small sections (normalizer, pre_tokenizer, added_tokens, ...).
// Every error names the file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "peft/core/error.hpp"

namespace peft::detail {

struct TokenizerJson {
  nlohmann::json config;                                     // the file minus model.vocab/merges
  std::vector<std::pair<std::string, int32_t>> vocab;        // byte-level spelling, id
  std::vector<std::pair<std::string, std::string>> merges;   // in rank order
};

inline TokenizerJson read_tokenizer_json(const std::filesystem::path& path) {
  const std::string where = path.string();
  require(std::filesystem::is_regular_file(path), "tokenizer file not found: {}", where);
  std::ifstream in(path, std::ios::binary);
  require(in.good(), "cannot open tokenizer file {}", where);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  TokenizerJson out;
  std::string section, field, token;  // keys at depth 1 and 2; the vocab key just read
  auto in_model = [&](const char* name) { return section == "model" && field == name; };
  using Event = nlohmann::json::parse_event_t;
  auto on_event = [&](int depth, Event event, nlohmann::json& parsed) -> bool {
    if (event == Event::key) {
      if (depth == 1) section = parsed.get<std::string>();
      if (depth == 2) field = parsed.get<std::string>();
      if (depth == 3 && in_model("vocab")) {
        token = parsed.get<std::string>();
        return false;
      }
      return true;
    }
    if (depth == 3 && event == Event::value && in_model("vocab")) {
      out.vocab.emplace_back(std::move(token), parsed.get<int32_t>());
      return false;
    }
    if (depth == 3 && event == Event::value && in_model("merges")) {  // "a b" (older files)
      const std::string& line = parsed.get_ref<const std::string&>();
      const std::size_t space = line.find(' ');
      require(space != std::string::npos && line.find(' ', space + 1) == std::string::npos,
              "{}: merge #{} \"{}\" is not two tokens separated by one space", where, out.merges.size(), line);
      out.merges.emplace_back(line.substr(0, space), line.substr(space + 1));
      return false;
    }
    if (depth == 3 && event == Event::array_end && in_model("merges")) {  // ["a", "b"] (newer)
      require(parsed.size() == 2 && parsed[0].is_string() && parsed[1].is_string(),
              "{}: merge #{} {} is not a pair of strings", where, out.merges.size(), parsed.dump());
      out.merges.emplace_back(parsed[0].get<std::string>(), parsed[1].get<std::string>());
      return false;
    }
    return true;
  };
  try {
    out.config = nlohmann::json::parse(text, on_event);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: not valid JSON (truncated or corrupt file?): {}", where, e.what());
  } catch (const nlohmann::json::exception& e) {  // e.g. a vocabulary id that is not a number
    fail("{}: unexpected content in model.vocab or model.merges: {}", where, e.what());
  }
  return out;
}

}  // namespace peft::detail
