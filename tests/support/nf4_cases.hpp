// The weights that NF4 dequantisation is checked on, shared by the CPU test of the kernel's decode
// routine (tests/test_nf4_decode.cpp) and the GPU test (tests/cuda/test_nf4_dequant.cu), so both
// cover the same paths: odd element counts (a padded last nibble, a short tail chunk), several
// double-quant groups, all-zero, outlier, constant and one-signed blocks, a whole all-zero group,
// values small enough that map[code] * scale is subnormal, and a tensor whose absmax values are
// all equal (every double-quant scale 0). Plain C++, no test framework.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "peft/core/dtype.hpp"

namespace peft::test {

struct Nf4Case {
  std::string name;
  std::int64_t rows = 0, cols = 0;
  std::vector<float> weight;  // [rows, cols] row-major, bf16 values
};

// bf16-valued normals, as a bf16 checkpoint holds them.
inline std::vector<float> nf4_normal(std::mt19937& rng, std::int64_t n, float stddev) {
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = round_to_bf16(d(rng));
  return v;
}

inline std::vector<Nf4Case> nf4_cases(std::mt19937& rng) {
  std::vector<Nf4Case> cases;
  auto add = [&](std::string name, std::int64_t rows, std::int64_t cols, float stddev) -> std::vector<float>& {
    cases.push_back({std::move(name), rows, cols, nf4_normal(rng, rows * cols, stddev)});
    return cases.back().weight;
  };
  add("one element", 1, 1, 0.02f);
  add("3x5 (odd count, one short block)", 3, 5, 0.02f);
  add("33x67 (odd count, 35 blocks)", 33, 67, 0.02f);
  add("300x256 (1200 blocks, 5 double-quant groups)", 300, 256, 0.02f);
  {
    auto& w = add("128x4096 (zero, outlier, constant, one-signed blocks; a zero group)", 128, 4096, 0.02f);
    auto block = [&](std::int64_t b) { return w.begin() + b * 64; };
    std::fill(block(3), block(4), 0.0f);                     // all-zero block
    *(block(10) + 17) = 40.0f;                               // an outlier: the rest of the block codes near 0
    std::fill(block(11), block(12), round_to_bf16(0.37f));   // constant: every element the absmax
    for (auto it = block(12); it != block(13); ++it) *it = -std::abs(*it);  // negative only
    for (auto it = block(13); it != block(14); ++it) *it = round_to_bf16(*it * 1e-30f);  // tiny block
    std::fill(block(256), block(512), 0.0f);                 // a whole double-quant group of zeros
  }
  {
    auto& w = add("16x200 scaled by 1e-36 (subnormal map[code] * scale)", 16, 200, 1.0f);
    for (auto& x : w) x = round_to_bf16(x * 1e-36f);
  }
  {
    auto& w = add("8x96 of +-0.25 (all absmax equal: scale 0)", 8, 96, 1.0f);
    for (auto& x : w) x = x < 0 ? -0.25f : 0.25f;
  }
  return cases;
}

}  // namespace peft::test
