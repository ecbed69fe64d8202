// Finite-difference checks of every layer's hand-written backward (layers/): the input gradient
// and each trainable parameter's gradient, for L = sum(dy .* forward(x)) with a random dy.
// Layers are built from RandomWeights with fixed seeds; LoRA B is set non-zero (PEFT's init has
// B = 0, which would leave the adapter path and dA untested) and trainable norm weights are set
// away from 1. Tiny shapes: 7 tokens in two packed samples (4 + 3), hidden 8, heads 4, kv heads 2,
// head_dim 4, intermediate 12, LoRA r 2.
//
// Tolerance (criterion in support/gradcheck.hpp): the layers chain several float GEMMs, so the
// float noise in L is larger than in a single kernel; a fourth-order difference with h = 1e-2
// measured at most 2e-4 of the gradient's scale, so tol = 1e-3 of that scale (5x margin). A wrong
// formula is an O(1) error on that scale.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "peft/layers/decoder_layer.hpp"
#include "peft/layers/frozen_linear.hpp"
#include "peft/layers/full_linear.hpp"
#include "peft/layers/lora_linear.hpp"
#include "peft/layers/rms_norm.hpp"
#include "peft/layers/self_attention.hpp"
#include "peft/layers/swiglu_mlp.hpp"
#include "support/gradcheck.hpp"

using namespace peft;
using test::check_gradient;
using test::random_matrix;
using test::weighted_sum;
using test::kCuSeqlens;
using test::kPositions;

