// Greedy decoding in one call, for callers that want no more than "the model's answer": the
// trainer's before/after identity answers. It is the KV-cache Generator with temperature 0 and no
// repetition penalty; ties pick the lowest id, as torch.argmax.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "peft/generate/generator.hpp"

namespace peft {

struct GreedyConfig {
  std::int64_t max_new_tokens = 64;
  std::vector<std::int32_t> stop_ids;  // generation ends after emitting one of these
};

// on_token(id) is called for every new token as it is produced (streaming); the result holds the
// new tokens, the stop token included.
template <class Model, class OnToken>
std::vector<std::int32_t> generate_greedy(Model& model, const std::vector<std::int32_t>& prompt,
                                          const GreedyConfig& cfg, OnToken&& on_token) {
  GenerationConfig g;
  g.max_new_tokens = cfg.max_new_tokens;
  g.sampling.temperature = 0.0;
  g.sampling.repetition_penalty = 1.0;
  g.stop_ids = cfg.stop_ids;
  // The cache holds the prompt and the answer, no more (the trainer asks between steps, beside
  // the training's memory).
  Generator<Model> generator(model, static_cast<std::int64_t>(prompt.size()) + cfg.max_new_tokens);
  return generator.generate(prompt, g, on_token).tokens;
}

}  // namespace peft
