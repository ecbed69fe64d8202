// The numerical guard: a step whose loss or gradient norm is NaN/Inf changes no weight and no
// optimizer state, is counted (TrainResult and logging.jsonl's skipped_steps), and training goes
// on; --max_consecutive_nonfinite_steps of them in a row stop the run with a clear error. NaN is
// injected by a wrapper around the real model (test-only), into the loss or into one gradient.
#include <catch2/catch.hpp>
#include <fstream>
#include <limits>
#include <set>

#include "peft/qwen.hpp"
#include "support/fixture.hpp"

using namespace peft;
using Model = Qwen2<Lora<>, Fp32, Cpu>;

namespace {

// The model, except that the micro-batches numbered in `bad` (0-based, one per step here) return
// a NaN loss, or put +Inf into the first gradient.
struct InjectingModel {
  using Precision = Model::Precision;
  using Layout = Model::Layout;
  static constexpr bool uses_lora() { return Model::uses_lora(); }
  Model& m;
  std::set<int> bad;
  bool into_grad = false;
  int calls = 0;

  ParameterList trainable_parameters() { return m.trainable_parameters(); }
  void zero_grad() { m.zero_grad(); }
  LossSum evaluate(const PackedBatch& b) { return m.evaluate(b); }
  const ModelConfig& config() const { return m.config(); }
  const LoraConfig& lora_config() const { return m.lora_config(); }
  LossSum forward_backward(const PackedBatch& b, float scale, Rng* rng) {
    LossSum r = m.forward_backward(b, scale, rng);
    if (bad.count(calls++)) {
      if (into_grad) (*m.trainable_parameters().front().grad)(0, 0) = std::numeric_limits<float>::infinity();
      else r.sum = std::numeric_limits<double>::quiet_NaN();
    }
    return r;
  }
};

// Copies of every trainable tensor after each step.
struct Snapshots {
  InjectingModel* model;
  std::vector<std::vector<Matrix>>* out;
  void on_step_end(const TrainResult&) {
    std::vector<Matrix> v;
    for (const auto& p : model->trainable_parameters()) v.push_back(*p.value);
    out->push_back(std::move(v));
  }
};

std::unique_ptr<Model> make_model() {
  LoraConfig lora = read_adapter_config(test::fixture("tiny_public") / "adapter");
  lora.lora_dropout = 0;
  return Model::from_pretrained(test::fixture("tiny_public") / "model", lora, 3);
}

TrainingArguments args() {
  TrainingArguments a;
  a.learning_rate = 1e-3;
  a.max_steps = 8;
  a.logging_steps = 1;
  a.lr_scheduler_type = "constant";
  return a;
}

}  // namespace

TEST_CASE("a non-finite step is skipped / counted and logged", "[guard]") {
  for (const bool into_grad : {false, true}) {
    SECTION(into_grad ? "inf gradient" : "nan loss") {
      auto base = make_model();
      InjectingModel model{*base, {2, 3}, into_grad};
      std::vector<std::vector<Matrix>> snaps;
      const auto dir = std::filesystem::temp_directory_path() / "peft_test_guard";
      std::filesystem::remove_all(dir);
      Trainer<InjectingModel, AdamW, NamedSchedule, Snapshots> t(model, args(), AdamW({0.9, 0.95, 1e-8, 0.0}),
                                                                 NamedSchedule("constant"), Snapshots{&model, &snaps});
      t.set_quiet(true);
      t.set_run_dir(dir);
      const TrainResult r = t.train(test::fixture_samples("tiny_public"));
      CHECK(r.global_step == 8);
      CHECK(r.skipped_steps == 2);
      CHECK(t.optimizer().step_count == 6);
      REQUIRE(snaps.size() == 8);
      // Steps 3 and 4 (indices 2, 3) left every weight as step 2 did; step 5 moved them again.
      for (std::size_t i = 0; i < snaps[1].size(); ++i) {
        CHECK(snaps[2][i] == snaps[1][i]);
        CHECK(snaps[3][i] == snaps[1][i]);
        CHECK(snaps[7][i].allFinite());
      }
      CHECK(snaps[4][0] != snaps[3][0]);
      CHECK(std::isfinite(r.train_loss));
      std::ifstream log(dir / "logging.jsonl");
      std::string line, last;
      while (std::getline(log, line)) last = line;
      CHECK(nlohmann::json::parse(last)["skipped_steps"] == 2);
      std::filesystem::remove_all(dir);
    }
  }
}

TEST_CASE("too many non-finite steps in a row stop the run", "[guard]") {
  auto base = make_model();
  InjectingModel model{*base, {1, 2, 3, 4, 5, 6, 7}};
  TrainingArguments a = args();
  a.max_consecutive_nonfinite_steps = 3;
  Trainer<InjectingModel> t(model, a, AdamW(), NamedSchedule("constant"));
  t.set_quiet(true);
  CHECK_THROWS_WITH(t.train(test::fixture_samples("tiny_public")),
                    Catch::Contains("3 optimizer steps in a row") && Catch::Contains("up to step 4"));
}
