// The parameter count HF reports for the model a run trains (PreTrainedModel.num_parameters), from
// the shapes alone. PEFT wraps the base for LoRA: the adapter's A/B (and a modules_to_save copy
// beside its original) are parameters of the wrapped model too, so they add to the base's count;
// a full fine-tune trains the base's own parameters. HF's total_flos (6 x parameters without the
// embedding x tokens, ModuleUtilsMixin.floating_point_ops) and ms-swift's model_parameter_info
// both start here.
#pragma once
#include <cstdint>

#include "peft/io/model_config.hpp"
#include "peft/models/memory_plan.hpp"

namespace peft {

// `exclude_embeddings`: without the input embedding (and a tied lm_head, which is the same tensor),
// as num_parameters(exclude_embeddings=True) counts.
inline std::int64_t trained_model_parameters(const ModelConfig& cfg, std::int64_t trainable, bool lora,
                                             bool exclude_embeddings = false) {
  std::int64_t n = plan_lora_memory(cfg, 0, false).base_parameters + (lora ? trainable : 0);
  if (exclude_embeddings) n -= cfg.vocab_size * cfg.hidden_size;
  return n;
}

// HF Trainer's estimate of a token's training cost (forward and backward): 6 x the non-embedding
// parameters, whichever of them are frozen.
inline double training_flos_per_token(const ModelConfig& cfg, std::int64_t trainable, bool lora) {
  return 6.0 * static_cast<double>(trained_model_parameters(cfg, trainable, lora, true));
}

}  // namespace peft
