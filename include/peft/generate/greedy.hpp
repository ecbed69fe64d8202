// Greedy decoding by re-running the prompt each step: O(n^2) but exact and short. It serves the
// trainer's before/after identity answers on small models; KV-cache generation with sampling is
// the job of the generation module proper. Ties pick the lowest id, as torch.argmax.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "peft/data/packed_batch.hpp"

namespace peft {

struct GreedyConfig {
  std::int64_t max_new_tokens = 64;
  std::vector<std::int32_t> stop_ids;  // generation ends after emitting one of these
};

// on_token(id) is called for every new token as it is produced (streaming).
template <class Model, class OnToken>
std::vector<std::int32_t> generate_greedy(Model& model, const std::vector<std::int32_t>& prompt,
                                          const GreedyConfig& cfg, OnToken&& on_token) {
  Sample s{prompt, std::vector<std::int32_t>(prompt.size(), kIgnoreIndex)};
  std::vector<std::int32_t> out;
  for (std::int64_t i = 0; i < cfg.max_new_tokens; ++i) {
    const Eigen::Index last = static_cast<Eigen::Index>(s.input_ids.size()) - 1;
    const Matrix logits = model.logits(PackedBatch::of(s), std::span<const Eigen::Index>(&last, 1));
    Eigen::Index best = 0;
    logits.row(0).maxCoeff(&best);
    const auto id = static_cast<std::int32_t>(best);
    out.push_back(id);
    on_token(id);
    if (std::find(cfg.stop_ids.begin(), cfg.stop_ids.end(), id) != cfg.stop_ids.end()) break;
    s.input_ids.push_back(id);
    s.labels.push_back(kIgnoreIndex);
  }
  return out;
}

}  // namespace peft
