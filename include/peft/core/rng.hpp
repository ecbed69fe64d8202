// One seeded generator for everything random in training (LoRA init, dropout masks, data order),
// with its state serialisable so a resumed run draws exactly what the uninterrupted one would.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>

namespace peft {

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 42) : engine_(seed) {}

  // Uniform in [lo, hi). Drawn from 24 random bits so the sequence is the same on every platform
  // (std::uniform_real_distribution is implementation-defined).
  float uniform(float lo, float hi) {
    const float u = static_cast<float>(engine_() >> 40) * (1.0f / 16777216.0f);
    return lo + (hi - lo) * u;
  }
  // Standard normal by Box-Muller on two portable uniforms.
  float normal() {
    const double u1 = (static_cast<double>(engine_() >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(engine_() >> 11) * 0x1.0p-53;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  std::uint64_t next() { return engine_(); }
  // Uniform integer in [0, n), by rejection so it is unbiased and portable.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    std::uint64_t x;
    do { x = engine_(); } while (x >= limit);
    return x % n;
  }
  template <class It>
  void shuffle(It first, It last) {  // Fisher-Yates with our portable below()
    for (auto n = last - first; n > 1; --n) std::swap(first[n - 1], first[below(static_cast<std::uint64_t>(n))]);
  }

  std::string state() const { std::ostringstream s; s << engine_; return s.str(); }
  void set_state(const std::string& st) { std::istringstream s(st); s >> engine_; }

 private:
  std::mt19937_64 engine_;
};

}  // namespace peft
