// Generation on the CUDA model: prefill and one-token decode over a device KV cache
// (model/kv_cache.cuh), LoRA applied unmerged (base + scaling * (x A^T) B^T, no dropout), as the
// training forward computes it. The model's make_kv_cache / forward_cached call into here.
//
// Prefill (n > 1 new tokens, in chunks of the cache's prefill_tokens: the model's max_tokens, or
// the cache's capacity where that is less) runs the training forward's
// pieces on the model's activation buffers: cuBLASLt projections, the varlen flash attention when
// the cache is empty, else decode_attention over the cached keys. Each layer's rotated k and v go
// to the cache rows past .. past + n - 1 (kv_append.cuh).
//
// Decode (n = 1; bf16 bases: an NF4 one takes the projections' path below, where each frozen
// product is kernels/cuda/nf4_gemv.cuh's fused NF4 GEMV, reading the codes once)
// is bound by reading every weight once per token, so it is as few dependent
// kernels as the data flow allows: per layer 5, LoRA on or off (gemv.cuh's fused one-row products
// and decode_attention.cuh's single kernel):
//   1. RMSNorm + x A^T of q/k/v + q/k/v + bias + LoRA + RoPE, k and v appended to the cache;
//   2. attention over the cache (GQA packed, splits merged in the kernel);
//   3. x A^T of o + o + LoRA + residual;
//   4. RMSNorm + x A^T of gate/up + gate/up + LoRA + SwiGLU;
//   5. x A^T of down + down + LoRA + residual.
// Per token besides: the position's cos/sin (2 tiny kernels), the embedding row, and the lm_head
// with the greedy argmax folded in. The step reads its position and token from device memory
// (the cache's state), so it is captured once into a CUDA graph and replayed at every position,
// its kernels chained by programmatic dependent launch (pdl.cuh); greedy decoding (greedy())
// picks the next token on the device and never waits for the host between steps.
#pragma once
#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "peft/kernels/cuda/decode_attention.cuh"
#include "peft/kernels/cuda/embedding.cuh"
#include "peft/kernels/cuda/gemv.cuh"
#include "peft/kernels/cuda/greedy_step.cuh"
#include "peft/kernels/cuda/kv_append.cuh"
#include "peft/layers/cuda/decoder_layer.cuh"
#include "peft/models/cuda/kv_cache.cuh"
#include "peft/core/tensor.hpp"

namespace peft::cuda {

template <class Model>
class Decoder {
 public:
  explicit Decoder(Model& m) : m_(m) {}

  // max_context 0: the config's max_position_embeddings, at most 32768 tokens.
  CudaKvCache make_cache(std::int64_t max_context) const {
    const auto& c = m_.cfg_;
    const LayerDims& d = m_.layer_weights_.front().dims();
    int rank = 0;
    for (const auto& layer : m_.layer_weights_)
      for (int r : layer.padded_ranks()) rank = std::max(rank, r);
    const std::int64_t cap = max_context > 0 ? max_context : std::min<std::int64_t>(c.max_position_embeddings, 32768);
    // A small cache needs no prefill scratch longer than itself (the attention partials grow with it).
    const int prefill = static_cast<int>(std::min<std::int64_t>(m_.opt_.max_tokens, cap));
    return CudaKvCache({static_cast<int>(c.num_hidden_layers), d.hidden, d.q_dim(), d.kv_dim(), d.inter,
                        static_cast<int>(c.vocab_size), d.heads, d.kv_heads, d.head_dim, rank, prefill, cap},
                       m_.opt_.device);
  }

  // Logits [1, vocab] (fp32) after the last of `ids` ([ids, vocab] with all_rows).
  Matrix forward_cached(std::span<const std::int32_t> ids, CudaKvCache& cache, bool all_rows) {
    require(!ids.empty(), "forward_cached: no tokens to run");
    require(cache.length() + static_cast<std::int64_t>(ids.size()) <= cache.capacity(),
            "forward_cached: {} cached + {} new tokens exceed the KV cache's capacity {} (make_kv_cache(max_context))",
            cache.length(), ids.size(), cache.capacity());
    validate_token_ids(ids, m_.vocab());
    if (ids.size() == 1) {
      set_state(cache, cache.length(), ids[0]);
      step(cache);
      cache.set_length(cache.length() + 1);
      return logits_to_host(cache, nullptr);
    }
    Matrix out(all_rows ? static_cast<Eigen::Index>(ids.size()) : 1, m_.vocab());
    const std::size_t chunk = static_cast<std::size_t>(cache.shape().prefill_tokens);
    for (std::size_t at = 0; at < ids.size(); at += chunk) {
      const std::size_t n = std::min(chunk, ids.size() - at);
      prefill(ids.subspan(at, n), cache);
      const bool last = at + n == ids.size();
      for (std::size_t r = all_rows ? 0 : n - 1; r < n && (all_rows || last); ++r) {
        lm_head(m_.stream_x_[0] + r * m_.hidden(), cache);
        logits_to_host(cache, &out, all_rows ? static_cast<Eigen::Index>(at + r) : 0);
      }
    }
    return out;
  }

