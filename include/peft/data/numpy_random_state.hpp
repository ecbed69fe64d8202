// numpy's legacy np.random.RandomState(seed), the draws ms-swift's dataset sampling makes, bit
// for bit: MT19937 seeded by init_genrand (std::mt19937's own seeding), integers in [0, max] by
// numpy's masked rejection (random_interval / buffered_bounded_masked_uint32), permutation as
// numpy's Fisher-Yates from the end. With it `--dataset file#N` picks the same rows as ms-swift
// with the same --seed. It is separate from peft::Rng on purpose: that one draws training
// randomness in its own portable way and is not meant to match numpy.
#pragma once
#include <cstdint>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

namespace peft::data {

class NumpyRandomState {
 public:
  explicit NumpyRandomState(std::uint32_t seed) : engine_(seed) {}

  std::uint32_t next_uint32() { return static_cast<std::uint32_t>(engine_()); }

  // Uniform in [0, max]: smallest all-ones mask >= max, redraw while the masked value > max.
  std::uint64_t interval(std::uint64_t max) {
    if (max == 0) return 0;
    std::uint64_t mask = max;
    for (int shift = 1; shift <= 32; shift *= 2) mask |= mask >> shift;
    std::uint64_t value;
    if (max <= 0xFFFFFFFFull) {
      do { value = next_uint32() & mask; } while (value > max);
    } else {
      do {
        const std::uint64_t hi = next_uint32();
        value = ((hi << 32) | next_uint32()) & mask;
      } while (value > max);
    }
    return value;
  }

  // RandomState.randint(low, high) for the default int64 dtype: [low, high).
  std::int64_t randint(std::int64_t low, std::int64_t high) {
    return low + static_cast<std::int64_t>(interval(static_cast<std::uint64_t>(high - 1 - low)));
  }

  // RandomState.permutation(n).
  std::vector<std::int64_t> permutation(std::int64_t n) {
    std::vector<std::int64_t> p(static_cast<std::size_t>(n));
    std::iota(p.begin(), p.end(), std::int64_t{0});
    for (std::int64_t i = n - 1; i > 0; --i) {
      std::swap(p[static_cast<std::size_t>(i)], p[interval(static_cast<std::uint64_t>(i))]);
    }
    return p;
  }

  // ms-swift's get_seed(random_state): a fresh seed for a derived shuffle.
  std::uint32_t derive_seed() { return static_cast<std::uint32_t>(randint(0, 2147483647)); }

 private:
  std::mt19937 engine_;
};

}  // namespace peft::data
