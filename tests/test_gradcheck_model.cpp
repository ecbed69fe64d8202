// The whole model's backward: forward_backward(batch, 1, nullptr) accumulates d(sum CE) into
// every trainable parameter; each is checked against finite differences of evaluate() on a
// packed batch of two samples with -100 labels, for LoRA (adapters on all seven projections) and
// full fine-tuning (embedding, norms, every projection and the lm_head train) and a mixed
// Projections<...> layout, tied and untied embeddings. Then: packing is exact (two samples packed give the sum of the two run alone), and
// the Bf16Mixed emulation stays close to Fp32.
#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "peft/models/qwen2.hpp"
#include "support/gradcheck.hpp"

using namespace peft;
using test::random_matrix;

namespace {

// Tied embeddings with a single kv head, untied with two (the shapes of the parity fixtures).
ModelConfig tiny_config(bool tied) {
  ModelConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = tied ? 1 : 2;
  c.vocab_size = 32;
  c.head_dim = 4;
  c.rope_theta = 100.0;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = tied;
  return c;
}

LoraConfig tiny_lora() {
  LoraConfig l;
  l.r = 2;
  l.lora_alpha = 4;
  l.lora_dropout = 0.0;
  return l;
}

// Sample A: a 2-token prompt (-100) then 4 labelled tokens; sample B: 5 tokens, one ignored
// label in the middle. After HF's shift A carries 4 targets and B 3.
const Sample kSampleA{{5, 17, 3, 29, 8, 1}, {-100, -100, 3, 29, 8, 1}};
const Sample kSampleB{{12, 4, 4, 30, 0}, {12, 4, -100, 30, 0}};

PackedBatch packed_ab() {
  const std::vector<const Sample*> both = {&kSampleA, &kSampleB};
  return PackedBatch::of(both);
}

// Random base weights and PEFT's adapter init, then every lora_B set non-zero (PEFT's B = 0
// would leave dA zero and the adapter path untested).
template <class Model>
std::unique_ptr<Model> make_model(bool tied, std::uint64_t seed) {
  RandomWeights src(seed);
  auto m = Model::from_weights(tiny_config(tied), src, tiny_lora(), seed + 1);
  Rng rng(seed + 2);
  for (auto& p : m->trainable_parameters()) {
    const std::string& n = p.name;
    if (n.size() > 13 && n.compare(n.size() - 13, 13, "lora_B.weight") == 0)
      *p.value = random_matrix(p.value->rows(), p.value->cols(), rng, 0.3f);
  }
  return m;
}

std::vector<Matrix> copy_grads(const ParameterList& ps) {
  std::vector<Matrix> out;
  for (const auto& p : ps) out.push_back(*p.grad);
  return out;
}

using LoraModel = Qwen2<Lora<>, Fp32, Cpu>;
using FullModel = Qwen2<Full, Fp32, Cpu>;
// q Full, k Lora, v Frozen, o Lora, gate Full, up Lora, down Full, lm_head Full, embedding and
// norms train (a Full lm_head over tied embeddings requires the embedding to train: it is the same
// matrix, and the tied case checks that both gradients land in it).
using MixedModel =
    Qwen2<Projections<Full, Lora<>, Frozen, Lora<>, Full, Lora<>, Full, Full, true, true>, Fp32, Cpu>;

// Per layer of 2: LoRA: A and B on 7 projections. Full: 2 norms + 7 weights + 3 biases.
// Mixed: 2 norms + q weight and bias + 3 x (A, B) + gate and down weights. Then the embedding
// (when it trains), the final norm (when norms train) and the lm_head (when it trains, untied).
template <class Model>
std::size_t expected_parameter_count(bool tied) {
  if constexpr (std::is_same_v<Model, LoraModel>) return 2 * 7 * 2;
  else if constexpr (std::is_same_v<Model, FullModel>) return 1 + 2 * (2 + 7 + 3) + 1 + (tied ? 0 : 1);
  else return 2 * (2 + 2 + 6 + 2) + 1 + 1 + (tied ? 0 : 1);
}

}  // namespace

