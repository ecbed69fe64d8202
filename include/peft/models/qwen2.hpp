// The Qwen2/Qwen2.5 causal LM assembled from layers, as one type:
//   Qwen2<Layout, Precision, Device>
// Layout says what trains (a LinearPolicy for all seven projections: Lora<8>, Full, Frozen; a
// Projections<...> bundle; or a layer-wise LastLayers<N, Tail, Rest>, policies/layer_layout.hpp,
// whose decoder layers are held in two vectors and visited in layer order by for_each_layer),
// Precision how numbers are stored (Fp32, Bf16Mixed), Device where it
// runs (Cpu here; the Cuda backend specializes the same template in models/cuda/qwen2.cuh).
// What both specializations share (tensor names, checks, error texts): models/qwen2_contract.hpp.
// Shapes are run-time values from config.json; the layout is compile-time.
//
// Training entry point: forward_backward() on a PackedBatch returns the summed token cross
// entropy and accumulates gradients of d(sum CE * grad_scale); the trainer passes
// grad_scale = 1 / (label tokens of the whole optimizer step), HF Trainer's normalisation.
// Generation entry point: forward_cached() runs new tokens against a KvCache (prefill and decode).
#pragma once
#include <algorithm>
#include <filesystem>
#include <memory>
#include <type_traits>
#include <vector>

#include "peft/kernels/cpu/cross_entropy.hpp"
#include "peft/kernels/cpu/rope.hpp"
#include "peft/data/packed_batch.hpp"
#include "peft/layers/kv_cache.hpp"
#include "peft/io/checkpoint_shapes.hpp"
#include "peft/io/model_config.hpp"
#include "peft/layers/decoder_layer.hpp"
#include "peft/layers/embedding.hpp"
#include "peft/io/lora_config.hpp"
#include "peft/layers/weight_source.hpp"
#include "peft/models/qwen2_contract.hpp"
#include "peft/policies/device.hpp"
#include "peft/policies/layer_layout.hpp"

namespace peft {

struct LossSum {
  double sum = 0.0;        // summed token cross entropy
  std::int64_t tokens = 0; // label tokens it was summed over
  std::int64_t correct = -1;  // label tokens the logits' argmax predicts (ms-swift's token_acc); -1: not counted
  double mean() const { return tokens ? sum / static_cast<double>(tokens) : 0.0; }
};

template <class Layout, PrecisionPolicy P = Fp32, DevicePolicy D = Cpu>
class Qwen2Model;

// The spelling users write: Qwen2<Lora<8>, Bf16Mixed, Cpu>.
template <class Layout, PrecisionPolicy P = Fp32, DevicePolicy D = Cpu>
  requires ModelLayout<layout_of_t<Layout>>
using Qwen2 = Qwen2Model<layout_of_t<Layout>, P, D>;

template <class L, PrecisionPolicy P>
class Qwen2Model<L, P, Cpu> {
  static_assert(ModelLayout<L>,
                "Qwen2<Layout, ...>: Layout must be a linear policy (Lora<r>, Full, Frozen), a "
                "Projections<q, k, v, o, gate, up, down, lm_head, train_embedding, train_norms> bundle or a "
                "LastLayers<N, Tail, Rest> layer-wise layout");
  // The first layers' layout, the last kTailLayers' layout, and where whole-model settings come from.
  using Rest = typename layer_split<L>::rest;
  using Tail = typename layer_split<L>::tail;
  using W = typename layer_split<L>::whole;
  static constexpr int kTailLayers = layer_split<L>::tail_layers;
  static_assert(!W::lm_head::has_adapter, "Qwen2: a LoRA adapter on lm_head is not supported; use Frozen or Full");

 public:
  using Layout = L;
  using Precision = P;
  using Device = Cpu;
  static constexpr bool trains_lm_head = W::lm_head::trains_base;

  Qwen2Model(const ModelConfig& cfg, const LoraConfig& lora) : cfg_(cfg), lora_(lora),
      embed_(cfg.vocab_size, cfg.hidden_size),
      final_norm_(std::string(qwen2::kFinalNormModule), cfg.hidden_size, cfg.rms_norm_eps) {
    cfg_.validate("model config");
    if (uses_lora()) lora_.validate();
    qwen2::check_tail_layers(kTailLayers, cfg);
    const int first_tail = cfg.num_hidden_layers - kTailLayers;
    rest_.reserve(static_cast<std::size_t>(first_tail));
    tail_.reserve(static_cast<std::size_t>(kTailLayers));
    for (int i = 0; i < first_tail; ++i) rest_.emplace_back(i, cfg_, lora_);
    for (int i = first_tail; i < cfg.num_hidden_layers; ++i) tail_.emplace_back(i, cfg_, lora_);
    qwen2::check_tied_lm_head(cfg, trains_lm_head, W::train_embedding);
    if (!cfg.tie_word_embeddings) lm_w_.resize(cfg.vocab_size, cfg.hidden_size);
  }

