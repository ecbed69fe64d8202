// What every Qwen2 model specialization (the CPU one in models/qwen2.hpp, the CUDA one in
// models/cuda/qwen2.cuh) shares beyond its layers: the HF names of the model-level tensors and
// the checks whose error texts a user sees the same on both backends. Written once here so a
// layout that is refused, or a checkpoint that is incomplete, reads the same wherever it runs.
#pragma once
#include <string_view>

#include "peft/core/error.hpp"
#include "peft/io/model_config.hpp"
#include "peft/layers/weight_source.hpp"

namespace peft::qwen2 {

inline constexpr std::string_view kEmbedTokens = "model.embed_tokens.weight";
inline constexpr std::string_view kFinalNormModule = "model.norm";
inline constexpr std::string_view kFinalNorm = "model.norm.weight";
inline constexpr std::string_view kLmHead = "lm_head.weight";

// LastLayers<N, Tail, Rest>: N can only be checked against config.json at run time.
inline void check_tail_layers(int tail_layers, const ModelConfig& cfg) {
  require(tail_layers <= cfg.num_hidden_layers,
          "LastLayers<{}, Tail, Rest>: the last {} decoder layers should use Tail, but config.json has "
          "num_hidden_layers = {}", tail_layers, tail_layers, cfg.num_hidden_layers);
}

// Tied: lm_head IS the embedding, so it trains exactly when the embedding does; a layout that asks
// for one without the other would silently train nothing there.
inline void check_tied_lm_head(const ModelConfig& cfg, bool trains_lm_head, bool trains_embedding) {
  require(!(cfg.tie_word_embeddings && trains_lm_head && !trains_embedding),
          "config.json has tie_word_embeddings=true, so lm_head is the embedding matrix: a layout with a Full "
          "lm_head must also train the embedding (Projections<..., Full, /*TrainEmbedding=*/true>)");
}

// An untied model needs its own lm_head in the checkpoint.
inline void require_lm_head(const WeightSource& src) {
  require(src.contains(std::string(kLmHead)),
          "lm_head.weight is missing from the checkpoint and config.json says tie_word_embeddings=false");
}

}  // namespace peft::qwen2
