// A bounded fuzz of everything a user hands the library as a file (issue 17): safetensors headers,
// config.json, tokenizer.json and dataset lines, mutated from the tiny fixtures with a fixed seed,
// a few thousand cases in a few seconds. Every case must either load or throw peft::Error (a named
// error); any other exception (std::bad_alloc, a nlohmann or std::out_of_range leak) fails the test,
// and a crash or a hang fails it by itself. The calls are the library's own, in process, so the
// cases are cheap; PEFT_FUZZ_CASES scales the counts up for a longer local run.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <typeinfo>
#include <vector>

#include "peft/data/dataset_loader.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/checkpoint_shapes.hpp"
#include "peft/io/model_config.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/text/tokenizer.hpp"
#include "support/fixture.hpp"

using namespace peft;
namespace fs = std::filesystem;

namespace {

int cases(int n) {
  const char* scale = std::getenv("PEFT_FUZZ_CASES");
  return scale && *scale ? n * std::max(1, std::atoi(scale)) : n;
}

std::string read_bytes(const fs::path& p) { return read_text_file(p); }

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

struct Scratch {
  fs::path dir = fs::temp_directory_path() / ("peft_test_fuzz_" + std::to_string(::getpid()));
  Scratch() { fs::create_directories(dir); }
  ~Scratch() { fs::remove_all(dir); }
};

// Values that have broken parsers before: limits, signs, types, huge counts.
const std::vector<std::string> kInteresting = {
    "0", "-1", "1", "2", "255", "256", "65536", "4294967296", "9223372036854775807", "18446744073709551615",
    "99999999999999999999999", "-9223372036854775808", "1e308", "-1e308", "1.5", "NaN", "null", "true", "\"\"",
    "\"x\"", "[]", "{}", "[1, 2]", "[-1]", "[4294967296, 4294967296]", "\"\\u0000\"", "\"\\ud800\""};

class Mutator {
 public:
  explicit Mutator(std::uint64_t seed) : rng_(seed) {}

  std::size_t below(std::size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }

  // One to three byte-level edits: flip, insert, delete, duplicate, truncate, or a number swapped
  // for an interesting value.
  std::string bytes(std::string s) {
    const int edits = 1 + static_cast<int>(below(3));
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const std::size_t at = below(s.size());
      switch (below(7)) {
        case 0: s[at] = static_cast<char>(below(256)); break;
        case 1: s.insert(at, 1, "{}[]\",:0-9e\\ \xff\xc3"[below(16)]); break;
        case 2: s.erase(at, 1 + below(16)); break;
        case 3: s.insert(at, s.substr(at, 1 + below(64))); break;
        case 4: s.resize(at); break;
        default: {  // the number (or literal) that starts at or after `at`
          std::size_t b = s.find_first_of("-0123456789tfn\"[{", at);
          if (b == std::string::npos) break;
          std::size_t end = s.find_first_of(",}]\n", b);
          if (end == std::string::npos) end = s.size();
          s.replace(b, end - b, kInteresting[below(kInteresting.size())]);
        }
      }
    }
    return s;
  }

  // An interesting value as JSON; the ones that are not JSON (NaN, a lone surrogate) as strings.
  nlohmann::json interesting_value() {
    const std::string& text = kInteresting[below(kInteresting.size())];
    nlohmann::json v = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    return v.is_discarded() ? nlohmann::json(text) : v;
  }

  // One value-level edit of a JSON document: a field anywhere set to an interesting value, or
  // removed.
  nlohmann::json value(nlohmann::json j) {
    nlohmann::json* node = &j;
    for (int depth = 0; depth < 4 && (node->is_object() || node->is_array()) && !node->empty(); ++depth) {
      auto it = node->begin();
      std::advance(it, static_cast<std::ptrdiff_t>(below(node->size())));
      if (below(3) == 0 || !(it->is_object() || it->is_array())) {
        if (node->is_object() && below(5) == 0) node->erase(it.key());
        else *it = interesting_value();
        return j;
      }
      node = &*it;
    }
    return j;
  }

 private:
  std::mt19937_64 rng_;
};

// Runs one case: Error is a named refusal; anything else escaping is the bug this test looks for.
template <class F>
void expect_named_error_or_success(F&& f, const std::string& what, int& refused) {
  try {
    f();
  } catch (const Error&) {
    ++refused;
  } catch (const std::exception& e) {
    FAIL(what << ": escaped as " << typeid(e).name() << ": " << e.what());
  }
}

}  // namespace