  // Greedy decoding on the device: prefills the prompt, then max_new - 1 captured steps launched
  // back to back; returns the max_new new ids (no stop tokens: benchmarks and parity tests).
  std::vector<std::int32_t> greedy(std::span<const std::int32_t> prompt, int max_new, CudaKvCache& cache) {
    require(max_new >= 1 && cache.length() + static_cast<std::int64_t>(prompt.size()) + max_new - 1 <= cache.capacity(),
            "greedy: {} prompt + {} new tokens do not fit the KV cache ({} cached, capacity {})", prompt.size(),
            max_new, cache.length(), cache.capacity());
    forward_cached(prompt, cache, false);
    const auto& b = cache.buffers();
    set_state(cache, cache.length() - 1, 0);  // the argmax "advances" onto the first new token
    greedy_advance(b.logits, m_.vocab(), b.state, b.out_ids, static_cast<int>(cache.capacity()), m_.stream_);
    for (int i = 1; i < max_new; ++i) step(cache);
    std::vector<std::int32_t> out(static_cast<std::size_t>(max_new));
    PEFT_CUDA_CHECK(cudaMemcpyAsync(out.data(), b.out_ids, out.size() * 4, cudaMemcpyDeviceToHost, m_.stream_));
    PEFT_CUDA_CHECK(cudaStreamSynchronize(m_.stream_));
    cache.set_length(cache.length() + max_new - 1);
    return out;
  }

 private:
  // The state a step reads: tokens cached, the next token, ids written so far (0).
  void set_state(CudaKvCache& cache, std::int64_t length, std::int32_t token) {
    std::int32_t* h = cache.host_state();
    h[DecodeState::kLength] = static_cast<std::int32_t>(length);
    h[DecodeState::kToken] = token;
    h[DecodeState::kWritten] = 0;
    h[3] = 0;
    PEFT_CUDA_CHECK(cudaMemcpyAsync(cache.buffers().state, h, DecodeState::kSlots * 4, cudaMemcpyHostToDevice,
                                    m_.stream_));
  }

  // One token: the captured graph (captured on the second call).
  void step(CudaKvCache& cache) {
    cudaGraphExec_t& g = cache.graph();
    if (!cache.use_graph || !m_.opt_.graphs) return step_kernels(cache);
    if (g == nullptr && !cache.warmed()) {  // the first step runs eagerly: one-time setup stays outside capture
      step_kernels(cache);
      cache.warmed() = true;
      return;
    }
    if (g == nullptr) {
      cudaGraph_t graph = nullptr;
      PEFT_CUDA_CHECK(cudaStreamBeginCapture(m_.stream_, cudaStreamCaptureModeThreadLocal));
      try {
        step_kernels(cache);
      } catch (...) {
        cudaStreamEndCapture(m_.stream_, &graph);
        if (graph) cudaGraphDestroy(graph);
        throw;
      }
      PEFT_CUDA_CHECK(cudaStreamEndCapture(m_.stream_, &graph));
      std::size_t nodes = 0;  // the kernels one token runs (decode_bench and the tests report it)
      if (cudaGraphGetNodes(graph, nullptr, &nodes) == cudaSuccess) cache.graph_kernels() = nodes;
      const cudaError_t st = cudaGraphInstantiate(&g, graph, 0);
      cudaGraphDestroy(graph);
      PEFT_CUDA_CHECK(st);
    }
    PEFT_CUDA_CHECK(cudaGraphLaunch(g, m_.stream_));
  }
  // Everything one decode step does; the token and position come from cache.buffers().state.
  void step_kernels(CudaKvCache& cache) {
    const auto& b = cache.buffers();
    const cudaStream_t st = m_.stream_;
    const std::int32_t* past = b.state + DecodeState::kLength;
    // The comparison point: cuBLASLt at M = 1 (decode_bench --cublas). Also an NF4 base's path:
    // the one-row kernels read bf16 weights; its projections' forward multiplies the NF4 codes.
    if (!cache.use_gemv || m_.scratch_.weight) {
      gemm_layers(cache, b.state + DecodeState::kToken, 1, false);
      lm_head(m_.stream_x_[0], cache);
      greedy_advance(b.logits, m_.vocab(), b.state, b.out_ids, static_cast<int>(cache.capacity()), st);
      return;
    }
    RopeTable rope = b.rope;
    rope_table_after(rope, b.positions, past, m_.inv_freq_, 1, m_.layer_weights_.front().dims().head_dim, st);
    embedding_forward(b.x, b.state + DecodeState::kToken, m_.embed_.bf16_copy(), 1, m_.vocab(), m_.hidden(), st);
    for (std::size_t l = 0; l < m_.layer_weights_.size(); ++l) decode_layer(l, cache, rope);
    lm_head(b.x, cache, true);  // and the argmax: the next token
  }