TEMPLATE_TEST_CASE("every trainable parameter's gradient matches finite differences", "[gradcheck][model]",
                   LoraModel, FullModel, MixedModel) {
  for (const bool tied : {true, false}) {
    SECTION(tied ? "tied embeddings" : "untied embeddings") {
      auto model = make_model<TestType>(tied, 71);
      const PackedBatch batch = packed_ab();
      REQUIRE(batch.label_tokens == 7);
      ParameterList ps = model->trainable_parameters();
      REQUIRE(ps.size() == expected_parameter_count<TestType>(tied));
      model->zero_grad();
      const LossSum loss = model->forward_backward(batch, 1.0f, nullptr);
      CHECK(loss.tokens == 7);
      CHECK(loss.sum == Approx(model->evaluate(batch).sum).epsilon(1e-12));
      const std::vector<Matrix> grads = copy_grads(ps);

      // Tolerance: L is a sum of 7 token CEs through two decoder layers in float; with a
      // fourth-order difference and h = 1e-2 the noise measured at most 4e-4 of each gradient's
      // scale (a small k_proj bias gradient), so tol = 2e-3 of that scale. 8 entries per tensor: the 4 largest and 4 random.
      auto objective = [&] { return model->evaluate(batch).sum; };
      for (std::size_t i = 0; i < ps.size(); ++i)
        test::check_gradient(ps[i].name, *ps[i].value, grads[i], objective,
                             {.step = 1e-2, .tol = 2e-3, .entries = 8, .seed = 100 + i});
    }
  }
}

TEMPLATE_TEST_CASE("a packed batch gives the sum of its samples run alone", "[gradcheck][model]", LoraModel,
                   FullModel, MixedModel) {
  // Same arithmetic in another grouping (GEMMs over 11 rows instead of 6 and 5), so only float
  // rounding differs: 1e-5 relative (of the loss, and of each gradient tensor's max |g|).
  for (const bool tied : {true, false}) {
    SECTION(tied ? "tied embeddings" : "untied embeddings") {
      auto model = make_model<TestType>(tied, 81);
      ParameterList ps = model->trainable_parameters();

      model->zero_grad();
      const LossSum a = model->forward_backward(PackedBatch::of(kSampleA), 1.0f, nullptr);
      const LossSum b = model->forward_backward(PackedBatch::of(kSampleB), 1.0f, nullptr);
      const std::vector<Matrix> separate = copy_grads(ps);

      model->zero_grad();
      const LossSum packed = model->forward_backward(packed_ab(), 1.0f, nullptr);

      CHECK(a.tokens + b.tokens == packed.tokens);
      CHECK(std::abs(a.sum + b.sum - packed.sum) <= 1e-5 * std::abs(packed.sum));
      for (std::size_t i = 0; i < ps.size(); ++i) {
        const double scale = separate[i].cwiseAbs().maxCoeff();
        const double diff = (*ps[i].grad - separate[i]).cwiseAbs().maxCoeff();
        INFO(ps[i].name << ": max |packed - separate| " << diff << ", max |separate| " << scale);
        CHECK(scale > 0.0);
        CHECK(diff <= 1e-5 * scale);
      }
    }
  }
}

TEST_CASE("Bf16Mixed evaluation stays within 2e-2 of Fp32", "[model][bf16]") {
  // Same seeds, so the same base weights and adapters; bf16 keeps 8 mantissa bits (relative
  // rounding 2^-9 ~ 2e-3 per stored value), which over two layers moves a mean CE of ~3.5 by well
  // under 2e-2 relative. The loss must also differ from Fp32, or no rounding happened at all.
  for (const bool tied : {true, false}) {
    SECTION(tied ? "tied embeddings" : "untied embeddings") {
      auto fp32 = make_model<Qwen2<Lora<>, Fp32, Cpu>>(tied, 91);
      auto bf16 = make_model<Qwen2<Lora<>, Bf16Mixed, Cpu>>(tied, 91);
      const PackedBatch batch = packed_ab();
      const double want = fp32->evaluate(batch).mean();
      const double got = bf16->evaluate(batch).mean();
      INFO("fp32 " << want << ", bf16 " << got);
      CHECK(std::abs(got - want) <= 2e-2 * std::abs(want));
      CHECK(got != want);
    }
  }
}
