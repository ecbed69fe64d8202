// Qwen2Model<Layout, Bf16Mixed | Nf4Base, CudaDevice<Activations>>: the CPU model's contract
// (models/qwen2.hpp, shared names and checks in models/qwen2_contract.hpp) on one GPU, for every
// layout the CPU model takes: each projection a cuda::Linear<policy>
// (layers/cuda/: Frozen, Lora<r>, Full), a Projections<...> bundle or a layer-wise
// LastLayers<N, Tail, Rest> (two layer vectors, visited in HF order as on the CPU); embedding,
// norms and lm_head frozen or, under FullModel (--train_type full), trained with fp32 masters
// (layers/cuda/model_weight.cuh); tied or untied embeddings (tied: both gradients into one weight).
// Nf4Base (QLoRA): frozen projections in NF4 (layers/cuda/nf4_base.cuh), each dequantised into one
// planned bf16 weight scratch right before its GEMM (at 1-8 tokens, decode, multiplied as read by
// kernels/cuda/nf4_gemv.cuh instead); embedding, norms and lm_head stay bf16.
// A frozen, untied embedding lives in pinned host memory by default (CudaModelOptions::embedding):
// a step reads only its T rows, through the device alias (kernels/cuda/host_mapped.cuh).
//
//   from_pretrained / from_weights   the same weight bits and the same adapter Rng draws as the
//                                    CPU model, so both start from identical parameters
//   forward_backward(batch, scale, dropout) -> LossSum   packed varlen micro-batch, grads +=
//   evaluate(batch), logits(batch, rows), trainable_parameters(), zero_grad()
//
// Memory: everything comes from one arena sized up front from (config, max tokens per
// micro-batch) by the same plan() that lays it out (memory_plan.cuh). The activation policy
// decides what the plan keeps per layer (policies/cuda_device.hpp). Frozen weights have no gradient
// buffers and a frozen embedding has no backward. The step's only host traffic is the batch's token
// ids, positions and boundaries going in and the loss sum (one double) coming out.
#pragma once
#include <algorithm>
#include <array>
#include <bit>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "peft/kernels/cuda/cross_entropy.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"
#include "peft/kernels/cuda/embedding.cuh"
#include "peft/kernels/cuda/graph_capture.cuh"
#include "peft/models/cuda/batch_upload.cuh"
#include "peft/models/cuda/memory_budget.hpp"
#include "peft/models/cuda/model_options.hpp"
#include "peft/policies/cuda_device.hpp"
#include "peft/models/cuda/decode.cuh"
#include "peft/layers/cuda/decoder_layer.cuh"
#include "peft/optim/cuda/device_parameters.cuh"
#include "peft/models/qwen2.hpp"
#include "peft/models/qwen2_contract.hpp"

namespace peft {

template <class L, PrecisionPolicy P, class A>
class Qwen2Model<L, P, CudaDevice<A>> {
  static_assert(cuda::CudaPrecision<P>, "the CUDA backend computes in bf16: Bf16Mixed, or Nf4Base (QLoRA); Fp32 and "
                                        "Nf4Fp32 run on Cpu");
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
  using Device = CudaDevice<A>;
  using Options = CudaModelOptions;  // from_pretrained / from_weights' run-time sizes
  static constexpr bool trains_lm_head = W::lm_head::trains_base;
  static constexpr bool keeps_layers = A::keeps_layers;

  Qwen2Model(const ModelConfig& cfg, const LoraConfig& lora, CudaModelOptions opt = {})
      : Qwen2Model(cfg, lora, opt, LayoutOnly{}) {
    PEFT_CUDA_CHECK(cudaSetDevice(opt_.device));
    cuda::device_kernels(opt_.device);  // an unsupported card (older than sm_80) fails here, named
    stream_ = cuda::make_prioritised_stream(true);  // the side stream (side_stream.cuh) fills in below it
    cuda::MemoryPlan count;
    plan(count);
    arena_ = std::make_unique<cuda::DeviceArena>(count.bytes() + opt_.extra_bytes);
    cuda::MemoryPlan real(*arena_);
    plan(real);
    for_each_layer([&](const auto& layer, std::size_t) { layer_weights_.push_back(layer.weights()); });
    gemm_ = std::make_unique<cuda::Gemm>(*arena_);
    if (uses_side_stream()) side_ = std::make_unique<cuda::SideStream>(*arena_);
    PEFT_CUDA_CHECK(cudaMallocHost(&pinned_, pinned_bytes()));
    state_.arena = arena_.get();
    state_.stream = stream_;
    state_.host_norm = reinterpret_cast<float*>(pinned_);
    const auto inv = cuda::rope_inv_freq(static_cast<int>(cfg_.head_dim), cfg_.rope_theta);
    PEFT_CUDA_CHECK(cudaMemcpy(inv_freq_, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice));
    zero_grad();
  }

