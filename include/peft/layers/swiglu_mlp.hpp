// Qwen2 MLP: down(silu(gate(x)) * up(x)), no biases. Forward and backward side by side.
#pragma once
#include <string>

#include "peft/kernels/cpu/swiglu.hpp"
#include "peft/io/model_config.hpp"
#include "peft/layers/forward_context.hpp"
#include "peft/layers/frozen_linear.hpp"
#include "peft/layers/full_linear.hpp"
#include "peft/layers/lora_linear.hpp"

namespace peft {

template <ProjectionLayout L, PrecisionPolicy P>
class SwiGluMlp {
 public:
  SwiGluMlp(const std::string& prefix, const ModelConfig& c, const LoraConfig& lora)
      : gate_(prefix + ".gate_proj", {c.hidden_size, c.intermediate_size, false}, lora),
        up_(prefix + ".up_proj", {c.hidden_size, c.intermediate_size, false}, lora),
        down_(prefix + ".down_proj", {c.intermediate_size, c.hidden_size, false}, lora) {}

  template <class F> void for_each_linear(F&& f) { f(gate_); f(up_); f(down_); }

  void forward(const Matrix& x, const ForwardContext& ctx, Matrix& out) {
    gate_.forward(x, g_, ctx.dropout);
    up_.forward(x, u_, ctx.dropout);
    cpu::swiglu_forward(g_, u_, act_);
    P::store(act_);
    down_.forward(act_, out, ctx.dropout);
  }

  void backward(const Matrix& x, const Matrix& dout, Matrix& dx) {
    Matrix dact, dg, du, tmp;
    down_.backward(act_, dout, dact);
    cpu::swiglu_backward(dact, g_, u_, dg, du);
    gate_.backward(x, dg, dx);
    up_.backward(x, du, tmp);
    dx += tmp;
  }

 private:
  Linear<typename L::gate, P> gate_;
  Linear<typename L::up, P> up_;
  Linear<typename L::down, P> down_;
  Matrix g_, u_, act_;
};

}  // namespace peft
