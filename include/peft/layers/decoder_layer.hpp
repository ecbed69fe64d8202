// One Qwen2 decoder layer, pre-norm residual:
//   h = x + attn(norm1(x));  out = h + mlp(norm2(h))
// The backward walks the same lines in reverse; the residual stream's gradient is the sum of
// the skip path and the branch, which is why the norms add into dx.
#pragma once
#include <string>

#include "peft/layers/rms_norm.hpp"
#include "peft/layers/self_attention.hpp"
#include "peft/layers/swiglu_mlp.hpp"

namespace peft {

template <ProjectionLayout L, PrecisionPolicy P>
class DecoderLayer {
 public:
  DecoderLayer(int index, const ModelConfig& c, const LoraConfig& lora)
      : prefix_("model.layers." + std::to_string(index)),
        input_norm_(prefix_ + ".input_layernorm", c.hidden_size, c.rms_norm_eps),
        attn_(prefix_ + ".self_attn", c, lora),
        post_norm_(prefix_ + ".post_attention_layernorm", c.hidden_size, c.rms_norm_eps),
        mlp_(prefix_ + ".mlp", c, lora) {}

  // f(linear) for all seven projections, attention first.
  template <class F> void for_each_linear(F&& f) { attn_.for_each_linear(f); mlp_.for_each_linear(f); }
  template <class F> void for_each_norm(F&& f) { f(input_norm_); f(post_norm_); }

  void forward(const Matrix& x, const ForwardContext& ctx, Matrix& out) {
    forward_with(x, ctx, out, [&](const Matrix& n, Matrix& a) { attn_.forward(n, ctx, a); });
  }

  // Generation: the newest tokens of one sequence against the layer's KV cache (see SelfAttention).
  Eigen::Index forward_cached(const Matrix& x, const ForwardContext& ctx, LayerKvCache& cache, Eigen::Index past,
                              Matrix& out) {
    Eigen::Index total = 0;
    forward_with(x, ctx, out,
                 [&](const Matrix& n, Matrix& a) { total = attn_.forward_cached(n, ctx, cache, past, a); });
    return total;
  }

  // dout: gradient w.r.t. this layer's output; dx: overwritten with the gradient w.r.t. its input.
  void backward(const Matrix& dout, const ForwardContext& ctx, Matrix& dx) {
    Matrix dbranch;
    Matrix dh = dout;
    mlp_.backward(n2_, dout, dbranch);
    post_norm_.backward(dbranch, dh);
    dx = dh;
    attn_.backward(n1_, dh, ctx, dbranch);
    input_norm_.backward(dbranch, dx);
  }

 private:
  template <class Attention>
  void forward_with(const Matrix& x, const ForwardContext& ctx, Matrix& out, Attention&& attention) {
    x_ = x;
    input_norm_.forward(x_, n1_);
    attention(n1_, out);
    h_ = x_ + out;
    P::store(h_);
    post_norm_.forward(h_, n2_);
    mlp_.forward(n2_, ctx, out);
    out += h_;
    P::store(out);
  }

  std::string prefix_;
  RmsNorm<P, L::train_norms> input_norm_;
  SelfAttention<L, P> attn_;
  RmsNorm<P, L::train_norms> post_norm_;
  SwiGluMlp<L, P> mlp_;
  Matrix x_, n1_, h_, n2_;  // forward cache
};

}  // namespace peft
