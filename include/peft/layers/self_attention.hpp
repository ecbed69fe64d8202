// Qwen2 self-attention: q/k/v projections (with bias), RoPE on q and k, causal grouped-query
// attention within each packed sample, o projection (no bias). Forward and backward side by side;
// the forward caches the post-RoPE q, k, v, the probabilities and the pre-o_proj output.
// forward_cached is generation's path: the same projections, attention over a KV cache.
#pragma once
#include <string>

#include "peft/kernels/cpu/attention.hpp"
#include "peft/kernels/cpu/rope.hpp"
#include "peft/layers/kv_cache.hpp"
#include "peft/io/model_config.hpp"
#include "peft/layers/forward_context.hpp"
#include "peft/layers/frozen_linear.hpp"
#include "peft/layers/full_linear.hpp"
#include "peft/layers/lora_linear.hpp"

namespace peft {

template <ProjectionLayout L, PrecisionPolicy P>
class SelfAttention {
 public:
  SelfAttention(const std::string& prefix, const ModelConfig& c, const LoraConfig& lora)
      : shape_{static_cast<int>(c.num_attention_heads), static_cast<int>(c.num_key_value_heads),
               static_cast<int>(c.head_dim)},
        q_(prefix + ".q_proj", {c.hidden_size, c.num_attention_heads * c.head_dim, true}, lora),
        k_(prefix + ".k_proj", {c.hidden_size, c.num_key_value_heads * c.head_dim, true}, lora),
        v_(prefix + ".v_proj", {c.hidden_size, c.num_key_value_heads * c.head_dim, true}, lora),
        o_(prefix + ".o_proj", {c.num_attention_heads * c.head_dim, c.hidden_size, false}, lora) {}

  template <class F> void for_each_linear(F&& f) { f(q_); f(k_); f(v_); f(o_); }

  void forward(const Matrix& x, const ForwardContext& ctx, Matrix& out) {
    project(x, ctx);
    cpu::attention_forward(q, k, v, shape_, ctx.cu_seqlens, attn_, probs_);
    P::store(attn_);
    o_.forward(attn_, out, ctx.dropout);
  }

  // Generation: x holds the newest tokens of one sequence (ctx.rope at their positions); their k
  // and v join `cache`, whose first `past` rows hold the earlier tokens. Returns the new length.
  Eigen::Index forward_cached(const Matrix& x, const ForwardContext& ctx, LayerKvCache& cache, Eigen::Index past,
                              Matrix& out) {
    project(x, ctx);
    const Eigen::Index total = cache.append(k, v, past);
    cpu::attention_forward_cached(q, cache.k.topRows(total), cache.v.topRows(total), shape_, attn_);
    P::store(attn_);
    o_.forward(attn_, out, ctx.dropout);
    return total;
  }

  // dx overwritten with the gradient w.r.t. the block's input x.
  void backward(const Matrix& x, const Matrix& dout, const ForwardContext& ctx, Matrix& dx) {
    Matrix dattn, dq, dk, dv, tmp;
    o_.backward(attn_, dout, dattn);
    cpu::attention_backward(dattn, q, k, v, shape_, ctx.cu_seqlens, probs_, dq, dk, dv);
    cpu::apply_rope(dq, shape_.heads, shape_.head_dim, ctx.rope, true);
    cpu::apply_rope(dk, shape_.kv_heads, shape_.head_dim, ctx.rope, true);
    q_.backward(x, dq, dx);
    k_.backward(x, dk, tmp);
    dx += tmp;
    v_.backward(x, dv, tmp);
    dx += tmp;
  }

  Matrix q, k, v;  // post-RoPE, kept for backward (and read by tests)

 private:
  // q, k, v of x, rotated, in the activation dtype.
  void project(const Matrix& x, const ForwardContext& ctx) {
    q_.forward(x, q, ctx.dropout);
    k_.forward(x, k, ctx.dropout);
    v_.forward(x, v, ctx.dropout);
    cpu::apply_rope(q, shape_.heads, shape_.head_dim, ctx.rope);
    cpu::apply_rope(k, shape_.kv_heads, shape_.head_dim, ctx.rope);
    P::store(q);
    P::store(k);
  }

  cpu::AttentionShape shape_;
  Linear<typename L::q, P> q_;
  Linear<typename L::k, P> k_;
  Linear<typename L::v, P> v_;
  Linear<typename L::o, P> o_;
  Matrix attn_;
  std::vector<Matrix> probs_;
};

}  // namespace peft
