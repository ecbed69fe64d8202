// Prefill + incremental decode over a KV cache: the prompt runs once, then each new token costs
// one single-row forward pass, O(n) instead of re-running the whole sequence.
//
// A Generator owns one cache for one conversation and remembers the ids in it. A new prompt that
// starts with those ids (the next turn of a chat: the whole history, re-rendered) only prefills
// the part after the shared prefix. The last generated token is not in the cache (nothing has
// asked for the logits after it), so the next prompt feeds it with its own tokens.
//
// The model needs two calls, which every backend's Qwen2 offers:
//   auto cache = model.make_kv_cache(max_context);          // length(), truncate(n)
//   Matrix logits = model.forward_cached(ids, cache);       // last position's logits [1, vocab]
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "peft/core/tensor.hpp"
#include "peft/generate/generation_config.hpp"
#include "peft/generate/sampling.hpp"

namespace peft {

enum class FinishReason { Stop, Length };

struct Generation {
  std::vector<std::int32_t> tokens;  // new tokens, the stop token (if any) included
  FinishReason finish = FinishReason::Length;
  std::int64_t prompt_tokens = 0;
  std::int64_t reused_tokens = 0;    // prompt tokens found in the cache, not run again
  double prefill_seconds = 0, decode_seconds = 0;

  // Decode speed: tokens after the first (which the prefill produced) per second of decode.
  double decode_tokens_per_second() const {
    return decode_seconds > 0 && tokens.size() > 1 ? static_cast<double>(tokens.size() - 1) / decode_seconds : 0.0;
  }
};

template <class Model>
class Generator {
 public:
  using Cache = decltype(std::declval<Model&>().make_kv_cache(std::int64_t{0}));

  // max_context: the most tokens the conversation will hold (0: the model's default). A CUDA cache
  // is allocated at that size up front, so a caller that knows its prompt and answer lengths asks
  // for just those: a 32,768-token cache on a 7B model is 1.9 GB the training step may not have.
  explicit Generator(Model& model, std::int64_t max_context = 0)
      : model_(&model), cache_(model.make_kv_cache(max_context)) {}

  // on_token(id) is called for every new token as soon as it is chosen (streaming).
  template <class OnToken>
  Generation generate(std::span<const std::int32_t> prompt, const GenerationConfig& cfg, OnToken&& on_token) {
    using clock = std::chrono::steady_clock;
    require(!prompt.empty(), "generate: the prompt is empty");
    require(cfg.max_new_tokens >= 0, "max_new_tokens must be >= 0 (got {})", cfg.max_new_tokens);
    Generation out;
    out.prompt_tokens = static_cast<std::int64_t>(prompt.size());
    if (cfg.max_new_tokens == 0) return out;

    // Keep the cached prefix the prompt shares, but run at least one token to get logits.
    const auto shared = std::mismatch(cached_ids_.begin(), cached_ids_.end(), prompt.begin(), prompt.end()).first -
                        cached_ids_.begin();
    const auto keep = std::min<std::ptrdiff_t>(shared, static_cast<std::ptrdiff_t>(prompt.size()) - 1);
    cache_.truncate(keep);
    cached_ids_.resize(static_cast<std::size_t>(keep));
    out.reused_tokens = keep;

    Sampler sampler(cfg.sampling, cfg.seed);
    std::vector<std::int32_t> context(prompt.begin(), prompt.end());  // what the repetition penalty sees
    const auto t0 = clock::now();
    Matrix logits = run(prompt.subspan(static_cast<std::size_t>(keep)));
    const auto t1 = clock::now();
    out.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    for (std::int64_t i = 0; i < cfg.max_new_tokens; ++i) {
      const std::int32_t id = sampler.next(std::span<float>(logits.data(), static_cast<std::size_t>(logits.size())),
                                           context);
      out.tokens.push_back(id);
      context.push_back(id);
      on_token(id);
      if (std::find(cfg.stop_ids.begin(), cfg.stop_ids.end(), id) != cfg.stop_ids.end()) {
        out.finish = FinishReason::Stop;
        break;
      }
      if (i + 1 < cfg.max_new_tokens) logits = run(std::span<const std::int32_t>(&id, 1));
    }
    out.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
    return out;
  }

  // Forget the conversation (the cache's storage is kept for the next one).
  void reset() {
    cache_.truncate(0);
    cached_ids_.clear();
  }
  const std::vector<std::int32_t>& cached_ids() const { return cached_ids_; }

 private:
  Matrix run(std::span<const std::int32_t> ids) {
    Matrix logits = model_->forward_cached(ids, cache_);
    cached_ids_.insert(cached_ids_.end(), ids.begin(), ids.end());
    return logits;
  }

  Model* model_;
  Cache cache_;
  std::vector<std::int32_t> cached_ids_;
};

}  // namespace peft
