// How many bytes a LoRA or QLoRA run's weights and optimizer state take, worked out on the host
// from the shapes alone: the frozen base (bf16, or the seven projections in NF4 with their
// absmax and double-quant scales), the LoRA adapters' fp32 masters and gradients, and AdamW's
// two fp32 moments. Activations, workspaces and the allocator's slack are NOT included: this is
// the floor a "will it fit" answer starts from, not a measured peak (docs/qlora.md).
#pragma once
#include <array>
#include <cstdint>

#include "peft/io/model_config.hpp"
#include "peft/quant/nf4.hpp"

namespace peft {

struct MemoryPlan {
  std::int64_t base_parameters = 0;  // every parameter of the base model
  std::int64_t projection_bytes = 0; // the 7 projections' weights per layer (bf16 or NF4)
  std::int64_t other_base_bytes = 0; // embedding, lm_head, norms, q/k/v biases: bf16 always
  std::int64_t lora_parameters = 0;
  std::int64_t lora_bytes = 0;       // fp32 masters + fp32 gradients
  std::int64_t optimizer_bytes = 0;  // AdamW exp_avg + exp_avg_sq, fp32
  std::int64_t base_bytes() const { return projection_bytes + other_base_bytes; }
  std::int64_t total_bytes() const { return base_bytes() + lora_bytes + optimizer_bytes; }
};

// LoRA of rank r on all seven projections of every layer (ms-swift's all-linear); `nf4`: the
// projections' weights stored as QLoRA stores them.
inline MemoryPlan plan_lora_memory(const ModelConfig& c, std::int64_t rank, bool nf4) {
  const std::int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim,
                     inter = c.intermediate_size;
  struct Shape { std::int64_t out, in; };
  const std::array<Shape, 7> projections = {{{q, h}, {kv, h}, {kv, h}, {h, q}, {inter, h}, {inter, h}, {h, inter}}};
  MemoryPlan p;
  std::int64_t per_layer_projection_bytes = 0, per_layer_lora = 0, per_layer_weights = 0;
  for (const auto& s : projections) {
    per_layer_weights += s.out * s.in;
    per_layer_projection_bytes += nf4 ? nf4::storage_bytes(s.out * s.in) : 2 * s.out * s.in;
    per_layer_lora += rank * (s.in + s.out);
  }
  const std::int64_t per_layer_other = (q + 2 * kv) /*biases*/ + 2 * h /*norms*/;
  const std::int64_t layers = c.num_hidden_layers;
  const std::int64_t embedding = c.vocab_size * h * (c.tie_word_embeddings ? 1 : 2);
  p.base_parameters = layers * (per_layer_weights + per_layer_other) + embedding + h;
  p.projection_bytes = layers * per_layer_projection_bytes;
  p.other_base_bytes = 2 * (layers * per_layer_other + embedding + h);
  p.lora_parameters = layers * per_layer_lora;
  p.lora_bytes = 8 * p.lora_parameters;
  p.optimizer_bytes = 8 * p.lora_parameters;
  return p;
}

}  // namespace peft
