// What each layout makes trainable, counted against the formula (so a policy that silently trains
// too much or too little fails), and the run-time checks a layout meets against config.json.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include "peft/models/qwen2.hpp"

using namespace peft;

namespace {

ModelConfig shape(bool tied) {
  ModelConfig c;
  c.hidden_size = 16; c.intermediate_size = 24; c.num_hidden_layers = 2; c.num_attention_heads = 4;
  c.num_key_value_heads = 2; c.head_dim = 4; c.vocab_size = 40; c.tie_word_embeddings = tied;
  return c;
}

LoraConfig lora(int r, std::vector<std::string> targets = {"all-linear"}) {
  LoraConfig l;
  l.r = r;
  l.target_modules = std::move(targets);
  return l;
}

template <class Model>
std::int64_t trainable(const ModelConfig& c, const LoraConfig& l) {
  RandomWeights w(1);
  auto m = Model::from_weights(c, w, l, 1);
  std::int64_t n = 0;
  for (const auto& p : m->trainable_parameters()) n += p.value->size();
  return n;
}

// r * (in + out) for each projection of one layer, by name.
std::int64_t lora_params(const ModelConfig& c, int r, bool attention, bool mlp) {
  const std::int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim,
                     i = c.intermediate_size;
  std::int64_t per_layer = 0;
  if (attention) per_layer += r * (h + q) + 2 * r * (h + kv) + r * (q + h);
  if (mlp) per_layer += 2 * r * (h + i) + r * (i + h);
  return per_layer * c.num_hidden_layers;
}

}  // namespace

TEST_CASE("LoRA layouts train exactly the adapters the formula counts") {
  const ModelConfig c = shape(false);
  CHECK(trainable<Qwen2<Lora<8>>>(c, lora(8)) == lora_params(c, 8, true, true));
  CHECK(trainable<Qwen2<Lora<>>>(c, lora(3)) == lora_params(c, 3, true, true));
  CHECK(trainable<Qwen2<AttentionOnly<Lora<8>>>>(c, lora(8)) == lora_params(c, 8, true, false));
  // --target_modules narrows a Lora layout at run time: only q_proj and v_proj carry adapters.
  const std::int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  CHECK(trainable<Qwen2<Lora<8>>>(c, lora(8, {"q_proj", "v_proj"})) == 8 * ((h + q) + (h + kv)) * c.num_hidden_layers);
}

TEST_CASE("full fine-tuning trains every parameter of the checkpoint") {
  for (const bool tied : {false, true}) {
    const ModelConfig c = shape(tied);
    const std::int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim,
                       i = c.intermediate_size, v = c.vocab_size;
    const std::int64_t layer = (h * q + q) + 2 * (h * kv + kv) + q * h + 3 * h * i + 2 * h;
    const std::int64_t expected = v * h + layer * c.num_hidden_layers + h + (tied ? 0 : v * h);
    CHECK(trainable<Qwen2<Full>>(c, lora(8)) == expected);
  }
}

TEST_CASE("a Full lm_head over tied embeddings must train the embedding too") {
  using FullHeadFrozenEmbedding = Projections<Lora<8>, Lora<8>, Lora<8>, Lora<8>, Lora<8>, Lora<8>, Lora<8>, Full>;
  using FullHeadTrainedEmbedding = Projections<Lora<8>, Lora<8>, Lora<8>, Lora<8>, Lora<8>, Lora<8>, Lora<8>, Full, true>;
  CHECK_THROWS_WITH(trainable<Qwen2<FullHeadFrozenEmbedding>>(shape(true), lora(8)),
                    Catch::Contains("tie_word_embeddings=true") && Catch::Contains("lm_head is the embedding"));
  const ModelConfig untied = shape(false);
  CHECK(trainable<Qwen2<FullHeadFrozenEmbedding>>(untied, lora(8)) ==
        lora_params(untied, 8, true, true) + untied.vocab_size * untied.hidden_size);
  CHECK(trainable<Qwen2<FullHeadTrainedEmbedding>>(shape(true), lora(8)) ==
        lora_params(untied, 8, true, true) + untied.vocab_size * untied.hidden_size);
}