namespace {

constexpr double kTol = 1e-3;
constexpr test::GradCheckOptions kOpts{.step = 1e-2, .tol = kTol};

constexpr Eigen::Index kTokens = 7;

ModelConfig tiny_config() {
  ModelConfig c;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = 16;
  c.head_dim = 4;
  c.rope_theta = 100.0;  // angles at positions 1..3 are not small
  c.rms_norm_eps = 1e-6;
  return c;
}

LoraConfig tiny_lora(double dropout) {
  LoraConfig l;
  l.r = 2;
  l.lora_alpha = 4;  // scaling 2, so a dropped scaling would show
  l.lora_dropout = dropout;
  return l;
}

ForwardContext context_for(const ModelConfig& c, Rng* dropout) {
  return {kCuSeqlens, cpu::rope_table(kPositions, static_cast<int>(c.head_dim), c.rope_theta), dropout};
}

// Trainable tensors of a layer that has for_each_linear (and maybe for_each_norm).
template <class Layer>
ParameterList parameters_of(Layer& layer) {
  ParameterList out;
  layer.for_each_linear([&](auto& lin) { lin.parameters(out); });
  if constexpr (requires { layer.for_each_norm([](auto&) {}); })
    layer.for_each_norm([&](auto& n) { n.parameters(out); });
  return out;
}

bool ends_with(const std::string& s, std::string_view tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Base weights from RandomWeights(seed), PEFT's adapter init, then LoRA B and norm weights
// randomised so every path carries signal.
template <class Layer>
void init_layer(Layer& layer, std::uint64_t seed) {
  RandomWeights src(seed);
  layer.for_each_linear([&](auto& lin) { lin.load(src); });
  if constexpr (requires { layer.for_each_norm([](auto&) {}); })
    layer.for_each_norm([&](auto& n) { n.load(src); });
  Rng rng(seed + 1);
  layer.for_each_linear([&](auto& lin) {
    if constexpr (requires { lin.init_adapter(rng); }) lin.init_adapter(rng);
  });
  for (auto& p : parameters_of(layer)) {
    if (ends_with(p.name, "lora_B.weight")) *p.value = random_matrix(p.value->rows(), p.value->cols(), rng, 0.5f);
    if (p.name.find("norm") != std::string::npos)
      *p.value = Matrix::Ones(1, p.value->cols()) + random_matrix(1, p.value->cols(), rng, 0.3f);
  }
}

void zero_grads(ParameterList& ps) {
  for (auto& p : ps) p.grad->setZero();
}

// Every parameter's accumulated gradient against finite differences of `loss`.
template <class Loss>
void check_parameters(ParameterList& ps, Loss&& loss) {
  for (auto& p : ps) check_gradient(p.name, *p.value, *p.grad, loss, kOpts);
}

// q Full, k Lora, v Frozen, o Lora, gate Full, up Lora, down Full; norms train.
using MixedLayout = Projections<Full, Lora<>, Frozen, Lora<>, Full, Lora<>, Full, Frozen, false, true>;

}  // namespace

TEST_CASE("Linear<Frozen> input gradient matches finite differences", "[gradcheck][layers]") {
  Linear<Frozen, Fp32> lin("model.layers.0.self_attn.q_proj", {8, 12, true}, tiny_lora(0));
  RandomWeights src(21);
  lin.load(src);
  Rng rng(22);
  Matrix x = random_matrix(kTokens, 8, rng);
  const Matrix dy = random_matrix(kTokens, 12, rng);
  Matrix y, dx;
  lin.forward(x, y, nullptr);
  lin.backward(x, dy, dx);
  auto loss = [&] {
    Matrix out;
    lin.forward(x, out, nullptr);
    return weighted_sum(dy, out);
  };
  check_gradient("frozen dx", x, dx, loss, kOpts);
}

TEST_CASE("Linear<Full> gradients match finite differences and accumulate", "[gradcheck][layers]") {
  Linear<Full, Fp32> lin("model.layers.0.self_attn.k_proj", {8, 6, true}, tiny_lora(0));
  RandomWeights src(23);
  lin.load(src);
  ParameterList ps;
  lin.parameters(ps);
  REQUIRE(ps.size() == 2);  // weight, bias
  Rng rng(24);
  Matrix x = random_matrix(kTokens, 8, rng);
  const Matrix dy = random_matrix(kTokens, 6, rng);
  Matrix y, dx;
  lin.forward(x, y, nullptr);
  lin.backward(x, dy, dx);
  auto loss = [&] {
    Matrix out;
    lin.forward(x, out, nullptr);
    return weighted_sum(dy, out);
  };
  check_gradient("full dx", x, dx, loss, kOpts);
  check_parameters(ps, loss);

  // Parameter gradients accumulate (+=), the input gradient is overwritten.
  const Matrix dw1 = *ps[0].grad, db1 = *ps[1].grad;
  lin.forward(x, y, nullptr);
  lin.backward(x, dy, dx);
  CHECK((*ps[0].grad - 2.0f * dw1).cwiseAbs().maxCoeff() < 1e-5f);
  CHECK((*ps[1].grad - 2.0f * db1).cwiseAbs().maxCoeff() < 1e-5f);
  Matrix dx_again;
  lin.backward(x, dy, dx_again);
  CHECK(dx_again.isApprox(dx));
}

TEST_CASE("Linear<Lora> gradients match finite differences / with and without dropout", "[gradcheck][layers]") {
  for (const double dropout : {0.0, 0.3}) {
    SECTION("lora_dropout " + std::to_string(dropout)) {
      Linear<Lora<>, Fp32> lin("model.layers.0.mlp.up_proj", {8, 12, false}, tiny_lora(dropout));
      REQUIRE(lin.targeted());
      RandomWeights src(25);
      lin.load(src);
      Rng init(26);
      lin.init_adapter(init);
      ParameterList ps;
      lin.parameters(ps);
      REQUIRE(ps.size() == 2);  // lora_A, lora_B
      *ps[1].value = random_matrix(12, 2, init, 0.5f);

      Rng rng(27);
      Matrix x = random_matrix(kTokens, 8, rng);
      const Matrix dy = random_matrix(kTokens, 12, rng);
      // A fresh Rng(seed) per forward: every forward draws the same dropout mask, so the
      // differences see one fixed function of x, A and B.
      const std::uint64_t mask_seed = 28;
      auto forward = [&](Matrix& out) {
        Rng mask(mask_seed);
        lin.forward(x, out, dropout > 0 ? &mask : nullptr);
      };
      Matrix y, dx;
      forward(y);
      lin.backward(x, dy, dx);
      auto loss = [&] {
        Matrix out;
        forward(out);
        return weighted_sum(dy, out);
      };
      check_gradient("lora dx", x, dx, loss, kOpts);
      check_parameters(ps, loss);

      if (dropout > 0) {  // the mask is really applied: the output differs from the no-dropout one
        Matrix plain;
        lin.forward(x, plain, nullptr);
        CHECK((plain - y).cwiseAbs().maxCoeff() > 1e-3f);
      }
    }
  }
}

TEST_CASE("RmsNorm gradients match finite differences (dx is added to)", "[gradcheck][layers]") {
  RmsNorm<Fp32, true> norm("model.norm", 8, 1e-6);
  ParameterList ps;
  norm.parameters(ps);
  REQUIRE(ps.size() == 1);
  Rng rng(31);
  *ps[0].value = Matrix::Ones(1, 8) + random_matrix(1, 8, rng, 0.3f);
  Matrix x = random_matrix(kTokens, 8, rng);
  const Matrix dy = random_matrix(kTokens, 8, rng);
  Matrix y;
  norm.forward(x, y);
  const Matrix dx0 = random_matrix(kTokens, 8, rng);
  Matrix dx = dx0;
  norm.backward(dy, dx);
  auto loss = [&] {
    Matrix out;
    norm.forward(x, out);
    return weighted_sum(dy, out);
  };
  check_gradient("rms_norm dx (increment)", x, dx - dx0, loss, kOpts);
  check_parameters(ps, loss);
}

TEMPLATE_TEST_CASE("SelfAttention gradients match finite differences", "[gradcheck][layers]",
                   AllLinear<Lora<>>, MixedLayout) {
  const ModelConfig cfg = tiny_config();
  SelfAttention<TestType, Fp32> attn("model.layers.0.self_attn", cfg, tiny_lora(0));
  init_layer(attn, 41);
  ParameterList ps = parameters_of(attn);
  REQUIRE(!ps.empty());
  zero_grads(ps);
  const ForwardContext ctx = context_for(cfg, nullptr);
  Rng rng(42);
  Matrix x = random_matrix(kTokens, 8, rng);
  const Matrix dy = random_matrix(kTokens, 8, rng);
  Matrix y, dx;
  attn.forward(x, ctx, y);
  attn.backward(x, dy, ctx, dx);
  auto loss = [&] {
    Matrix out;
    attn.forward(x, ctx, out);
    return weighted_sum(dy, out);
  };
  check_gradient("self_attn dx", x, dx, loss, kOpts);
  check_parameters(ps, loss);
}

TEMPLATE_TEST_CASE("SwiGluMlp gradients match finite differences", "[gradcheck][layers]", AllLinear<Lora<>>,
                   MixedLayout) {
  const ModelConfig cfg = tiny_config();
  SwiGluMlp<TestType, Fp32> mlp("model.layers.0.mlp", cfg, tiny_lora(0));
  init_layer(mlp, 51);
  ParameterList ps = parameters_of(mlp);
  REQUIRE(!ps.empty());
  zero_grads(ps);
  const ForwardContext ctx = context_for(cfg, nullptr);
  Rng rng(52);
  Matrix x = random_matrix(kTokens, 8, rng, 2.0f);  // gate pre-activations span silu's bend
  const Matrix dy = random_matrix(kTokens, 8, rng);
  Matrix y, dx;
  mlp.forward(x, ctx, y);
  mlp.backward(x, dy, dx);
  auto loss = [&] {
    Matrix out;
    mlp.forward(x, ctx, out);
    return weighted_sum(dy, out);
  };
  check_gradient("mlp dx", x, dx, loss, kOpts);
  check_parameters(ps, loss);
}

TEMPLATE_TEST_CASE("DecoderLayer gradients match finite differences", "[gradcheck][layers]", AllLinear<Lora<>>,
                   MixedLayout) {
  for (const double dropout : {0.0, 0.25}) {
    SECTION("lora_dropout " + std::to_string(dropout)) {
      const ModelConfig cfg = tiny_config();
      DecoderLayer<TestType, Fp32> layer(0, cfg, tiny_lora(dropout));
      init_layer(layer, 61);
      ParameterList ps = parameters_of(layer);
      REQUIRE(!ps.empty());
      zero_grads(ps);
      Rng rng(62);
      Matrix x = random_matrix(kTokens, 8, rng);
      const Matrix dy = random_matrix(kTokens, 8, rng);
      // Same dropout masks in every forward: a fresh generator with the same seed each time.
      auto forward = [&](Matrix& out) {
        Rng mask(63);
        const ForwardContext ctx = context_for(cfg, dropout > 0 ? &mask : nullptr);
        layer.forward(x, ctx, out);
      };
      Matrix y, dx;
      forward(y);
      layer.backward(dy, context_for(cfg, nullptr), dx);
      auto loss = [&] {
        Matrix out;
        forward(out);
        return weighted_sum(dy, out);
      };
      check_gradient("decoder_layer dx", x, dx, loss, kOpts);
      check_parameters(ps, loss);
    }
  }
}
