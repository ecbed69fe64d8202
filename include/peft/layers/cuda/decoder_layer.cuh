// cuda::DecoderLayer<Layout>: one Qwen2 decoder layer on the GPU, pre-norm residual, as
// layers/decoder_layer.hpp, its seven projections each a cuda::Linear<policy> of the layout
// (a Projections<...> bundle: Lora<8> here, Full or Frozen there), their frozen bases stored as the
// precision says (bf16, or NF4 under Nf4Base: layers/cuda/nf4_base.cuh):
//   h = x + o_proj(attn(rope(q, k), v)),  q/k/v = proj(norm1(x))
//   out = h + down(silu(gate(norm2(h))) * up(norm2(h)))
// Forward and backward side by side. The backward keeps the residual stream's gradient in ONE
// buffer and updates it in place: it arrives holding d(out); each norm's backward adds its
// branch's gradient into it (the skip path is the identity), so it leaves holding d(x). Every
// branch gradient overwrites its own scratch buffer; SwiGLU's backward writes d(gate), d(up)
// over gate and up, which the layer no longer needs. The two norm weights train under a layout
// with train_norms (FullModel): fp32 masters and gradients beside their bf16 copies (model_weight.cuh).
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "peft/io/lora_config.hpp"
#include "peft/io/model_config.hpp"
#include "peft/kernels/cuda/attention.cuh"
#include "peft/kernels/cuda/elementwise.cuh"
#include "peft/kernels/cuda/rms_norm.cuh"
#include "peft/kernels/cuda/rope.cuh"
#include "peft/kernels/cuda/swiglu.cuh"
#include "peft/layers/cuda/frozen_linear.cuh"
#include "peft/layers/cuda/full_linear.cuh"
#include "peft/layers/cuda/lora_linear.cuh"
#include "peft/layers/cuda/model_weight.cuh"
#include "peft/layers/cuda/nf4_base.cuh"
#include "peft/policies/activation_sets.hpp"

namespace peft::cuda {

enum Projection { kQ, kK, kV, kO, kGate, kUp, kDown, kProjections };

struct LayerDims {
  int hidden, inter, heads, kv_heads, head_dim;
  float eps;
  int q_dim() const { return heads * head_dim; }
  int kv_dim() const { return kv_heads * head_dim; }
};

// What a layer's forward leaves for its backward ([T, *] bf16 unless noted). n1, n2, gate and up
// are the "MLP side" (SelectiveRecompute keeps them in one set shared by the rebuilt layers and
// rebuilds them before each such layer's backward: DecoderLayer::backward's rebuild_mlp).
struct LayerActivations {
  bf16 *n1 = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *attn = nullptr, *h = nullptr, *n2 = nullptr,
       *gate = nullptr, *up = nullptr;
  float *rstd1 = nullptr, *rstd2 = nullptr, *lse = nullptr;  // [T], [T], [heads, T]
  std::array<bf16*, kProjections> xa{};                     // LoRA x A^T [T, rp]