TEST_CASE("fuzz: mutated safetensors headers load or give a named error") {
  Scratch s;
  const fs::path file = s.dir / "adapter_model.safetensors";
  const std::string good = read_bytes(test::fixture("tiny_public") / "adapter" / "adapter_model.safetensors");
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, good.data(), 8);
  const std::string header = good.substr(8, header_len), data = good.substr(8 + header_len);
  Mutator m(17);
  int refused = 0;
  const int n = cases(1500);
  for (int i = 0; i < n; ++i) {
    std::string h = header, d = data;
    std::uint64_t len;
    switch (m.below(4)) {
      case 0: h = m.bytes(h); len = h.size(); break;                                  // text edits
      case 1: h = m.value(nlohmann::json::parse(header)).dump(); len = h.size(); break;  // field edits
      case 2: len = m.below(2) ? header_len + m.below(64) - 32 : (std::uint64_t{1} << m.below(64)); break;
      default: d.resize(m.below(d.size())); len = h.size(); break;                    // truncated data
    }
    std::string bytes(reinterpret_cast<const char*>(&len), 8);
    write_bytes(file, bytes + h + d);
    expect_named_error_or_success([&] {
      const auto f = SafetensorsFile::open(file);
      for (const auto& name : f.names()) (void)f.read_f32(name, f.tensor(name).shape);
    }, "safetensors case " + std::to_string(i), refused);
  }
  INFO(refused << " of " << n << " refused");
  CHECK(refused > n / 4);  // the mutations do reach the checks
}

TEST_CASE("fuzz: mutated config.json loads or gives a named error, before any allocation") {
  Scratch s;
  const fs::path model = test::fixture("tiny_public") / "model";
  const SafetensorsModel weights = SafetensorsModel::open(model);
  const std::string good = read_bytes(model / "config.json");
  const fs::path cfg = s.dir / "config.json";
  Mutator m(18);
  int refused = 0;
  const int n = cases(2000);
  for (int i = 0; i < n; ++i) {
    const std::string text = m.below(2) ? m.bytes(good) : m.value(nlohmann::json::parse(good)).dump();
    write_bytes(cfg, text);
    expect_named_error_or_success([&] {
      const ModelConfig c = ModelConfig::from_file(cfg);
      check_config_matches_checkpoint(c, weights, cfg);
    }, "config case " + std::to_string(i) + ": " + text, refused);
  }
  CHECK(refused > n / 4);
}

TEST_CASE("fuzz: mutated tokenizer.json loads or gives a named error") {
  Scratch s;
  const std::string good = read_bytes(test::fixture("generate") / "tiny_tokenizer" / "tokenizer.json");
  const fs::path file = s.dir / "tokenizer.json";
  Mutator m(19);
  int refused = 0;
  const int n = cases(300);
  for (int i = 0; i < n; ++i) {
    const std::string text = m.below(2) ? m.bytes(good) : m.value(nlohmann::json::parse(good)).dump();
    write_bytes(file, text);
    expect_named_error_or_success([&] {
      const auto tok = text::Tokenizer::from_file(file);
      (void)tok.decode(tok.encode("Hello, world! 你好 <|im_start|>user\n12345"));
    }, "tokenizer case " + std::to_string(i), refused);
  }
  CHECK(refused > 0);
}

TEST_CASE("fuzz: mutated dataset lines load or give a named error") {
  Scratch s;
  const auto tok = text::Tokenizer::from_file(test::fixture("generate") / "tiny_tokenizer" / "tokenizer.json");
  const std::vector<fs::path> sources = {test::fixture("datasets") / "messages.jsonl",
                                         test::fixture("datasets") / "query_response.jsonl",
                                         test::fixture("datasets") / "alpaca.json",
                                         test::fixture("tiny_public") / "tokens.jsonl"};
  Mutator m(20);
  int refused = 0;
  const int n = cases(800);
  for (int i = 0; i < n; ++i) {
    const fs::path& src = sources[m.below(sources.size())];
    const fs::path file = s.dir / ("data" + src.extension().string());
    write_bytes(file, m.bytes(read_bytes(src)));
    data::DatasetOptions o;
    o.specs = {file.string() + (m.below(4) == 0 ? "#" + std::to_string(1 + m.below(50)) : "")};
    o.max_length = 1 + static_cast<std::int64_t>(m.below(300));
    o.truncation_strategy = m.below(2) ? "delete" : "left";
    expect_named_error_or_success([&] { (void)data::load_datasets(o, &tok, 512); },
                                  "dataset case " + std::to_string(i) + " from " + src.string(), refused);
  }
  CHECK(refused > n / 10);
}
