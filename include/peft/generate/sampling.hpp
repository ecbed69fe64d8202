// Choosing the next token from one row of logits, with HF transformers' semantics so that a
// setting means here what it means in `generate` (and so in ms-swift's `swift infer`):
//   1. repetition penalty on every token of the context, prompt included (RepetitionPenalty-
//      LogitsProcessor: a logit l of a seen token becomes l / p if l > 0, else l * p; once per
//      distinct token);
//   2. greedy (temperature 0, ms-swift's spelling of do_sample=False): the first maximal logit,
//      as torch.argmax; the warpers below are not applied, as HF applies them only when sampling;
//   3. sampling: temperature (logits / t), then top-k (keep logits >= the k-th largest: ties at
//      the boundary survive), then top-p (sort ascending, drop tokens whose cumulative
//      probability is <= 1 - top_p, always keep the most likely), in HF's order; then one draw
//      from the softmax of what is left.
// Removed tokens get -inf, as HF's filter_value. The draw uses our seeded Rng, so a seed
// reproduces a run here; it cannot reproduce torch.multinomial's stream.
// Logits arrive as a float span, so any backend that brings its last-position logits to the host
// shares this code.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/rng.hpp"

namespace peft {

struct SamplingConfig {
  double temperature = 0.0;          // 0: greedy
  std::int64_t top_k = 50;           // 0: off; HF GenerationConfig's default
  double top_p = 1.0;                // 1: off
  double repetition_penalty = 1.0;   // 1: off

  bool greedy() const { return temperature <= 0.0; }

  void validate() const {
    require(std::isfinite(temperature) && temperature >= 0, "--temperature must be >= 0 (got {})", temperature);
    require(top_k >= 0, "--top_k must be >= 0 (got {}; 0 turns it off)", top_k);
    require(top_p > 0 && top_p <= 1, "--top_p must be in (0, 1] (got {})", top_p);
    require(std::isfinite(repetition_penalty) && repetition_penalty > 0,
            "--repetition_penalty must be > 0 (got {})", repetition_penalty);
  }
};

inline constexpr float kFilteredLogit = -std::numeric_limits<float>::infinity();

inline void apply_repetition_penalty(std::span<float> logits, std::span<const std::int32_t> context, double penalty) {
  if (penalty == 1.0) return;
  std::vector<bool> seen(logits.size(), false);
  const auto p = static_cast<float>(penalty);
  for (const std::int32_t id : context) {
    require(id >= 0 && static_cast<std::size_t>(id) < logits.size(), "token id {} is outside the vocabulary (size {})",
            id, logits.size());
    if (seen[static_cast<std::size_t>(id)]) continue;
    seen[static_cast<std::size_t>(id)] = true;
    float& l = logits[static_cast<std::size_t>(id)];
    l = l < 0 ? l * p : l / p;
  }
}

inline void apply_temperature(std::span<float> logits, double temperature) {
  if (temperature == 1.0) return;
  const auto t = static_cast<float>(temperature);
  for (float& l : logits) l /= t;
}

inline void apply_top_k(std::span<float> logits, std::int64_t top_k) {
  if (top_k <= 0 || static_cast<std::size_t>(top_k) >= logits.size()) return;
  std::vector<float> sorted(logits.begin(), logits.end());
  std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<float>());
  const float kth = sorted[static_cast<std::size_t>(top_k - 1)];
  for (float& l : logits)
    if (l < kth) l = kFilteredLogit;
}

// Float arithmetic throughout, as torch's softmax + cumsum on float32 scores, so the boundary
// token is decided as HF decides it.
inline void apply_top_p(std::span<float> logits, double top_p) {
  if (top_p >= 1.0) return;
  std::vector<std::size_t> order(logits.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return logits[a] < logits[b]; });
  const float mx = logits[order.back()];
  float sum = 0.0f;
  for (const float l : logits) sum += std::exp(l - mx);
  const auto cut = static_cast<float>(1.0 - top_p);  // torch compares float32 with the scalar rounded
  float cumulative = 0.0f;
  for (std::size_t i = 0; i + 1 < order.size(); ++i) {  // the most likely token always stays
    float& l = logits[order[i]];
    cumulative += std::exp(l - mx) / sum;
    if (cumulative > cut) break;
    l = kFilteredLogit;
  }
}

// torch.argmax: the first index of the maximum.
inline std::int32_t argmax(std::span<const float> logits) {
  return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// One draw from softmax(logits); `u` uniform in [0, 1).
inline std::int32_t sample_from_logits(std::span<const float> logits, double u) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double total = 0.0;
  for (const float l : logits) total += std::exp(static_cast<double>(l - mx));
  double target = u * total, cumulative = 0.0;
  std::int32_t last_kept = argmax(logits);
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] == kFilteredLogit) continue;
    cumulative += std::exp(static_cast<double>(logits[i] - mx));
    last_kept = static_cast<std::int32_t>(i);
    if (target < cumulative) return last_kept;
  }
  return last_kept;  // u * total rounded up past the last sum
}

class Sampler {
 public:
  Sampler(SamplingConfig cfg, std::uint64_t seed) : cfg_(cfg), rng_(seed) { cfg_.validate(); }

  // HF's logits processors for this config, in place: what `output_scores` would show.
  void process(std::span<float> logits, std::span<const std::int32_t> context) const {
    apply_repetition_penalty(logits, context, cfg_.repetition_penalty);
    if (cfg_.greedy()) return;
    apply_temperature(logits, cfg_.temperature);
    apply_top_k(logits, cfg_.top_k);
    apply_top_p(logits, cfg_.top_p);
  }

  // The next token after `context` (prompt and generated tokens so far); logits are overwritten.
  std::int32_t next(std::span<float> logits, std::span<const std::int32_t> context) {
    process(logits, context);
    if (cfg_.greedy()) return argmax(logits);
    const double u = static_cast<double>(rng_.next() >> 11) * 0x1.0p-53;
    return sample_from_logits(logits, u);
  }

  const SamplingConfig& config() const { return cfg_; }

 private:
  SamplingConfig cfg_;
  Rng rng_;
};

}  // namespace peft