  // keeps_mlp false: the MLP side's pointers stay null (share_mlp_side fills them).
  void plan(MemoryPlan& m, const LayerDims& d, int T, const std::array<int, kProjections>& rp, bool keeps_mlp) {
    const std::size_t t = static_cast<std::size_t>(T);
    if (keeps_mlp) plan_mlp_side(m, d, T);
    q = m.take<bf16>(t * d.q_dim(), "activation q");
    k = m.take<bf16>(t * d.kv_dim(), "activation k");
    v = m.take<bf16>(t * d.kv_dim(), "activation v");
    attn = m.take<bf16>(t * d.q_dim(), "activation attention output");
    h = m.take<bf16>(t * d.hidden, "activation h");
    rstd1 = m.take<float>(t, "activation rstd1");
    rstd2 = m.take<float>(t, "activation rstd2");
    lse = m.take<float>(t * d.heads, "activation lse");
    for (int p = 0; p < kProjections; ++p)
      xa[p] = rp[p] ? m.take<bf16>(t * rp[p], "activation lora xa") : nullptr;
  }
  void plan_mlp_side(MemoryPlan& m, const LayerDims& d, int T) {
    const std::size_t t = static_cast<std::size_t>(T);
    n1 = m.take<bf16>(t * d.hidden, "activation n1");
    n2 = m.take<bf16>(t * d.hidden, "activation n2");
    gate = m.take<bf16>(t * d.inter, "activation gate");
    up = m.take<bf16>(t * d.inter, "activation up");
  }
  void share_mlp_side(const LayerActivations& from) {
    n1 = from.n1;
    n2 = from.n2;
    gate = from.gate;
    up = from.up;
  }
};

// Every layer's activation sets as `sets` lays them out, the MLP side of selective's sharing
// layers planned once.
inline void plan_layer_activations(MemoryPlan& m, std::vector<LayerActivations>& acts, const ActivationSets& sets,
                                   const LayerDims& d, int T, const std::array<int, kProjections>& rp) {
  const std::size_t sharers = sets.mlp_sharers();
  acts.assign(sets.count(), {});
  for (std::size_t i = 0; i < acts.size(); ++i) acts[i].plan(m, d, T, rp, i >= sharers);
  if (sharers == 0) return;
  LayerActivations shared;
  shared.plan_mlp_side(m, d, T);
  for (std::size_t i = 0; i < sharers && i < acts.size(); ++i) acts[i].share_mlp_side(shared);
}

// Buffers shared by all layers within a step (never live across layers): plan() lays out the
// temporaries (the model overlays them with the loss's buffers, which are alive only between the
// forward and the backward), plan_rope() the step's rope table (read by every layer, so apart).
// Under Nf4Base `weight` is the projection being multiplied, dequantised to bf16 right before its
// GEMM. Three buffers share one block: `weight` (from a projection's dequantisation to its base
// GEMM), `drop` (the adapter's dropped input, from the dropout pass to the LoRA GEMMs that read it;
// the fused LoRA kernels' fp32 partial sums, from one kernel to the next) and `attn_scratch` (inside attention_backward). A projection's forward and backward use both
// `weight` and `drop`, one after the other: safe because every use is on the one stream, in order
// (each reader is queued before the next writer). The side stream (side_stream.cuh) touches only
// `drop`, between a projection's fork and its join, and only over a bf16 base (NF4's `weight`
// shares the block); the main stream's next user of the block (the dropout backward, the
// attention backward) comes after that join.
struct StepScratch {
  bf16 *act = nullptr, *proj = nullptr, *dn = nullptr, *dattn = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr,
       *dact = nullptr, *dxa = nullptr, *drop = nullptr, *weight = nullptr;
  float* attn_scratch = nullptr;
  RopeTable rope;
  VarlenBatch batch{};

