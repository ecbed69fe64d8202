// Test support: the reference fixtures under tests/fixtures/<name>/ (made by
// tools/reference/make_fixtures.py with HF transformers + PEFT) and the comparisons the parity
// tests share. Tolerances are stated where they are used.
#pragma once
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft/data/sample.hpp"
#include "peft/io/json_file.hpp"
#include "peft/io/safetensors.hpp"

namespace peft::test {

inline std::filesystem::path fixture(const std::string& name) { return std::filesystem::path(PEFT_FIXTURES) / name; }

// The fixture's pre-tokenized rows ({"input_ids", "labels"} per line).
inline std::vector<Sample> fixture_samples(const std::string& name) {
  std::vector<Sample> out;
  std::ifstream in(fixture(name) / "tokens.jsonl");
  REQUIRE(in);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    out.push_back({j["input_ids"].get<std::vector<std::int32_t>>(), j["labels"].get<std::vector<std::int32_t>>()});
  }
  return out;
}

inline nlohmann::json fixture_golden(const std::string& name) { return read_json_file(fixture(name) / "golden.json"); }

// |a - b| <= rel * |b| (+ a tiny absolute floor for values near zero).
inline void check_close(double a, double b, double rel, const std::string& what) {
  INFO(what << ": got " << a << " expected " << b);
  CHECK(std::abs(a - b) <= rel * std::abs(b) + 1e-7);
}

// Every tensor of `expected` is in `got`, and max|got - expected| <= rel * max|expected|.
inline void check_same_tensors(const std::filesystem::path& got_file, const std::filesystem::path& expected_file,
                               double rel) {
  const auto got = SafetensorsFile::open(got_file);
  const auto want = SafetensorsFile::open(expected_file);
  REQUIRE(got.names() == want.names());
  for (const auto& name : want.names()) {
    const auto& shape = want.tensor(name).shape;
    const auto a = got.read_f32(name, shape);
    const auto b = want.read_f32(name, shape);
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
      scale = std::max(scale, static_cast<double>(std::abs(b[i])));
    }
    INFO(name << ": max abs diff " << diff << " vs max abs " << scale);
    CHECK(diff <= rel * scale);
  }
}

}  // namespace peft::test
