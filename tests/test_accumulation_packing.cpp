// The trainer's accumulation packing (TrainingArguments::accumulation_pack_tokens): a step's
// micro-batches joined into fewer forward/backward calls must give the update of one call per
// micro-batch, because every call is scaled by the whole step's label tokens. On the fp32 CPU
// model the only difference is the summation order of the gradient (one call's sum over all rows
// instead of per-call sums added up): relative 1e-5 on losses and grad norms, 1e-4 on trainable
// values (relative to 1e-3 + |value|). A miscounted normalisation is off by percents. The CPU
// default (-1) must not pack at all: bit-identical to 0. Evaluation joins batches the same way
// for a model with a per-call size (the CUDA model's): the same loss and argmax hits.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "peft/qwen.hpp"
#include "support/fixture.hpp"
#include "support/training_runs.hpp"

using namespace peft;
using Model = Qwen2<Lora<>, Fp32, Cpu>;

namespace {

test::TrainedRun train(std::int64_t pack_tokens, std::int64_t batch = 1, std::int64_t ga = 4) {
  LoraConfig lora = read_adapter_config(test::fixture("tiny_public") / "adapter");
  lora.lora_dropout = 0;  // a packed call draws one dropout seed where separate calls draw several
  auto model = Model::from_pretrained(test::fixture("tiny_public") / "model", lora, 7);
  TrainingArguments a;
  a.learning_rate = 2e-3;
  a.num_train_epochs = 2;
  a.per_device_train_batch_size = batch;
  a.gradient_accumulation_steps = ga;
  a.accumulation_pack_tokens = pack_tokens;
  a.warmup_ratio = 0.1;
  Trainer<Model> t(*model, a, AdamW({0.9, 0.95, 1e-8, 0.1}), NamedSchedule("cosine"));
  t.set_quiet(true);
  test::TrainedRun r{t.train(test::fixture_samples("tiny_public")), {}};
  for (const auto& p : model->trainable_parameters()) r.values.push_back(*p.value);
  return r;
}

}  // namespace

TEST_CASE("accumulation packing: one call per step equals one call per micro-batch", "[train][packing]") {
  const test::TrainedRun single = train(0);
  test::check_same_training(train(1 << 20), single);  // every step's 4 micro-batches in one call
  test::check_same_training(train(100), single);      // packs cut by the token budget (samples of 6..48 tokens)
}

TEST_CASE("accumulation packing: micro-batches of 2 samples with GA 2", "[train][packing]") {
  test::check_same_training(train(1 << 20, 2, 2), train(0, 2, 2));
}

TEST_CASE("accumulation packing: the CPU model does not pack by default", "[train][packing]") {
  const test::TrainedRun by_default = train(-1), off = train(0);
  REQUIRE(by_default.res.step_losses == off.res.step_losses);
  REQUIRE(by_default.values.size() == off.values.size());
  for (std::size_t i = 0; i < off.values.size(); ++i) CHECK(by_default.values[i] == off.values[i]);
}

TEST_CASE("accumulation packing: a negative budget other than -1 is refused", "[train][packing]") {
  TrainingArguments a;
  a.accumulation_pack_tokens = -2;
  REQUIRE_THROWS_WITH(a.validate(), Catch::Contains("--accumulation_pack_tokens"));
}

// What a model that sizes its buffers per call (the CUDA model's max_tokens) is built for: a step's
// micro-batches fit one call up to batch x max_length tokens, the size the activation policy was
// chosen for; never less than one micro-batch of the longest samples.
TEST_CASE("accumulation packing: the call size a GPU model is built for", "[train][packing]") {
  // The recipe: 16 identity rows of at most 80 tokens, batch 1, GA 16, --max_length 2048.
  CHECK(packed_call_tokens(2048, 80, 1, 16, -1) == 16 * 80);
  CHECK(packed_call_tokens(2048, 80, 1, 16, 0) == 80);      // packing off: one micro-batch a call
  CHECK(packed_call_tokens(2048, 80, 1, 16, 512) == 512);   // the user's budget
  CHECK(packed_call_tokens(2048, 80, 1, 16, 40) == 80);     // never below one micro-batch
  CHECK(packed_call_tokens(2048, 80, 1, 1, -1) == 80);      // nothing to pack
  CHECK(packed_call_tokens(2048, 1500, 1, 16, -1) == 2048); // long samples: at most max_length a sample
  CHECK(packed_call_tokens(2048, 80, 4, 16, -1) == 4 * 80 * 16);
  CHECK(packed_call_tokens(512, 80, 4, 16, -1) == 4 * 512);
  CHECK(packed_call_tokens(2048, 4000, 2, 16, -1) == 2 * 2048);  // samples past max_length are cut or dropped
  const std::int64_t unknown = std::numeric_limits<std::int64_t>::max();  // the memory plan's worst case
  CHECK(packed_call_tokens(2048, unknown, 1, 16, -1) == 2048);
}

namespace {
// The CPU model with a per-call size, as the CUDA model has: counts the calls evaluate_loss makes.
struct SizedModel {
  Model& model;
  std::size_t cap;
  std::vector<std::size_t> call_tokens;
  std::size_t max_packed_tokens() const { return cap; }
  LossSum evaluate(const PackedBatch& b) {
    call_tokens.push_back(b.tokens());
    return model.evaluate(b);
  }
};
}  // namespace

// Evaluation packs the same way (train/evaluate.hpp): batches joined up to the model's call size,
// the same token-weighted loss (relative 1e-6: the fp32 sums' order) and the same argmax hits.
TEST_CASE("evaluation packs batches into the model's call size", "[train][packing][eval]") {
  auto model = Model::from_pretrained(test::fixture("tiny_public") / "model",
                                      read_adapter_config(test::fixture("tiny_public") / "adapter"), 7);
  const auto data = test::fixture_samples("tiny_public");
  const LossSum one_each = evaluate_loss(*model, data, 1);  // the CPU model: one call a batch
  for (const std::size_t cap : {std::size_t{100}, std::size_t{1} << 20}) {
    SizedModel sized{*model, cap, {}};
    const LossSum packed = evaluate_loss(sized, data, 1);
    CHECK(sized.call_tokens.size() < data.size());
    std::size_t tokens = 0;
    for (const std::size_t t : sized.call_tokens) {
      CHECK(t <= std::max<std::size_t>(cap, 48));  // a sample longer than the cap goes alone
      tokens += t;
    }
    std::size_t want = 0;
    for (const auto& s : data) want += s.size();
    CHECK(tokens == want);
    CHECK(packed.tokens == one_each.tokens);
    CHECK(packed.correct == one_each.correct);
    CHECK(packed.sum == Approx(one_each.sum).epsilon(1e-6));
  }
  SizedModel off{*model, 0, {}};  // no size: one call a batch of 2
  evaluate_loss(off, data, 2);
  CHECK(off.call_tokens.size() == (data.size() + 1) / 2);
}