  // weight_elems: the largest NF4 projection (0 for a bf16 base: no weight scratch).
  void plan(MemoryPlan& m, const LayerDims& d, int T, int max_rp, bool dropout, std::size_t weight_elems) {
    const std::size_t t = static_cast<std::size_t>(T);
    act = m.take<bf16>(t * d.inter, "scratch swiglu");
    proj = m.take<bf16>(t * d.hidden, "scratch projection output");
    dn = m.take<bf16>(t * d.hidden, "scratch d(norm output)");
    dattn = m.take<bf16>(t * d.q_dim(), "scratch d(attention output)");
    dq = m.take<bf16>(t * d.q_dim(), "scratch dq");
    dk = m.take<bf16>(t * d.kv_dim(), "scratch dk");
    dv = m.take<bf16>(t * d.kv_dim(), "scratch dv");
    dact = m.take<bf16>(t * d.inter, "scratch d(swiglu)");
    dxa = m.take<bf16>(t * (max_rp > 0 ? max_rp : 8), "scratch lora dxa");
    drop = weight = nullptr;
    overlay(
        m, "scratch dropout input / NF4 weight / attention backward",
        [&](MemoryPlan& p) {
          // also the up projection's partial dxa sums (lora_up_backward), dropout or not, at the
          // ranks where the model runs it (lora_up_wins; cuBLASLt above, which needs none)
          const int widest = std::max({d.inter, d.hidden, d.q_dim()});  // any projection's in or out
          const bool up_kernels = max_rp > 0 && lora_up_wins(max_rp);
          const std::size_t n = std::max(dropout ? t * widest : 0,
                                         up_kernels ? 2 * lora_up_backward_scratch_floats(T, widest, max_rp) : 0);
          drop = n ? p.take<bf16>(n, "scratch dropout input / LoRA partial sums") : nullptr;
        },
        [&](MemoryPlan& p) { weight = weight_elems ? p.take<bf16>(weight_elems, "NF4 weight scratch (bf16)") : nullptr; },
        [&](MemoryPlan& p) {
          attn_scratch = p.take<float>(attention_backward_scratch_floats(T, {d.heads, d.kv_heads, d.head_dim}),
                                       "scratch attention backward");
        });
  }
  void plan_rope(MemoryPlan& m, const LayerDims& d, int T) {
    const std::size_t t = static_cast<std::size_t>(T);
    rope.cos = m.take<float>(t * (d.head_dim / 2), "rope cos");
    rope.sin = m.take<float>(t * (d.head_dim / 2), "rope sin");
  }
};

// What a layer's forward reads, for the generation path (models/cuda/decode.cuh): one type
// whatever the layer's layout, so the model can hold every layer's view in one vector.
class LayerWeights {
 public:
  LayerWeights(const LayerDims& d, const bf16* norm1, const bf16* norm2,
               const std::array<ProjectionWeights, kProjections>& lin)
      : dims_(d), norm1_(norm1), norm2_(norm2), lin_(lin) {}
  const LayerDims& dims() const { return dims_; }
  const bf16* norm1_weight() const { return norm1_; }
  const bf16* norm2_weight() const { return norm2_; }
  const std::array<ProjectionWeights, kProjections>& linears() const { return lin_; }
  std::array<int, kProjections> padded_ranks() const {
    std::array<int, kProjections> r{};
    for (int p = 0; p < kProjections; ++p) r[p] = lin_[p].padded_rank();
    return r;
  }

 private:
  LayerDims dims_;
  const bf16 *norm1_ = nullptr, *norm2_ = nullptr;
  std::array<ProjectionWeights, kProjections> lin_;
};

template <ProjectionLayout L, CudaPrecision Precision = Bf16Mixed>
class DecoderLayer {
  template <class Policy>
  using Lin = Linear<Policy, FrozenBaseOf<Precision>>;
  static_assert(!QuantisedBase<Precision> || !(L::q::trains_base || L::k::trains_base || L::v::trains_base ||
                                       L::o::trains_base || L::gate::trains_base || L::up::trains_base ||
                                       L::down::trains_base),
                "Nf4Base: a trained weight cannot be stored in NF4; QLoRA trains LoRA adapters on a frozen "
                "quantised base (use Lora<r> or Frozen)");

 public:
  // Dropout seeds of the seven projections: kProjections device scalars, or null (no dropout).
  using Seeds = const std::uint64_t*;