  // Base weights from a folder with config.json and *.safetensors (single or sharded).
  static std::unique_ptr<Qwen2Model> from_pretrained(const std::filesystem::path& dir, const LoraConfig& lora,
                                                     std::uint64_t adapter_seed) {
    SafetensorsWeights src(dir);
    const ModelConfig cfg = ModelConfig::from_file(dir / "config.json");
    check_config_matches_checkpoint(cfg, src.model(), dir / "config.json");  // before allocating
    auto m = std::make_unique<Qwen2Model>(cfg, lora);
    m->load_weights(src);
    m->init_adapters(adapter_seed);
    return m;
  }
  static std::unique_ptr<Qwen2Model> from_weights(const ModelConfig& cfg, WeightSource& src, const LoraConfig& lora,
                                                  std::uint64_t adapter_seed) {
    auto m = std::make_unique<Qwen2Model>(cfg, lora);
    m->load_weights(src);
    m->init_adapters(adapter_seed);
    return m;
  }

  void load_weights(WeightSource& src) {
    embed_.load(src);
    for_each_layer([&](auto& layer, std::size_t) {
      layer.for_each_linear([&](auto& lin) { lin.load(src); });
      layer.for_each_norm([&](auto& n) { n.load(src); });
    });
    final_norm_.load(src);
    if (!cfg_.tie_word_embeddings) {
      qwen2::require_lm_head(src);
      src.read(std::string(qwen2::kLmHead), lm_w_);
      if constexpr (trains_lm_head) lm_dw_.setZero(lm_w_.rows(), lm_w_.cols()); else P::store(lm_w_);
    }
  }

  // PEFT's initialisation of every LoRA adapter, in module order, from one seed.
  void init_adapters(std::uint64_t seed) {
    Rng rng(seed);
    for_each_linear([&](auto& lin) {
      if constexpr (requires { lin.init_adapter(rng); }) lin.init_adapter(rng);
    });
  }

  // f(layer, index) for every decoder layer in HF order (the rest, then the tail), and in reverse
  // for the backward; the two layer types are distinct only for a layer-wise layout.
  template <class F> void for_each_layer(F&& f) {
    std::size_t i = 0;
    for (auto& layer : rest_) f(layer, i++);
    for (auto& layer : tail_) f(layer, i++);
  }
  template <class F> void for_each_layer_reverse(F&& f) {
    std::size_t i = rest_.size() + tail_.size();
    for (auto it = tail_.rbegin(); it != tail_.rend(); ++it) f(*it, --i);
    for (auto it = rest_.rbegin(); it != rest_.rend(); ++it) f(*it, --i);
  }

  // f(linear) for every projection of every layer, in HF module order.
  template <class F> void for_each_linear(F&& f) {
    for_each_layer([&](auto& layer, std::size_t) { layer.for_each_linear(f); });
  }

  ParameterList trainable_parameters() {
    ParameterList out;
    embed_.parameters(out);
    for_each_layer([&](auto& layer, std::size_t) {
      layer.for_each_norm([&](auto& n) { n.parameters(out); });
      layer.for_each_linear([&](auto& lin) { lin.parameters(out); });
    });
    final_norm_.parameters(out);
    if constexpr (trains_lm_head)
      if (!cfg_.tie_word_embeddings) out.push_back({std::string(qwen2::kLmHead), &lm_w_, &lm_dw_});
    return out;
  }

  void zero_grad() {
    embed_.zero_grad();
    for_each_layer([](auto& layer, std::size_t) {
      layer.for_each_linear([](auto& lin) { lin.zero_grad(); });
      layer.for_each_norm([](auto& n) { n.zero_grad(); });
    });
    final_norm_.zero_grad();
    if constexpr (trains_lm_head) lm_dw_.setZero();
  }

  // Sum of token CE over the batch's label tokens; with grad_scale != 0 also the backward pass.
  LossSum forward_backward(const PackedBatch& batch, float grad_scale, Rng* dropout) {
    ForwardContext ctx = context(batch, dropout);
    const Matrix y = final_hidden(batch, ctx);

    std::vector<Eigen::Index> rows;
    std::vector<std::int32_t> targets;
    for (std::size_t t = 0; t < batch.targets.size(); ++t)
      if (batch.targets[t] != kIgnoreIndex) {
        require(batch.targets[t] >= 0 && batch.targets[t] < cfg_.vocab_size,
                "label {} at position {} is outside the vocabulary (size {})", batch.targets[t], t, cfg_.vocab_size);
        rows.push_back(static_cast<Eigen::Index>(t));
        targets.push_back(batch.targets[t]);
      }
    const Matrix h_sel = y(rows, Eigen::all);
    Matrix dh_sel;
    const bool backward = grad_scale != 0.0f;
    const auto ce = cpu::cross_entropy(h_sel, lm_weight(), targets, grad_scale, backward ? &dh_sel : nullptr,
                                       backward ? lm_grad() : nullptr, [](Matrix& m) { P::store(m); });
    if (!backward) return {ce.loss_sum, ce.tokens, ce.correct};

    Matrix dx = Matrix::Zero(y.rows(), y.cols()), dy = Matrix::Zero(y.rows(), y.cols());
    dy(rows, Eigen::all) = dh_sel;
    final_norm_.backward(dy, dx);
    for_each_layer_reverse([&](auto& layer, std::size_t) {
      layer.backward(dx, ctx, dy);
      std::swap(dx, dy);
    });
    embed_.backward(batch.input_ids, dx);
    return {ce.loss_sum, ce.tokens, ce.correct};
  }

