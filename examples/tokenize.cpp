// tokenize: the tokenizer as a filter, for checking ids against other tools line by line.
//   tokenize [--tokenizer FILE]            one JSON string per line in, one JSON array of ids out
//   tokenize [--tokenizer FILE] --decode   one JSON array of ids per line in, one JSON string out
// Encoding is HF's encode(add_special_tokens=False), decoding HF's decode(skip_special_tokens=
// False). A malformed line stops the program with its line number and exit status 1, so a
// pipeline never silently drops or misaligns lines.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "peft/core/error.hpp"
#include "peft/text/tokenizer.hpp"
#include "sft/embedded_default.hpp"

namespace po = boost::program_options;

namespace {

// The shipped tokenizer, found as every program finds its assets (sft/embedded_default.hpp).
const std::string kDefaultTokenizer = peft::examples::default_tokenizer().string();

std::string encode_line(const peft::text::Tokenizer& tokenizer, const nlohmann::json& line) {
  peft::require(line.is_string(), "expected a JSON string, got {}", line.dump());
  return nlohmann::json(tokenizer.encode(line.get_ref<const std::string&>())).dump();
}

std::string decode_line(const peft::text::Tokenizer& tokenizer, const nlohmann::json& line) {
  peft::require(line.is_array(), "expected a JSON array of token ids, got {}", line.dump());
  std::vector<int32_t> ids;
  ids.reserve(line.size());
  for (const nlohmann::json& id : line) {
    peft::require(id.is_number_integer() && id.get<int64_t>() >= INT32_MIN && id.get<int64_t>() <= INT32_MAX,
                  "expected integer token ids, got {}", id.dump());
    ids.push_back(id.get<int32_t>());
  }
  return nlohmann::json(tokenizer.decode(ids)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    po::options_description options(
        "tokenize: reads one JSON string per line on stdin, prints one JSON array of token ids per line\n"
        "Options");
    options.add_options()                                                                       //
        ("help,h", "show this help")                                                            //
        ("tokenizer", po::value<std::string>()->default_value(kDefaultTokenizer), "tokenizer.json to use")  //
        ("decode", po::bool_switch(), "read JSON arrays of ids and print JSON strings instead");
    po::variables_map vm;
    try {
      po::store(po::parse_command_line(argc, argv, options), vm);
      po::notify(vm);
    } catch (const po::error& e) {
      peft::fail("{} (see --help)", e.what());
    }
    if (vm.count("help")) {
      std::cout << options << "\n";
      return 0;
    }
    const std::string path = vm["tokenizer"].as<std::string>();
    if (path == kDefaultTokenizer && !std::filesystem::exists(path))
      peft::fail("the default tokenizer {} is missing: run tools/fetch_tokenizer.sh (needs npm), or pass --tokenizer",
                 path);
    const auto tokenizer = peft::text::Tokenizer::from_file(path);
    const bool decode = vm["decode"].as<bool>();
    const bool interactive = ::isatty(STDIN_FILENO) != 0;

    std::string text;
    for (long line_number = 1; std::getline(std::cin, text); ++line_number) {
      try {
        const nlohmann::json line = nlohmann::json::parse(text);
        std::cout << (decode ? decode_line(tokenizer, line) : encode_line(tokenizer, line)) << '\n';
      } catch (const std::exception& e) {  // peft::Error or nlohmann's parse_error
        peft::fail("stdin line {}: {}", line_number, e.what());
      }
      if (interactive) std::cout.flush();
    }
    return 0;
  } catch (const std::exception& e) {
    std::cout.flush();
    fmt::print(stderr, "tokenize: error: {}\n", e.what());
    return 1;
  }
}