  DecoderLayer(int index, const ModelConfig& c, const LoraConfig& lora)
      : prefix_("model.layers." + std::to_string(index)),
        dims_{static_cast<int>(c.hidden_size), static_cast<int>(c.intermediate_size),
              static_cast<int>(c.num_attention_heads), static_cast<int>(c.num_key_value_heads),
              static_cast<int>(c.head_dim), static_cast<float>(c.rms_norm_eps)},
        lin_{Lin<typename L::q>(prefix_ + ".self_attn.q_proj", {c.hidden_size, dims_.q_dim(), true}, lora),
             Lin<typename L::k>(prefix_ + ".self_attn.k_proj", {c.hidden_size, dims_.kv_dim(), true}, lora),
             Lin<typename L::v>(prefix_ + ".self_attn.v_proj", {c.hidden_size, dims_.kv_dim(), true}, lora),
             Lin<typename L::o>(prefix_ + ".self_attn.o_proj", {dims_.q_dim(), c.hidden_size, false}, lora),
             Lin<typename L::gate>(prefix_ + ".mlp.gate_proj", {c.hidden_size, c.intermediate_size, false}, lora),
             Lin<typename L::up>(prefix_ + ".mlp.up_proj", {c.hidden_size, c.intermediate_size, false}, lora),
             Lin<typename L::down>(prefix_ + ".mlp.down_proj", {c.intermediate_size, c.hidden_size, false}, lora)},
        norm1_(prefix_ + ".input_layernorm.weight", 1, c.hidden_size, true),
        norm2_(prefix_ + ".post_attention_layernorm.weight", 1, c.hidden_size, true) {}

  // f(linear) for all seven projections in HF module order.
  template <class F> void for_each_linear(F&& f) {
    std::apply([&](auto&... lin) { (f(lin), ...); }, lin_);
  }
  template <class F> void for_each_linear(F&& f) const {
    std::apply([&](const auto&... lin) { (f(lin), ...); }, lin_);
  }

  void plan_weights(MemoryPlan& m) {
    norm1_.plan_weights(m);
    norm2_.plan_weights(m);
    for_each_linear([&](auto& l) { l.plan_weights(m); });
  }
  void plan_grads(MemoryPlan& m) {
    norm1_.plan_grads(m);
    norm2_.plan_grads(m);
    for_each_linear([&](auto& l) { l.plan_grads(m); });
  }
  void load(WeightSource& src, cudaStream_t stream) {
    Matrix w(1, dims_.hidden);
    src.read(prefix_ + ".input_layernorm.weight", w);
    norm1_.upload(w, stream);
    src.read(prefix_ + ".post_attention_layernorm.weight", w);
    norm2_.upload(w, stream);
    for_each_linear([&](auto& l) { l.load(src, stream); });
  }
  void base_weights(std::vector<WeightDestination>& out) const {
    out.push_back(norm1_.destination());
    out.push_back(norm2_.destination());
    for_each_linear([&](const auto& l) { l.base_weights(out); });
  }
  // After the loader wrote the bf16 tensors: trained norms and projections take their fp32 masters.
  void widen_masters(cudaStream_t stream) {
    norm1_.widen_master(stream);
    norm2_.widen_master(stream);
    for_each_linear([&](auto& l) { l.widen_masters(stream); });
  }
  void fill_random(std::uint64_t seed, cudaStream_t stream) {
    fill_value(norm1_.bf16_copy(), dims_.hidden, 1.0f, stream);
    fill_value(norm2_.bf16_copy(), dims_.hidden, 1.0f, stream);
    norm1_.widen_master(stream);
    norm2_.widen_master(stream);
    std::uint64_t p = 0;
    for_each_linear([&](auto& l) { l.fill_random(seed * 16 + ++p, stream); });
  }
  // The layer's trained tensors in the CPU layer's order: its norms, then the seven projections.
  void parameters(std::vector<DeviceParameter>& out) const {
    norm1_.parameters(out);
    norm2_.parameters(out);
    for_each_linear([&](const auto& l) { l.parameters(out); });
  }