  // Projection p of a layer as a gemv segment; with an adapter, its x A^T is computed in the same
  // launch (into the cache's xa slot of p).
  static GemvSegment proj(const ProjectionWeights& lin, const CudaKvCache& cache, int p, bf16* y,
                          const bf16* residual = nullptr) {
    GemvSegment s;
    s.w = lin.weight();
    s.rows = static_cast<int>(lin.shape().out);
    s.bias = lin.bias();
    if (lin.adapter()) {
      s.a = lin.lora_a_bf16();
      s.xa = cache.xa(p);
      s.bt = lin.lora_bt_bf16();
      s.rp = lin.padded_rank();
      s.scale = lin.scaling();
    }
    s.residual = residual;
    s.y = y;
    return s;
  }
  GemvArgs args(const CudaKvCache& cache, const bf16* x, int in, const bf16* norm_w = nullptr, float eps = 0.0f) {
    GemvArgs a{x, in, norm_w, eps};
    a.scratch = cache.buffers().gemv;
    return a;
  }

  void decode_layer(std::size_t l, CudaKvCache& cache, const RopeTable& rope) {
    const LayerWeights& layer = m_.layer_weights_[l];
    const auto& lin = layer.linears();
    const LayerDims& d = layer.dims();
    const auto& b = cache.buffers();
    const cudaStream_t st = m_.stream_;
    const int sms = cache.sms();
    const std::int32_t* past = b.state + DecodeState::kLength;

    GemvArgs qkv = args(cache, b.x, d.hidden, layer.norm1_weight(), d.eps);
    qkv.seg[0] = proj(lin[kQ], cache, kQ, b.q);  // rotated in place
    qkv.seg[1] = proj(lin[kK], cache, kK, cache.k(l));
    qkv.seg[2] = proj(lin[kV], cache, kV, cache.v(l));
    qkv.seg[0].rope = qkv.seg[1].rope = true;
    qkv.seg[1].at_row = qkv.seg[2].at_row = true;  // the cache's row *past
    qkv.count = 3;
    qkv.rope_cos = rope.cos;
    qkv.rope_sin = rope.sin;
    qkv.head_dim = d.head_dim;
    qkv.row_at = past;
    gemv(qkv, sms, st);
    decode_attention(b.attn, b.attn_scratch, b.attn_counters, b.q, cache.k(l), cache.v(l), past, 1,
                     {d.heads, d.kv_heads, d.head_dim}, st);

    GemvArgs o = args(cache, b.attn, d.q_dim());
    o.seg[0] = proj(lin[kO], cache, kO, b.h, b.x);
    o.count = 1;
    gemv(o, sms, st);

    GemvArgs gu = args(cache, b.h, d.hidden, layer.norm2_weight(), d.eps);
    gu.seg[0] = proj(lin[kGate], cache, kGate, b.act);
    gu.seg[1] = proj(lin[kUp], cache, kUp, nullptr);
    gu.count = 2;
    gu.swiglu = true;
    gemv(gu, sms, st);

    GemvArgs down = args(cache, b.act, d.inter);
    down.seg[0] = proj(lin[kDown], cache, kDown, b.x, b.h);
    down.count = 1;
    gemv(down, sms, st);
  }

  // Final norm and lm_head of one hidden row into the cache's fp32 logits; with `argmax`, the
  // greedy choice advances the decode state as greedy_advance does (the step's last kernel).
  void lm_head(const bf16* x, CudaKvCache& cache, bool argmax = false) {
    const auto& b = cache.buffers();
    GemvArgs a = args(cache, x, m_.hidden(), m_.final_norm_.bf16_copy(), m_.eps());
    a.seg[0].w = m_.lm_weight();
    a.seg[0].rows = m_.vocab();
    a.seg[0].y32 = b.logits;
    a.count = 1;
    if (argmax) {
      a.state = b.state;
      a.out_ids = b.out_ids;
      a.out_capacity = static_cast<int>(cache.capacity());
    }
    gemv(a, cache.sms(), m_.stream_);
  }

  // Copies the logits row into `out` row `row` (a fresh [1, vocab] Matrix when out is null).
  Matrix logits_to_host(CudaKvCache& cache, Matrix* out, Eigen::Index row = 0) {
    const int V = m_.vocab();
    PEFT_CUDA_CHECK(cudaMemcpyAsync(cache.host_logits(), cache.buffers().logits, static_cast<std::size_t>(V) * 4,
                                    cudaMemcpyDeviceToHost, m_.stream_));
    PEFT_CUDA_CHECK(cudaStreamSynchronize(m_.stream_));
    Matrix fresh;
    if (!out) {
      fresh.resize(1, V);
      out = &fresh;
    }
    for (int v = 0; v < V; ++v) (*out)(row, v) = cache.host_logits()[v];
    return fresh;
  }