  LossSum evaluate(const PackedBatch& batch) { return forward_backward(batch, 0.0f, nullptr); }

  // Logits [rows, vocab] at the given positions of the batch (all positions when rows is empty).
  Matrix logits(const PackedBatch& batch, std::span<const Eigen::Index> rows = {}) {
    ForwardContext ctx = context(batch, nullptr);
    const Matrix h = final_hidden(batch, ctx);
    Matrix out = rows.empty() ? Matrix(h * lm_weight().transpose())
                              : Matrix(h(std::vector<Eigen::Index>(rows.begin(), rows.end()), Eigen::all) *
                                       lm_weight().transpose());
    P::store(out);
    return out;
  }

  // ----- generation (KV cache) -----
  // The model-side half of peft/generate/: a backend's model offers make_kv_cache() and
  // forward_cached(); the generator, the sampling and the chat program use nothing else.
  // max_context > 0 reserves that many tokens up front, at most the model's context (a hint: the
  // CPU cache grows past it).
  KvCache make_kv_cache(std::int64_t max_context = 0) const {
    KvCache cache(cfg_.num_hidden_layers, cfg_.num_key_value_heads * cfg_.head_dim);
    if (max_context > 0) cache.reserve(std::min<std::int64_t>(max_context, cfg_.max_position_embeddings));
    return cache;
  }

  // Runs `ids`, the next tokens of the sequence whose first cache.length() tokens are cached, at
  // positions cache.length()..; appends them to the cache and returns the logits of the last
  // position [1, vocab] (of every new position [ids, vocab] with all_rows).
  Matrix forward_cached(std::span<const std::int32_t> ids, KvCache& cache, bool all_rows = false) {
    require(!ids.empty(), "forward_cached: no tokens to run");
    const std::int64_t past = cache.length();
    std::vector<std::int32_t> positions(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i)
      positions[i] = static_cast<std::int32_t>(past) + static_cast<std::int32_t>(i);
    ForwardContext ctx = rope_context({}, positions, nullptr);
    const Matrix h = final_hidden(ids, [&](auto& layer, std::size_t i, const Matrix& x, Matrix& y) {
      layer.forward_cached(x, ctx, cache.layer(i), past, y);
    });
    cache.advance(static_cast<std::int64_t>(ids.size()));
    Matrix out = all_rows ? Matrix(h * lm_weight().transpose()) : Matrix(h.bottomRows(1) * lm_weight().transpose());
    P::store(out);
    return out;
  }

  const ModelConfig& config() const { return cfg_; }
  const LoraConfig& lora_config() const { return lora_; }
  static constexpr bool uses_lora() { return detail::any_adapter<Rest>() || detail::any_adapter<Tail>(); }
  Embedding<P, W::train_embedding>& embedding() { return embed_; }
  const Matrix& lm_weight() const { return cfg_.tie_word_embeddings ? embed_.weight() : lm_w_; }

 private:
  // Embedding, decoder layers and the final norm: [tokens, hidden].
  Matrix final_hidden(const PackedBatch& batch, const ForwardContext& ctx) {
    return final_hidden(batch.input_ids, [&](auto& layer, std::size_t, const Matrix& x, Matrix& y) {
      layer.forward(x, ctx, y);
    });
  }
  template <class LayerForward>
  Matrix final_hidden(std::span<const std::int32_t> ids, LayerForward&& layer_forward) {
    Matrix x, y;
    embed_.forward(ids, x);
    for_each_layer([&](auto& layer, std::size_t i) {
      layer_forward(layer, i, x, y);
      std::swap(x, y);
    });
    final_norm_.forward(x, y);
    return y;
  }

  ForwardContext context(const PackedBatch& batch, Rng* dropout) const {
    return rope_context(batch.cu_seqlens, batch.positions, dropout);
  }
  ForwardContext rope_context(std::span<const std::int64_t> cu_seqlens, std::span<const std::int32_t> positions,
                              Rng* dropout) const {
    ForwardContext ctx{cu_seqlens, cpu::rope_table(positions, static_cast<int>(cfg_.head_dim), cfg_.rope_theta),
                       dropout};
    P::store(ctx.rope.cos);
    P::store(ctx.rope.sin);
    return ctx;
  }
  Matrix* lm_grad() {
    if (cfg_.tie_word_embeddings) return embed_.grad();
    if constexpr (trains_lm_head) return &lm_dw_;
    return nullptr;
  }

  ModelConfig cfg_;
  LoraConfig lora_;
  Embedding<P, W::train_embedding> embed_;
  std::vector<DecoderLayer<Rest, P>> rest_;  // layers [0, L - kTailLayers)
  std::vector<DecoderLayer<Tail, P>> tail_;  // the last kTailLayers (empty for a uniform layout)
  RmsNorm<P, W::train_norms> final_norm_;
  Matrix lm_w_, lm_dw_;
};

}  // namespace peft