  std::array<int, kProjections> padded_ranks() const { return weights().padded_ranks(); }
  // Weights of the largest projection (the size of an NF4 model's dequantisation scratch).
  std::size_t largest_projection() const {
    std::size_t n = 0;
    for_each_linear([&](const auto& l) {
      n = std::max(n, static_cast<std::size_t>(l.weights().shape().in * l.weights().shape().out));
    });
    return n;
  }
  LayerWeights weights() const {
    std::array<ProjectionWeights, kProjections> w;
    std::size_t p = 0;
    for_each_linear([&](const auto& l) { w[p++] = l.weights(); });
    return LayerWeights(dims_, norm1_.bf16_copy(), norm2_.bf16_copy(), w);
  }
  const LayerDims& dims() const { return dims_; }

  // ---- forward: x [T, hidden] -> out [T, hidden] (out may not alias x) -------------------------
  // (The braces scope each call's StepProfile part: c.part() is a no-op unless profiling.)
  void forward(GemmContext c, const bf16* x, bf16* out, LayerActivations& a, StepScratch& s, int T,
               const Seeds& seeds) const {
    const LayerDims& d = dims_;
    {
      const ProfileScope e = c.part(StepPart::kElementwise);
      rms_norm_forward(a.n1, a.rstd1, x, norm1_.bf16_copy(), T, d.hidden, d.eps, c.stream);
    }
    lin<kQ>().forward(c, a.n1, a.q, a.xa[kQ], s.drop, T, seed(seeds, kQ));
    lin<kK>().forward(c, a.n1, a.k, a.xa[kK], s.drop, T, seed(seeds, kK));
    lin<kV>().forward(c, a.n1, a.v, a.xa[kV], s.drop, T, seed(seeds, kV));
    {
      const ProfileScope e = c.part(StepPart::kElementwise);
      rope_apply(a.q, s.rope, d.heads, d.head_dim, c.stream, false, a.k, d.kv_heads);  // q and k, one launch
    }
    {
      const ProfileScope e = c.part(StepPart::kAttention);
      const AttentionDims ad{d.heads, d.kv_heads, d.head_dim};
      attention_forward(a.attn, a.lse, a.q, a.k, a.v, ad, s.batch, c.stream);
    }
    lin<kO>().forward(c, a.attn, s.proj, a.xa[kO], s.drop, T, seed(seeds, kO));
    {
      const ProfileScope e = c.part(StepPart::kElementwise);
      add_rms_norm_forward(a.h, a.n2, a.rstd2, x, s.proj, norm2_.bf16_copy(), T, d.hidden, d.eps, c.stream);
    }
    lin<kGate>().forward(c, a.n2, a.gate, a.xa[kGate], s.drop, T, seed(seeds, kGate));
    lin<kUp>().forward(c, a.n2, a.up, a.xa[kUp], s.drop, T, seed(seeds, kUp));
    {
      const ProfileScope e = c.part(StepPart::kElementwise);
      swiglu_forward(s.act, a.gate, a.up, T, d.inter, d.inter, c.stream);
    }
    lin<kDown>().forward(c, s.act, s.proj, a.xa[kDown], s.drop, T, seed(seeds, kDown));
    const ProfileScope e = c.part(StepPart::kElementwise);
    residual_add(out, a.h, s.proj, static_cast<long long>(T) * d.hidden, c.stream);
  }