  // n > 1 tokens at positions cache.length() .. + n - 1, on the model's activation buffers; the
  // last hidden rows stay in stream_x_[0] for lm_head.
  void prefill(std::span<const std::int32_t> ids, CudaKvCache& cache) {
    const int n = static_cast<int>(ids.size());
    const int past = static_cast<int>(cache.length());
    const auto& b = cache.buffers();
    const cudaStream_t st = m_.stream_;
    std::copy(ids.begin(), ids.end(), cache.host_ids());
    PEFT_CUDA_CHECK(cudaMemcpyAsync(b.ids, cache.host_ids(), ids.size() * 4, cudaMemcpyHostToDevice, st));
    set_state(cache, past, ids.back());
    std::int32_t* cu = cache.host_cu();  // [0, n]: the varlen kernel's one sample
    cu[0] = 0;
    cu[1] = n;
    PEFT_CUDA_CHECK(cudaMemcpyAsync(b.cu, cu, 8, cudaMemcpyHostToDevice, st));
    PEFT_CUDA_CHECK(cudaStreamSynchronize(st));  // the pinned slots are reused by later calls
    gemm_layers(cache, b.ids, n, past == 0);
    cache.set_length(past + n);
  }


  // The training forward's pieces (cuBLASLt projections) for n tokens at positions *past ..,
  // ids on the device; the hidden rows are left in stream_x_[0]. empty: the cache held nothing.
  void gemm_layers(CudaKvCache& cache, const std::int32_t* ids, int n, bool empty) {
    const auto& b = cache.buffers();
    const cudaStream_t st = m_.stream_;
    RopeTable rope = b.rope;
    const std::int32_t* dpast = b.state + DecodeState::kLength;
    const int hd = m_.layer_weights_.front().dims().head_dim;
    rope_table_after(rope, b.positions, dpast, m_.inv_freq_, n, hd, st);

    bf16* x = m_.stream_x_[0];
    LayerActivations& a = m_.acts(0);
    StepScratch& s = m_.scratch_;
    const GemmContext c{*m_.gemm_, st, m_.scratch_.weight, nullptr, m_.opt_.lora_kernels};
    embedding_forward(x, ids, m_.embed_.bf16_copy(), n, m_.vocab(), m_.hidden(), st);
    for (std::size_t l = 0; l < m_.layer_weights_.size(); ++l) {
      const LayerWeights& layer = m_.layer_weights_[l];
      const auto& lin = layer.linears();
      const LayerDims& d = layer.dims();
      const long long nh = static_cast<long long>(n) * d.hidden;
      rms_norm_forward(a.n1, a.rstd1, x, layer.norm1_weight(), n, d.hidden, d.eps, st);
      lin[kQ].forward(c, a.n1, a.q, a.xa[kQ], nullptr, n, nullptr);
      lin[kK].forward(c, a.n1, a.k, a.xa[kK], nullptr, n, nullptr);
      lin[kV].forward(c, a.n1, a.v, a.xa[kV], nullptr, n, nullptr);
      rope_append_kv(a.q, a.k, a.v, cache.k(l), cache.v(l), dpast, rope, n, d.heads, d.kv_heads, d.head_dim, st);
      const AttentionDims ad{d.heads, d.kv_heads, d.head_dim};
      if (empty) {  // the cache holds exactly these n rows: the training forward's kernels
        const VarlenBatch vb{b.cu, 1, n, n};
        attention_forward(a.attn, a.lse, a.q, cache.k(l), cache.v(l), ad, vb, st);
      } else {
        decode_attention(a.attn, b.attn_scratch, b.attn_counters, a.q, cache.k(l), cache.v(l), dpast, n,
                         {d.heads, d.kv_heads, d.head_dim}, st);
      }
      lin[kO].forward(c, a.attn, s.proj, a.xa[kO], nullptr, n, nullptr);
      residual_add(a.h, x, s.proj, nh, st);
      rms_norm_forward(a.n2, a.rstd2, a.h, layer.norm2_weight(), n, d.hidden, d.eps, st);
      lin[kGate].forward(c, a.n2, a.gate, a.xa[kGate], nullptr, n, nullptr);
      lin[kUp].forward(c, a.n2, a.up, a.xa[kUp], nullptr, n, nullptr);
      swiglu_forward(s.act, a.gate, a.up, n, d.inter, d.inter, st);
      lin[kDown].forward(c, s.act, s.proj, a.xa[kDown], nullptr, n, nullptr);
      residual_add(x, a.h, s.proj, nh, st);
    }
  }

  Model& m_;
};

}  // namespace peft::cuda
