// Single-threaded encode throughput of peft::text::Tokenizer on a text corpus, printed in the same
// form as bench/tokenizer_hf.py prints HF tokenizers' numbers, so the two runs compare directly:
// the same texts (instruction, input and output fields of alpaca-style records, each a separate
// text; or plain strings), the first pass over the corpus (empty piece cache) and the best later
// pass (warm cache), and an FNV-1a hash of every id so that equal hashes show equal output.
//
//   tokenizer_bench TOKENIZER_JSON CORPUS_JSON... [--repeats N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "peft/text/tokenizer.hpp"

namespace {

std::vector<std::string> load_texts(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  peft::require(in.good(), "cannot open corpus {}", path);
  const nlohmann::json records = nlohmann::json::parse(in);
  peft::require(records.is_array(), "{}: expected a JSON array", path);
  std::vector<std::string> texts;
  for (const nlohmann::json& record : records) {
    if (record.is_string()) texts.push_back(record.get<std::string>());
    if (!record.is_object()) continue;
    for (const char* field : {"instruction", "input", "output"}) {
      const std::string text = record.value(field, "");
      if (!text.empty()) texts.push_back(text);
    }
  }
  return texts;
}

struct Pass {
  double seconds = 0;
  std::size_t tokens = 0;
  uint64_t hash = 1469598103934665603ULL;  // FNV-1a over the ids
};

Pass encode_all(const peft::text::Tokenizer& tokenizer, const std::vector<std::string>& texts) {
  Pass pass;
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& text : texts) {
    for (const int32_t id : tokenizer.encode(text)) {
      pass.hash = (pass.hash ^ static_cast<uint64_t>(id)) * 1099511628211ULL;
      ++pass.tokens;
    }
  }
  pass.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return pass;
}

}  // namespace

int main(int argc, char** argv) try {
  std::vector<std::string> args(argv + 1, argv + argc);
  int repeats = 5;
  if (const auto it = std::find(args.begin(), args.end(), "--repeats"); it != args.end() && it + 1 != args.end()) {
    repeats = std::stoi(*(it + 1));
    args.erase(it, it + 2);
  }
  if (args.size() < 2) {
    std::fprintf(stderr, "usage: tokenizer_bench TOKENIZER_JSON CORPUS_JSON... [--repeats N]\n");
    return 2;
  }
  const auto load_start = std::chrono::steady_clock::now();
  const auto tokenizer = peft::text::Tokenizer::from_file(args[0]);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  std::vector<std::string> texts;
  for (std::size_t i = 1; i < args.size(); ++i)
    for (auto& text : load_texts(args[i])) texts.push_back(std::move(text));
  std::size_t bytes = 0;
  for (const auto& text : texts) bytes += text.size();

  const Pass cold = encode_all(tokenizer, texts);
  Pass warm = cold;
  for (int r = 0; r < repeats; ++r) {
    const Pass pass = encode_all(tokenizer, texts);
    if (pass.seconds < warm.seconds || r == 0) warm = pass;
  }
  auto report = [&](const char* name, const Pass& pass) {
    std::printf("peft %-26s %8.1f ms  %7.2f MB/s  %10.0f tokens/s  (%zu tokens, hash %016llx)\n", name,
                pass.seconds * 1e3, bytes / pass.seconds / 1e6, pass.tokens / pass.seconds, pass.tokens,
                static_cast<unsigned long long>(pass.hash));
  };
  std::printf("peft load %.0f ms; corpus: %zu texts, %.2f MB\n", load_s * 1e3, texts.size(), bytes / 1e6);
  report("encode, first pass", cold);
  report("encode, best later pass", warm);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "tokenizer_bench: error: %s\n", e.what());
  return 1;
}