  // The device memory this model would take with these options, by part, without touching a GPU:
  // plan() run as a count (the arena is exactly this size). The programs compare it with the free
  // memory before choosing the activation policy (memory_budget.hpp).
  static cuda::PlannedMemory planned_memory(const ModelConfig& cfg, const LoraConfig& lora, CudaModelOptions opt = {}) {
    Qwen2Model m(cfg, lora, opt, LayoutOnly{});
    cuda::MemoryPlan count;
    m.plan(count);
    m.planned_.workspace += opt.extra_bytes;
    return m.planned_;
  }

 private:
  struct LayoutOnly {};
  // Validates and lays out the layers; no device call (planned_memory stops here).
  Qwen2Model(const ModelConfig& cfg, const LoraConfig& lora, CudaModelOptions opt, LayoutOnly)
      : cfg_(cfg), lora_(lora), opt_(opt), embed_(std::string(qwen2::kEmbedTokens), cfg.vocab_size, cfg.hidden_size, false),
        final_norm_(std::string(qwen2::kFinalNorm), 1, cfg.hidden_size, true),
        lm_head_(std::string(qwen2::kLmHead), cfg.vocab_size, cfg.hidden_size, false) {
    cfg_.validate("model config");
    embed_on_host_ = peft::embedding_in_host_memory(opt_.embedding, W::train_embedding, cfg_.tie_word_embeddings);
    if (uses_lora()) lora_.validate();
    check_cuda_model_shapes(cfg_);
    require(opt_.max_tokens > 0, "CudaModelOptions::max_tokens must be positive (got {})", opt_.max_tokens);
    cuda::check_recompute_num_layers(opt_.recompute_num_layers, cfg_.num_hidden_layers, "the model");
    qwen2::check_tail_layers(kTailLayers, cfg_);
    qwen2::check_tied_lm_head(cfg_, W::lm_head::trains_base, W::train_embedding);
    // Each Lora projection decides from --target_modules whether it carries an adapter (and checks
    // a compile-time rank against --lora_rank), as the CPU layers do.
    const int first_tail = static_cast<int>(cfg_.num_hidden_layers) - kTailLayers;
    rest_.reserve(static_cast<std::size_t>(first_tail));
    tail_.reserve(static_cast<std::size_t>(kTailLayers));
    for (int i = 0; i < first_tail; ++i) rest_.emplace_back(i, cfg_, lora_);
    for (int i = first_tail; i < cfg_.num_hidden_layers; ++i) tail_.emplace_back(i, cfg_, lora_);
  }

