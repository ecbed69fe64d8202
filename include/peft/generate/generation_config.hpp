// What one generate call does (GenerationConfig), and where its values come from when a user does
// not say: the model folder's generation_config.json (Qwen2.5-Instruct ships do_sample true,
// temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.05, eos [<|im_end|>, <|endoftext|>]),
// else HF GenerationConfig's defaults (do_sample false, top_k 50, top_p 1, penalty 1).
// The resolution is ms-swift's: a flag wins, a missing flag takes the file's value, and
// temperature 0 (or do_sample false with no --temperature) means greedy.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "peft/generate/sampling.hpp"
#include "peft/io/generation_defaults.hpp"

namespace peft {

struct GenerationConfig {
  std::int64_t max_new_tokens = 64;
  SamplingConfig sampling;
  std::uint64_t seed = 42;
  std::vector<std::int32_t> stop_ids;  // generation ends after emitting one of these
};

// What the user set explicitly (the chat program's flags).
struct SamplingOverrides {
  std::optional<double> temperature, top_p, repetition_penalty;
  std::optional<std::int64_t> top_k;
};

inline SamplingConfig resolve_sampling(const GenerationDefaults& d, const SamplingOverrides& o) {
  SamplingConfig s;
  s.temperature = o.temperature ? *o.temperature : (d.do_sample.value_or(false) ? d.temperature.value_or(1.0) : 0.0);
  s.top_k = o.top_k.value_or(d.top_k.value_or(s.top_k));
  s.top_p = o.top_p.value_or(d.top_p.value_or(s.top_p));
  s.repetition_penalty = o.repetition_penalty.value_or(d.repetition_penalty.value_or(s.repetition_penalty));
  s.validate();
  return s;
}

}  // namespace peft