  // ---- backward: dstream holds d(out) on entry and d(x) on return ------------------------------
  // rebuild_mlp (SelectiveRecompute): n1, n2, gate and up hold another layer's values; the forward's
  // kernels rebuild them first from x and h, on the same inputs and dropout seeds, so the
  // backward reads the forward's bits (they also rewrite this layer's rstd1, rstd2 and gate/up
  // x A^T with the values those already hold).
  void backward(GemmContext c, const bf16* x, bf16* dstream, LayerActivations& a, StepScratch& s, int T,
                const Seeds& seeds, bool rebuild_mlp = false) const {
    const LayerDims& d = dims_;
    if (rebuild_mlp) {
      {
        const ProfileScope e = c.part(StepPart::kElementwise);
        rms_norm_forward(a.n1, a.rstd1, x, norm1_.bf16_copy(), T, d.hidden, d.eps, c.stream);
        rms_norm_forward(a.n2, a.rstd2, a.h, norm2_.bf16_copy(), T, d.hidden, d.eps, c.stream);
      }
      lin<kGate>().forward(c, a.n2, a.gate, a.xa[kGate], s.drop, T, seed(seeds, kGate));
      lin<kUp>().forward(c, a.n2, a.up, a.xa[kUp], s.drop, T, seed(seeds, kUp));
    }
    // MLP branch. down's input (the SwiGLU product) was not kept: recompute it for down's dA or dW,
    // on the side stream beside down's input-gradient GEMM where down's backward joins it first.
    if (lin<kDown>().reads_input_in_backward()) {
      const GemmContext at = runs_beside(lin<kDown>(), c) ? c.beside() : c;
      const ProfileScope e = at.part(StepPart::kElementwise);
      swiglu_forward(s.act, a.gate, a.up, T, d.inter, d.inter, at.stream);
    }
    lin<kDown>().backward(c, s.act, dstream, s.dact, false, a.xa[kDown], s.dxa, s.drop, T, seed(seeds, kDown));
    {
      const ProfileScope e = c.part(StepPart::kElementwise);
      swiglu_backward(a.gate, a.up, s.dact, a.gate, a.up, T, d.inter, d.inter, c.stream);  // in place: dgate, dup
    }
    lin<kGate>().backward(c, a.n2, a.gate, s.dn, false, a.xa[kGate], s.dxa, s.drop, T, seed(seeds, kGate));
    lin<kUp>().backward(c, a.n2, a.up, s.dn, true, a.xa[kUp], s.dxa, s.drop, T, seed(seeds, kUp));
    {
      const ProfileScope e = c.part(StepPart::kElementwise);
      rms_norm_backward(dstream, norm2_.grad(), s.dn, a.h, norm2_.bf16_copy(), a.rstd2, T, d.hidden, c.stream, true);
    }

    // Attention branch.
    lin<kO>().backward(c, a.attn, dstream, s.dattn, false, a.xa[kO], s.dxa, s.drop, T, seed(seeds, kO));
    {
      const ProfileScope e = c.part(StepPart::kAttention);
      const AttentionDims ad{d.heads, d.kv_heads, d.head_dim};
      attention_backward(s.dq, s.dk, s.dv, s.attn_scratch, s.dattn, a.attn, a.q, a.k, a.v, a.lse, ad, s.batch,
                         c.stream);
    }
    {
      const ProfileScope e = c.part(StepPart::kElementwise);
      rope_apply(s.dq, s.rope, d.heads, d.head_dim, c.stream, true, s.dk, d.kv_heads);
    }
    lin<kQ>().backward(c, a.n1, s.dq, s.dn, false, a.xa[kQ], s.dxa, s.drop, T, seed(seeds, kQ));
    lin<kK>().backward(c, a.n1, s.dk, s.dn, true, a.xa[kK], s.dxa, s.drop, T, seed(seeds, kK));
    lin<kV>().backward(c, a.n1, s.dv, s.dn, true, a.xa[kV], s.dxa, s.drop, T, seed(seeds, kV));
    const ProfileScope e = c.part(StepPart::kElementwise);
    rms_norm_backward(dstream, norm1_.grad(), s.dn, x, norm1_.bf16_copy(), a.rstd1, T, d.hidden, c.stream, true);
  }

 private:
  template <int P> const auto& lin() const { return std::get<P>(lin_); }
  static const std::uint64_t* seed(Seeds s, int p) { return s ? s + p : nullptr; }

  std::string prefix_;
  LayerDims dims_;
  std::tuple<Lin<typename L::q>, Lin<typename L::k>, Lin<typename L::v>, Lin<typename L::o>, Lin<typename L::gate>,
             Lin<typename L::up>, Lin<typename L::down>>
      lin_;
  ModelWeight<L::train_norms> norm1_, norm2_;
};

}  // namespace peft::cuda