 public:
  ~Qwen2Model() {
    graphs_.reset();
    gemm_.reset();
    side_.reset();
    state_.norm.reset();
    state_.optimizer.reset();
    arena_.reset();
    if (pinned_) cudaFreeHost(pinned_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  Qwen2Model(const Qwen2Model&) = delete;
  Qwen2Model& operator=(const Qwen2Model&) = delete;

  static std::unique_ptr<Qwen2Model> from_pretrained(const std::filesystem::path& dir, const LoraConfig& lora,
                                                     std::uint64_t adapter_seed, CudaModelOptions opt = {}) {
    auto m = std::make_unique<Qwen2Model>(read_checked_model_config(dir), lora, opt);  // sizes checked first
    m->load_pretrained(dir);
    m->init_adapters(adapter_seed);
    return m;
  }
  static std::unique_ptr<Qwen2Model> from_weights(const ModelConfig& cfg, WeightSource& src, const LoraConfig& lora,
                                                  std::uint64_t adapter_seed, CudaModelOptions opt = {}) {
    auto m = std::make_unique<Qwen2Model>(cfg, lora, opt);
    m->load_weights(src);
    m->init_adapters(adapter_seed);
    return m;
  }

  // Same tensors, same order of reads as the CPU model (a RandomWeights source gives both the
  // same values).
  void load_weights(WeightSource& src) {
    Matrix e(cfg_.vocab_size, cfg_.hidden_size);
    src.read(std::string(qwen2::kEmbedTokens), e);
    embed_.upload(e, stream_);
    for_each_layer([&](auto& layer, std::size_t) { layer.load(src, stream_); });
    Matrix n(1, cfg_.hidden_size);
    src.read(std::string(qwen2::kFinalNorm), n);
    final_norm_.upload(n, stream_);
    if (!cfg_.tie_word_embeddings) {
      qwen2::require_lm_head(src);
      src.read(std::string(qwen2::kLmHead), e);
      lm_head_.upload(e, stream_);
    }
    PEFT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  // The checkpoint's frozen weights straight from the mapped shards (weight_loader.cuh); the same
  // tensors and bits as load_weights(SafetensorsWeights), without the fp32 round trip.
  // Fully trained tensors then take their fp32 masters from the loaded bf16 values.
  cuda::WeightLoadStats load_pretrained(const std::filesystem::path& dir, const cuda::WeightLoaderOptions& o = {}) {
    if constexpr (QuantisedBase<P>) {  // NF4: each projection quantised on the host as it is read
      SafetensorsWeights src(dir);
      load_weights(src);
      return {};
    }
    const cuda::WeightLoadStats stats = cuda::load_weights_bf16(dir, base_weights(), stream_, o);
    widen_masters();
    return stats;
  }
  // The frozen bf16 tensors by checkpoint name (no lm_head when tied): the loader's destinations.
  std::vector<cuda::WeightDestination> base_weights() const {
    std::vector<cuda::WeightDestination> w{embed_.destination()};
    for_each_layer([&](const auto& layer, std::size_t) { layer.base_weights(w); });
    w.push_back(final_norm_.destination());
    if (!cfg_.tie_word_embeddings) w.push_back(lm_head_.destination());
    return w;
  }
  // Random base weights drawn on the device (benchmarks: the 7B's 7.6B values in milliseconds).
  void fill_random_weights(std::uint64_t seed) {
    const long long ve = static_cast<long long>(cfg_.vocab_size) * cfg_.hidden_size;
    cuda::fill_normal(embed_.bf16_copy(), ve, seed, 1.0f / std::sqrt(static_cast<float>(cfg_.hidden_size)), stream_);
    for_each_layer([&](auto& layer, std::size_t i) { layer.fill_random(seed + 1000 * (i + 1), stream_); });
    cuda::fill_value(final_norm_.bf16_copy(), cfg_.hidden_size, 1.0f, stream_);
    if (!cfg_.tie_word_embeddings)
      cuda::fill_normal(lm_head_.bf16_copy(), ve, seed + 7, 1.0f / std::sqrt(static_cast<float>(cfg_.hidden_size)),
                        stream_);
    widen_masters();
  }

  // PEFT's initialisation, the CPU model's Rng order: module order, A then (zero) B.
  void init_adapters(std::uint64_t seed) {
    Rng rng(seed);
    for_each_linear([&](auto& lin) { lin.init_adapter(rng, stream_); });
  }

  // LoRA A/B and fully trained tensors in the CPU model's order: embedding, each layer's norms and
  // projections (HF module order), final norm, untied lm_head.
  cuda::DeviceParameters trainable_parameters() {
    std::vector<cuda::DeviceParameter> out;
    embed_.parameters(out);
    for_each_layer([&](const auto& layer, std::size_t) { layer.parameters(out); });
    final_norm_.parameters(out);
    if (!cfg_.tie_word_embeddings) lm_head_.parameters(out);
    return cuda::DeviceParameters(std::move(out), &state_);
  }

  // f(layer, index) for every decoder layer in HF order (the rest, then the tail), and in reverse
  // for the backward; the two layer types are distinct only for a layer-wise layout.
  template <class F> void for_each_layer(F&& f) {
    std::size_t i = 0;
    for (auto& layer : rest_) f(layer, i++);
    for (auto& layer : tail_) f(layer, i++);
  }
  template <class F> void for_each_layer(F&& f) const {
    std::size_t i = 0;
    for (const auto& layer : rest_) f(layer, i++);
    for (const auto& layer : tail_) f(layer, i++);
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
  // One memset: every gradient lives in one block of the arena.
  void zero_grad() {
    if (arena_->separate_allocations()) {  // PEFT_CUDA_ARENA_DEBUG: blocks are not contiguous
      for (const auto& p : trainable_parameters().tensors())
        PEFT_CUDA_CHECK(cudaMemsetAsync(p.grad, 0, static_cast<std::size_t>(p.numel()) * 4, stream_));
      return;
    }
    if (grads_end_ > grads_begin_)
      PEFT_CUDA_CHECK(cudaMemsetAsync(grads_begin_, 0, static_cast<std::size_t>(grads_end_ - grads_begin_), stream_));
  }

  // Sum of token CE over the batch's label tokens; with grad_scale != 0 also the backward,
  // accumulating d(sum CE * grad_scale) into the LoRA gradients.
  LossSum forward_backward(const PackedBatch& batch, float grad_scale, Rng* dropout) {
    const int T = upload_batch(batch);
    const bool backward = grad_scale != 0.0f;
    draw_dropout_seeds(backward ? dropout : nullptr);
    // The step's device work depends on the batch only through these values (the token ids,
    // positions and boundaries are read from device memory): a shape seen before replays its
    // captured CUDA graph instead of ~100 launches per layer.
    const StepShape shape{T, n_labels_, scratch_.batch.num_seqs, scratch_.batch.max_seqlen, backward, dropout_on_,
                          std::bit_cast<std::uint32_t>(grad_scale)};
    if (!opt_.graphs || profile_)  // a profiled step runs eagerly: its events sit between the calls
      device_step(T, grad_scale);
    else
      graphs_->run(shape, stream_, [&] { device_step(T, grad_scale); });
    PEFT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return {*host_loss(), batch.label_tokens};
  }

  LossSum evaluate(const PackedBatch& batch) { return forward_backward(batch, 0.0f, nullptr); }

  // Logits [rows, vocab] (fp32 copies of the bf16 logits) at the given positions of the batch
  // (all positions when rows is empty).
  Matrix logits(const PackedBatch& batch, std::span<const Eigen::Index> rows = {}) {
    const int T = upload_batch(batch);
    draw_dropout_seeds(nullptr);
    const cuda::GemmContext c{*gemm_, stream_, scratch_.weight, nullptr, opt_.lora_kernels};
    cuda::embedding_forward(stream_x_[0], d_ids_, embed_.bf16_copy(), T, vocab(), hidden(), stream_);
    for_each_layer([&](const auto& layer, std::size_t l) {
      layer.forward(c, stream_x_[l], stream_x_[l + 1], acts(l), scratch_, T, nullptr);
    });
    cuda::rms_norm_forward(final_h_, final_rstd_, stream_x_[n_layers()], final_norm_.bf16_copy(), T, hidden(), eps(),
                           stream_);
    std::vector<std::int32_t> idx;
    if (rows.empty()) for (int t = 0; t < T; ++t) idx.push_back(t);
    for (auto r : rows) {
      require(r >= 0 && r < T, "logits: row {} is outside the batch ({} tokens)", r, T);
      idx.push_back(static_cast<std::int32_t>(r));
    }
    Matrix out(static_cast<Eigen::Index>(idx.size()), cfg_.vocab_size);
    std::vector<std::uint16_t> buf;
    for (std::size_t r0 = 0; r0 < idx.size(); r0 += static_cast<std::size_t>(logits_.rows)) {
      const int cnt = static_cast<int>(std::min<std::size_t>(logits_.rows, idx.size() - r0));
      PEFT_CUDA_CHECK(cudaMemcpyAsync(d_label_rows_, idx.data() + r0, cnt * 4, cudaMemcpyHostToDevice, stream_));
      cuda::gather_rows(h_sel_, final_h_, d_label_rows_, cnt, hidden(), stream_);
      gemm_->matmul(logits_.data, logits_.ld, h_sel_, hidden(), false, lm_weight(), hidden(), true, cnt, vocab(),
                    hidden(), 1.0f, 0.0f, nullptr, stream_);
      buf.resize(static_cast<std::size_t>(cnt) * logits_.ld);
      PEFT_CUDA_CHECK(cudaMemcpyAsync(buf.data(), logits_.data, buf.size() * 2, cudaMemcpyDeviceToHost, stream_));
      PEFT_CUDA_CHECK(cudaStreamSynchronize(stream_));
      for (int r = 0; r < cnt; ++r)
        for (int v = 0; v < vocab(); ++v)
          out(static_cast<Eigen::Index>(r0) + r, v) = bf16_to_float(buf[static_cast<std::size_t>(r) * logits_.ld + v]);
    }
    return out;
  }

  // Generation (peft/generate/): a device KV cache (model/kv_cache.cuh) and a prefill / CUDA-graph
  // decode step with LoRA unmerged (model/decode.cuh). max_context 0: the config's, at most 32768.
  cuda::CudaKvCache make_kv_cache(std::int64_t max_context = 0) { return cuda::Decoder(*this).make_cache(max_context); }
  // Logits [1, vocab] after the last new token ([ids, vocab] with all_rows), as the CPU model.
  Matrix forward_cached(std::span<const std::int32_t> ids, cuda::CudaKvCache& cache, bool all_rows = false) {
    return cuda::Decoder(*this).forward_cached(ids, cache, all_rows);
  }
  // Greedy decoding with the argmax on the device (benchmarks): max_new ids, no stop tokens.
  std::vector<std::int32_t> greedy_on_device(std::span<const std::int32_t> prompt, int max_new,
                                             cuda::CudaKvCache& cache) {
    return cuda::Decoder(*this).greedy(prompt, max_new, cache);
  }
  template <class M>
  friend class cuda::Decoder;

  const ModelConfig& config() const { return cfg_; }
  const LoraConfig& lora_config() const { return lora_; }
  static constexpr bool uses_lora() { return detail::any_adapter<Rest>() || detail::any_adapter<Tail>(); }
  bool uses_side_stream() const {  // the adapter's passes beside the base GEMMs (side_stream.cuh)
    return uses_lora() && opt_.lora_side_stream && opt_.lora_kernels == cuda::LoraKernels::kFused;
  }
  // Tests: fills every activation and scratch buffer with NaN (0xFF bytes), so a kernel that reads
  // what nothing wrote shows up as a non-finite loss or gradient. (Skipped under
  // PEFT_CUDA_ARENA_DEBUG, where the buffers are separate allocations.)
  void poison_activations() {
    if (arena_->separate_allocations()) return;
    char* begin = reinterpret_cast<char*>(stream_x_.front());
    char* end = reinterpret_cast<char*>(d_targets_ + opt_.max_tokens);  // (not the seeds)
    PEFT_CUDA_CHECK(cudaMemsetAsync(begin, 0xFF, static_cast<std::size_t>(end - begin), stream_));
    PEFT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  const CudaModelOptions& options() const { return opt_; }
  // Every call reads all the weights: the trainer packs a step's micro-batches up to this many tokens.
  std::size_t max_packed_tokens() const { return static_cast<std::size_t>(opt_.max_tokens); }
  cuda::DeviceArena& arena() { return *arena_; }
  // Measured, for the run's log: the arena's high-water mark against its planned size, and what the
  // whole device has in use now (cudaMemGetInfo: the CUDA context, cuBLAS and any other process too).
  std::string memory_report() const {
    std::size_t free = 0, total = 0;
    PEFT_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return "[memory] measured: arena high-water " + cuda::gb(arena_->high_water()) + " of " +
           cuda::gb(arena_->capacity()) + " planned; device memory in use " + cuda::gb(total - free) + " of " +
           cuda::gb(total) + " (cudaMemGetInfo)" +
           (embed_on_host_ ? "; embedding: host (pinned) " + cuda::gb(embed_.host_bytes()) : std::string());
  }
  cudaStream_t stream() const { return stream_; }
  // Instrumented steps (bench/train_bench --breakdown): while set, every step runs eagerly and
  // records its parts into *p (step_profile.cuh); null again restores graph replay.
  void set_step_profile(cuda::StepProfile* p) { profile_ = p; }
  bool embedding_in_host_memory() const { return embed_on_host_; }

 private:
  int hidden() const { return static_cast<int>(cfg_.hidden_size); }
  int vocab() const { return static_cast<int>(cfg_.vocab_size); }
  float eps() const { return static_cast<float>(cfg_.rms_norm_eps); }
  const cuda::bf16* lm_weight() const { return cfg_.tie_word_embeddings ? embed_.bf16_copy() : lm_head_.bf16_copy(); }
  // lm_head's gradient: the embedding's when tied (both uses accumulate into one weight); null when frozen.
  float* lm_grad() const { return cfg_.tie_word_embeddings ? embed_.grad() : lm_head_.grad(); }
  void widen_masters() {
    embed_.widen_master(stream_);
    for_each_layer([&](auto& layer, std::size_t) { layer.widen_masters(stream_); });
    final_norm_.widen_master(stream_);
    if (!cfg_.tie_word_embeddings) lm_head_.widen_master(stream_);
    PEFT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  cuda::LayerDims layer_dims() const {
    return rest_.empty() ? tail_.front().dims() : rest_.front().dims();
  }
  cuda::ActivationSets sets() const {
    return cuda::ActivationSets::of_policy(n_layers(), A::keeps_layers, A::keeps_mlp, opt_.recompute_num_layers);
  }
  cuda::LayerActivations& acts(std::size_t l) { return acts_[sets().of(l)]; }
  double* host_loss() { return reinterpret_cast<double*>(static_cast<char*>(pinned_) + 8); }
  std::size_t seeds_offset() const { return (16 + cuda::batch_pinned_ints(opt_.max_tokens) * 4 + 64 + 7) / 8 * 8; }
  std::size_t pinned_bytes() const { return seeds_offset() + n_layers() * cuda::kProjections * 8; }
  std::size_t n_layers() const { return rest_.size() + tail_.size(); }

  struct StepShape {
    int tokens, labels, seqs, max_seqlen;
    bool backward, dropout;
    std::uint32_t grad_scale_bits;
    auto operator<=>(const StepShape&) const = default;
  };

  // Everything a step does on the device, after the batch is uploaded: forward, chunked cross
  // entropy, the loss sum's copy to pinned memory, and the backward.
  void device_step(int T, float grad_scale) {
    const bool backward = grad_scale != 0.0f;
    const bool beside = uses_side_stream() && T <= cuda::kSideStreamMaxTokens;  // profiled: on one stream
    const cuda::GemmContext c{*gemm_, stream_, scratch_.weight, profile_, opt_.lora_kernels, beside,
                              beside && !profile_ ? side_.get() : nullptr};
    const std::size_t th = static_cast<std::size_t>(T) * cfg_.hidden_size;
    using cuda::StepPart;

    {
      const cuda::ProfileScope e = c.part(StepPart::kElementwise);
      cuda::embedding_forward(stream_x_[0], d_ids_, embed_.bf16_copy(), T, vocab(), hidden(), stream_);
    }
    for_each_layer([&](const auto& layer, std::size_t l) {
      layer.forward(c, stream_x_[l], stream_x_[l + 1], acts(l), scratch_, T, layer_seeds(l));
    });
    {
      const cuda::ProfileScope e = c.part(StepPart::kElementwise);
      cuda::rms_norm_forward(final_h_, final_rstd_, stream_x_[n_layers()], final_norm_.bf16_copy(), T, hidden(), eps(),
                             stream_);
    }

    // Cross entropy over the labelled rows only (gathered), chunked over the vocabulary.
    const int n = n_labels_;
    if (n > 0) {
      const cuda::ProfileScope ce = c.part(StepPart::kLmHeadCe);
      cuda::gather_rows(h_sel_, final_h_, d_label_rows_, n, hidden(), stream_);
      cuda::lm_head_cross_entropy(*gemm_, row_loss_, backward ? dh_sel_ : nullptr, backward ? lm_grad() : nullptr,
                                  h_sel_, lm_weight(),
                                  d_targets_, n, hidden(), vocab(), grad_scale, logits_, stream_);
      cuda::ce_loss_sum(loss_sum_, row_loss_, n, stream_);
    } else {
      PEFT_CUDA_CHECK(cudaMemsetAsync(loss_sum_, 0, sizeof(double), stream_));
    }
    PEFT_CUDA_CHECK(cudaMemcpyAsync(host_loss(), loss_sum_, sizeof(double), cudaMemcpyDeviceToHost, stream_));

    if (backward && n > 0) {
      {
        // dY: the labelled rows' dh, zero elsewhere; the final norm's backward starts the stream.
        const cuda::ProfileScope e = c.part(StepPart::kElementwise);
        PEFT_CUDA_CHECK(cudaMemsetAsync(dy_, 0, th * sizeof(cuda::bf16), stream_));
        cuda::scatter_rows(dy_, dh_sel_, d_label_rows_, n, hidden(), stream_);
        cuda::rms_norm_backward(dstream_, final_norm_.grad(), dy_, stream_x_[n_layers()], final_norm_.bf16_copy(),
                                final_rstd_, T, hidden(), stream_, false);
      }
      for_each_layer_reverse([&](const auto& layer, std::size_t l) {
        // Re-run the layer's forward into the shared set, or (selective) rebuild the shared MLP side.
        // The re-run rewrites stream_x_[l + 1] with the values it holds (layer l + 1's backward is
        // done); final_h_ shares the step scratch.
        const bool rebuild = sets().rebuilds(l);
        auto* x = stream_x_[l];
        if (!keeps_layers && rebuild) layer.forward(c, x, stream_x_[l + 1], acts(l), scratch_, T, layer_seeds(l));
        layer.backward(c, x, dstream_, acts(l), scratch_, T, layer_seeds(l), !A::keeps_mlp && rebuild);
      });
      // A frozen embedding stops the gradient here; a trained one adds each token's row.
      if constexpr (W::train_embedding) {
        const cuda::ProfileScope e = c.part(StepPart::kElementwise);
        cuda::embedding_backward(embed_.grad(), d_ids_, dstream_, T, vocab(), hidden(), stream_);
      }
    }
  }

  const std::uint64_t* layer_seeds(std::size_t l) const {
    return dropout_on_ ? d_seeds_ + l * cuda::kProjections : nullptr;
  }

  // The whole layout, run once to count and once to allocate.
  void plan(cuda::MemoryPlan& m) {
    const auto T = static_cast<std::size_t>(opt_.max_tokens);
    const auto H = static_cast<std::size_t>(cfg_.hidden_size);
    const cuda::LayerDims d = layer_dims();
    embed_.plan_weights(m, embed_on_host_);
    if (!m.allocating()) planned_.host_embedding = embed_on_host_ ? embed_.host_bytes() : 0;
    for_each_layer([&](auto& layer, std::size_t) { layer.plan_weights(m); });
    final_norm_.plan_weights(m);
    if (!cfg_.tie_word_embeddings) lm_head_.plan_weights(m);
    inv_freq_ = m.take<float>(static_cast<std::size_t>(cfg_.head_dim / 2), "rope inv_freq");
    if (!m.allocating()) planned_.weights = m.bytes();
    // Gradients: one block (zero_grad is one memset), in trainable_parameters()' order.
    const std::size_t before = m.bytes();
    embed_.plan_grads(m);
    for_each_layer([&](auto& layer, std::size_t) { layer.plan_grads(m); });
    final_norm_.plan_grads(m);
    if (!cfg_.tie_word_embeddings) lm_head_.plan_grads(m);
    if (m.allocating()) {
      auto params = trainable_parameters().tensors();
      if (!params.empty()) {
        grads_begin_ = reinterpret_cast<char*>(params.front().grad);
        grads_end_ = grads_begin_ + (m.bytes() - before);
      }
    }
    if (!m.allocating()) cuda::count_optimizer_state(m, trainable_parameters());  // taken at optimizer_init
    if (!m.allocating()) planned_.optimizer = m.bytes() - planned_.weights;  // with the moments counted above
    // Activations: the residual stream at every layer boundary, then per-layer sets.
    stream_x_.assign(n_layers() + 1, nullptr);
    for (auto& x : stream_x_) x = m.take<cuda::bf16>(T * H, "residual stream");
    std::array<int, cuda::kProjections> rp{};  // each projection's largest padded rank over the layers
    for_each_layer([&](const auto& layer, std::size_t) {
      const auto lr = layer.padded_ranks();
      for (int p = 0; p < cuda::kProjections; ++p) rp[p] = std::max(rp[p], lr[p]);
    });
    int max_rp = 0;
    for (int r : rp) max_rp = std::max(max_rp, r);
    cuda::plan_layer_activations(m, acts_, sets(), d, opt_.max_tokens, rp);
    if (!m.allocating()) planned_.activations = m.bytes() - planned_.weights - planned_.optimizer;
    std::size_t largest = 0;  // NF4: the largest projection, dequantised (ProjectionWeights::base_for_gemm)
    if constexpr (QuantisedBase<P>)
      for_each_layer([&](const auto& layer, std::size_t) { largest = std::max(largest, layer.largest_projection()); });
    scratch_.plan_rope(m, d, opt_.max_tokens);
    // The layers' step scratch is dead between the last layer's forward and the first layer's
    // backward, exactly when the loss's buffers live (final norm output, labelled rows, logits
    // chunk, d(final norm output)): one block holds either.
    cuda::overlay(
        m, "step scratch / loss buffers",
        [&](cuda::MemoryPlan& p) {
          scratch_.plan(p, d, opt_.max_tokens, max_rp, uses_lora() && lora_.lora_dropout > 0, largest);
        },
        [&](cuda::MemoryPlan& p) {
          final_h_ = p.take<cuda::bf16>(T * H, "final norm output");
          dy_ = p.take<cuda::bf16>(T * H, "final norm output gradient");
          h_sel_ = p.take<cuda::bf16>(T * H, "labelled rows");
          dh_sel_ = p.take<cuda::bf16>(T * H, "labelled rows gradient");
          logits_.rows = std::min(opt_.logits_chunk_rows, opt_.max_tokens);
          logits_.ld = cuda::LogitsChunk::ld_for(vocab());
          logits_.data = p.take<cuda::bf16>(static_cast<std::size_t>(logits_.rows) * logits_.ld, "logits chunk");
        });
    dstream_ = m.take<cuda::bf16>(T * H, "residual stream gradient");
    final_rstd_ = m.take<float>(T, "final norm rstd");
    row_loss_ = m.take<float>(T, "per-row loss");
    loss_sum_ = m.take<double>(1, "loss sum");
    d_ids_ = m.take<std::int32_t>(T, "token ids");
    d_positions_ = m.take<std::int32_t>(T, "positions");
    d_cu_ = m.take<std::int32_t>(T + 1, "cu_seqlens");
    d_label_rows_ = m.take<std::int32_t>(T, "label rows");
    d_targets_ = m.take<std::int32_t>(T, "targets");
    d_seeds_ = m.take<std::uint64_t>(n_layers() * cuda::kProjections, "dropout seeds");
    if (!m.allocating())  // taken by the Gemms after the plan
      m.take<char>(cuda::Gemm::kDefaultWorkspaceBytes + (uses_side_stream() ? cuda::SideStream::kWorkspaceBytes : 0),
                   "cuBLASLt workspaces");
    if (!m.allocating()) planned_.workspace = m.bytes() - planned_.weights - planned_.optimizer - planned_.activations;
  }

  // Validates the batch (errors name the position) and copies it in through pinned memory.
  int upload_batch(const PackedBatch& b) {
    auto* pin = reinterpret_cast<std::int32_t*>(static_cast<char*>(pinned_) + 16);
    const cuda::UploadedBatch u = cuda::upload_batch(b, opt_.max_tokens, vocab(), pin,
                                                     {d_ids_, d_positions_, d_cu_, d_label_rows_, d_targets_}, stream_);
    n_labels_ = u.labels;
    scratch_.batch = {d_cu_, u.seqs, u.max_seqlen, u.tokens};
    cuda::rope_build_table(scratch_.rope, d_positions_, inv_freq_, u.tokens, static_cast<int>(cfg_.head_dim), stream_);
    return u.tokens;
  }

  // One seed per (layer, projection) from the trainer's dropout Rng, into device memory (the
  // dropout kernels read them there, so a replayed graph uses this step's seeds).
  void draw_dropout_seeds(Rng* rng) {
    dropout_on_ = rng && uses_lora() && lora_.lora_dropout > 0;
    if (!dropout_on_) return;
    const std::size_t n = n_layers() * cuda::kProjections;
    auto* host = reinterpret_cast<std::uint64_t*>(static_cast<char*>(pinned_) + seeds_offset());
    for (std::size_t i = 0; i < n; ++i) host[i] = rng->next();
    PEFT_CUDA_CHECK(cudaMemcpyAsync(d_seeds_, host, n * 8, cudaMemcpyHostToDevice, stream_));
  }

  ModelConfig cfg_;
  LoraConfig lora_;
  CudaModelOptions opt_;
  cuda::StepProfile* profile_ = nullptr;  // set_step_profile
  cuda::PlannedMemory planned_;  // plan()'s count by part (its counting pass)
  cudaStream_t stream_ = nullptr;
  std::vector<cuda::DecoderLayer<Rest, P>> rest_;  // layers [0, L - kTailLayers)
  std::vector<cuda::DecoderLayer<Tail, P>> tail_;  // the last kTailLayers (empty for a uniform layout)
  std::vector<cuda::LayerWeights> layer_weights_;  // every layer's forward view, for generation (decode.cuh)
  std::unique_ptr<cuda::DeviceArena> arena_;
  std::unique_ptr<cuda::Gemm> gemm_;
  std::unique_ptr<cuda::SideStream> side_;  // CudaModelOptions::lora_side_stream
  cuda::TrainingState state_;
  void* pinned_ = nullptr;

  cuda::ModelWeight<W::train_embedding> embed_;
  cuda::ModelWeight<W::train_norms> final_norm_;
  cuda::ModelWeight<W::lm_head::trains_base> lm_head_;  // untied only
  float* inv_freq_ = nullptr;
  char *grads_begin_ = nullptr, *grads_end_ = nullptr;
  std::vector<cuda::bf16*> stream_x_;
  std::vector<cuda::LayerActivations> acts_;
  cuda::StepScratch scratch_;  // its .weight: Nf4Base's dequantised projection (null for bf16)
  bool embed_on_host_ = false;  // CudaModelOptions::embedding resolved for this layout and config
  cuda::bf16 *dstream_ = nullptr, *final_h_ = nullptr, *dy_ = nullptr, *h_sel_ = nullptr, *dh_sel_ = nullptr;
  float *final_rstd_ = nullptr, *row_loss_ = nullptr;
  double* loss_sum_ = nullptr;
  cuda::LogitsChunk logits_;
  std::int32_t *d_ids_ = nullptr, *d_positions_ = nullptr, *d_cu_ = nullptr, *d_label_rows_ = nullptr,
               *d_targets_ = nullptr;
  std::uint64_t* d_seeds_ = nullptr;
  int n_labels_ = 0;
  bool dropout_on_ = false;
  std::unique_ptr<cuda::GraphCache<StepShape>> graphs_ = std::make_unique<cuda::GraphCache<StepShape>>();
};

}  // namespace peft
