// The CUDA model's KV cache for generation, with the same contract as the CPU's KvCache
// (peft/layers/kv_cache.hpp): length(), truncate(n), clear(), reserve(n).
//
// Per layer, post-RoPE keys and values [capacity, kv_heads * head_dim] bf16 (HF's DynamicCache
// layout). Everything a decode step touches lives here too, in one arena allocated when the cache
// is made: the one-token activations, the fp32 logits row, the attention partials, the device
// state (length, next token, ids written: greedy_step.cuh), pinned staging for the host and the
// captured decode graph. Why per cache: a captured graph bakes in every pointer it uses, so the
// graph belongs with the buffers it was captured on; a step never allocates.
//
// The host's length_ is the truth; the decode step reads the length from device memory (so one
// graph replays at every position) and each call from the host writes it there first.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "peft/kernels/cuda/decode_attention.cuh"
#include "peft/kernels/cuda/device_arena.cuh"
#include "peft/kernels/cuda/gemv.cuh"
#include "peft/kernels/cuda/greedy_step.cuh"
#include "peft/kernels/cuda/memory_plan.cuh"
#include "peft/kernels/cuda/rope.cuh"
#include "peft/core/error.hpp"

namespace peft::cuda {

// Sizes of everything a cache holds.
struct KvCacheShape {
  int layers, hidden, q_dim, kv_dim, inter, vocab, heads, kv_heads, head_dim;
  int max_rank;        // padded LoRA rank of the widest adapter (0: none)
  int prefill_tokens;  // longest chunk a prefill runs at once (the model's max_tokens, at most capacity)
  std::int64_t capacity;
};

class CudaKvCache {
 public:
  CudaKvCache(const KvCacheShape& s, int device) : s_(s) {
    require(s.capacity > 0 && s.capacity <= (std::int64_t{1} << 30), "KV cache capacity {} out of range", s.capacity);
    PEFT_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device));
    MemoryPlan count;
    plan(count);
    arena_ = std::make_unique<DeviceArena>(count.bytes());
    MemoryPlan real(*arena_);
    plan(real);
    PEFT_CUDA_CHECK(cudaMallocHost(&pinned_, pinned_bytes()));
    // The fused kernels' counters start at 0 (grid_sync.cuh); each launch leaves them so.
    PEFT_CUDA_CHECK(cudaMemset(b_.gemv.sync, 0, kGemvSyncWords * sizeof(unsigned)));
    PEFT_CUDA_CHECK(cudaMemset(b_.attn_counters, 0, attn_counters_ * sizeof(unsigned)));
    PEFT_CUDA_CHECK(cudaDeviceSynchronize());
  }
  ~CudaKvCache() { release(); }
  CudaKvCache(CudaKvCache&& o) noexcept { *this = std::move(o); }
  CudaKvCache& operator=(CudaKvCache&& o) noexcept {
    if (this != &o) {
      release();
      s_ = o.s_;
      arena_ = std::move(o.arena_);
      k_ = std::move(o.k_);
      v_ = std::move(o.v_);
      b_ = o.b_;
      pinned_ = std::exchange(o.pinned_, nullptr);
      graph_ = std::exchange(o.graph_, nullptr);
      length_ = o.length_;
      sms_ = o.sms_;
      attn_counters_ = o.attn_counters_;
      graph_kernels_ = o.graph_kernels_;
      use_graph = o.use_graph;
      use_gemv = o.use_gemv;
      warmed_ = o.warmed_;
    }
    return *this;
  }
  CudaKvCache(const CudaKvCache&) = delete;
  CudaKvCache& operator=(const CudaKvCache&) = delete;

  std::int64_t length() const { return length_; }
  std::int64_t capacity() const { return s_.capacity; }
  void truncate(std::int64_t n) {
    require(n >= 0 && n <= length_, "CudaKvCache::truncate({}) outside the {} cached tokens", n, length_);
    length_ = n;
  }
  void clear() { length_ = 0; }
  void reserve(std::int64_t tokens) {
    require(tokens <= s_.capacity, "the CUDA KV cache holds {} tokens; {} were asked for (make_kv_cache(max_context))",
            s_.capacity, tokens);
  }

  // Set both before the first one-token step: the captured graph keeps the choice.
  // Replay a captured graph for one-token steps (false: run them eagerly; tests compare both).
  bool use_graph = true;
  // One-token steps on the one-row kernels (gemv.cuh); false: on cuBLASLt, as a prefill of 1.
  bool use_gemv = true;

  // ---- for the decode code (model/decode.cuh) ----
  struct Buffers {
    bf16 *x = nullptr, *h = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *attn = nullptr, *act = nullptr;
    float *xa = nullptr, *logits = nullptr, *attn_scratch = nullptr;
    std::int32_t *state = nullptr, *ids = nullptr, *positions = nullptr, *cu = nullptr, *out_ids = nullptr;
    unsigned* attn_counters = nullptr;  // decode_attention's merge counters
    GemvScratch gemv;                   // the fused one-row products' hand-offs (gemv.cuh)
    RopeTable rope;
  };
  const KvCacheShape& shape() const { return s_; }
  bf16* k(std::size_t layer) { return k_[layer]; }
  bf16* v(std::size_t layer) { return v_[layer]; }
  const Buffers& buffers() const { return b_; }
  float* xa(int projection) const { return b_.xa + static_cast<std::size_t>(projection) * s_.max_rank; }
  int sms() const { return sms_; }
  void set_length(std::int64_t n) { length_ = n; }
  cudaGraphExec_t& graph() { return graph_; }
  bool& warmed() { return warmed_; }  // a one-token step has run (the next one is captured)
  std::size_t& graph_kernels() { return graph_kernels_; }  // nodes of the captured step (0: none yet)
  // Pinned staging: ids [prefill_tokens], state [kSlots], logits [vocab], cu_seqlens [2].
  std::int32_t* host_ids() { return static_cast<std::int32_t*>(pinned_); }
  std::int32_t* host_state() { return host_ids() + s_.prefill_tokens; }
  float* host_logits() { return reinterpret_cast<float*>(host_state() + DecodeState::kSlots); }
  std::int32_t* host_cu() { return reinterpret_cast<std::int32_t*>(host_logits() + s_.vocab); }
  std::size_t bytes() const { return arena_->capacity(); }

 private:
  void plan(MemoryPlan& m) {
    const auto cap = static_cast<std::size_t>(s_.capacity);
    k_.assign(static_cast<std::size_t>(s_.layers), nullptr);
    v_.assign(static_cast<std::size_t>(s_.layers), nullptr);
    for (int l = 0; l < s_.layers; ++l) {
      k_[l] = m.take<bf16>(cap * s_.kv_dim, "KV cache keys");
      v_[l] = m.take<bf16>(cap * s_.kv_dim, "KV cache values");
    }
    b_.x = m.take<bf16>(s_.hidden, "decode x");
    b_.h = m.take<bf16>(s_.hidden, "decode h");
    b_.q = m.take<bf16>(s_.q_dim, "decode q");
    b_.k = m.take<bf16>(s_.kv_dim, "decode k");
    b_.v = m.take<bf16>(s_.kv_dim, "decode v");
    b_.attn = m.take<bf16>(s_.q_dim, "decode attention output");
    b_.act = m.take<bf16>(s_.inter, "decode swiglu");
    const std::size_t rank = static_cast<std::size_t>(s_.max_rank > 0 ? s_.max_rank : 1);
    b_.xa = m.take<float>(7 * rank, "decode lora xa");
    const int widest = std::max({s_.hidden, s_.q_dim, s_.inter});
    b_.gemv.partial_floats = 3 * rank * static_cast<std::size_t>((widest + 1023) / 1024);  // gemv.cuh's chunks
    b_.gemv.partial = m.take<float>(b_.gemv.partial_floats, "decode lora xa partials");
    b_.gemv.sync = m.take<unsigned>(kGemvSyncWords, "decode gemv counters");
    b_.gemv.xa_copies = m.take<float>(kGemvCopies * kGemvXaCopyFloats, "decode lora xa copies");
    b_.gemv.best_slots = 8 * sms_;  // at most 8 blocks of 256 threads are resident per SM
    b_.gemv.best = m.take<float>(2 * static_cast<std::size_t>(b_.gemv.best_slots), "decode argmax partials");
    b_.logits = m.take<float>(s_.vocab, "decode logits");
    const DecodeAttentionDims ad{s_.heads, s_.kv_heads, s_.head_dim};
    b_.attn_scratch = m.take<float>(
        std::max(decode_attention_scratch_floats(1, ad), decode_attention_scratch_floats(s_.prefill_tokens, ad)),
        "decode attention partials");
    attn_counters_ = std::max(decode_attention_counters(1, ad), decode_attention_counters(s_.prefill_tokens, ad));
    b_.attn_counters = m.take<unsigned>(attn_counters_, "decode attention counters");
    const auto t = static_cast<std::size_t>(s_.prefill_tokens);
    b_.state = m.take<std::int32_t>(DecodeState::kSlots, "decode state");
    b_.ids = m.take<std::int32_t>(t, "decode ids");
    b_.positions = m.take<std::int32_t>(t, "decode positions");
    b_.cu = m.take<std::int32_t>(2, "decode cu_seqlens");
    b_.out_ids = m.take<std::int32_t>(cap, "decode greedy ids");
    b_.rope.cos = m.take<float>(t * (s_.head_dim / 2), "decode rope cos");
    b_.rope.sin = m.take<float>(t * (s_.head_dim / 2), "decode rope sin");
  }
  std::size_t pinned_bytes() const {
    const std::size_t ints = static_cast<std::size_t>(s_.prefill_tokens) + DecodeState::kSlots + 2;
    return ints * 4 + static_cast<std::size_t>(s_.vocab) * 4;
  }
  void release() noexcept {
    if (graph_) cudaGraphExecDestroy(graph_);
    graph_ = nullptr;
    if (pinned_) cudaFreeHost(pinned_);
    pinned_ = nullptr;
    arena_.reset();
  }

  KvCacheShape s_{};
  std::unique_ptr<DeviceArena> arena_;
  std::vector<bf16*> k_, v_;
  Buffers b_;
  void* pinned_ = nullptr;
  cudaGraphExec_t graph_ = nullptr;
  std::int64_t length_ = 0;
  int sms_ = 132;
  std::size_t attn_counters_ = 0, graph_kernels_ = 0;
  bool warmed_ = false;
};

}  // namespace peft::cuda
