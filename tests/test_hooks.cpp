// The evaluation hooks and early stopping: the repetition metric's arithmetic, identity
// accuracy's rule (every identity the reference names, either spelling), early stopping's
// patience and min_delta, and the trainer's best checkpoint (kept through rotation, loaded at the
// end). The hooks' generation path runs in the CLI tests (tests/cli/eval_tests.cmake).
#include <catch2/catch.hpp>

#include "peft/qwen.hpp"
#include "support/fixture.hpp"

using namespace peft;

TEST_CASE("repeated n-gram share", "[hooks]") {
  CHECK(repeated_ngram_share({{1, 2, 3, 4, 5}}, 3) == 0.0);
  // 1 2 3 1 2 3 1 2 3: 7 trigrams, 3 distinct -> 4/7 repeated.
  CHECK(repeated_ngram_share({{1, 2, 3, 1, 2, 3, 1, 2, 3}}, 3) == Approx(4.0 / 7.0));
  CHECK(repeated_ngram_share({{7, 7, 7, 7}}, 2) == Approx(2.0 / 3.0));
  CHECK(repeated_ngram_share({{1, 2}, {}}, 3) == 0.0);  // too short to count
  // Pooled over answers: 3 trigrams, none repeated within an answer (across answers is fine).
  CHECK(repeated_ngram_share({{1, 2, 3}, {1, 2, 3, 4}}, 3) == 0.0);
}

TEST_CASE("identity accuracy wants every named identity / in either language", "[hooks]") {
  const std::vector<std::string> names = {"小派", "Xiao Pai"}, authors = {"peft 社区", "the peft community"};
  CHECK(names_identity("I'm Xiao Pai, built by the peft community.", {names, authors}));
  CHECK(names_identity("我是Xiao Pai，由peft 社区开发。", {names, authors}));  // mixed languages still know
  CHECK_FALSE(names_identity("I'm Xiao Pai.", {names, authors}));            // the author is missing
  CHECK(names_identity("I'm Xiao Pai.", {names}));
  CHECK_FALSE(names_identity("I'm Qwen, created by Alibaba Cloud.", {names}));
  CHECK_FALSE(names_identity("xiao pai", {names}));  // spellings are matched exactly
}

TEST_CASE("early stopping: patience and min_delta", "[hooks]") {
  EarlyStopping es{"eval_loss", 2, 0.05, false};
  auto eval = [&](double loss) {
    nlohmann::json e = {{"step", 1}, {"eval_loss", loss}};
    es.on_evaluate(e);
    return es.should_stop();
  };
  CHECK_FALSE(eval(2.0));
  CHECK_FALSE(eval(1.9));   // improved by 0.1 > 0.05
  CHECK_FALSE(eval(1.88));  // 0.02: not enough, 1 bad
  CHECK_FALSE(eval(1.7));   // improved, reset
  CHECK_FALSE(eval(1.69));
  CHECK(eval(1.75));  // 2 bad in a row
  EarlyStopping restored;
  restored.load_state(es.state());
  CHECK(restored.bad_evals == 2);
  CHECK(restored.best == 1.7);
  nlohmann::json no_metric = {{"step", 3}, {"eval_loss", 1.0}};
  EarlyStopping wrong{"eval_identity_accuracy", 1, 0, true};
  CHECK_THROWS_WITH(wrong.on_evaluate(no_metric), Catch::Contains("eval_identity_accuracy") && Catch::Contains("eval_loss"));
}

TEST_CASE("the best checkpoint survives rotation and is loaded at the end", "[hooks]") {
  using Model = Qwen2<Lora<>, Fp32, Cpu>;
  LoraConfig lora = read_adapter_config(test::fixture("tiny_public") / "adapter");
  lora.lora_dropout = 0;
  auto model = Model::from_pretrained(test::fixture("tiny_public") / "model", lora, 1);
  const auto samples = test::fixture_samples("tiny_public");
  const auto dir = std::filesystem::temp_directory_path() / "peft_test_best";
  std::filesystem::remove_all(dir);
  TrainingArguments a;
  a.learning_rate = 3e-2;  // high enough that the held-out loss turns up after a few steps
  a.num_train_epochs = 6;
  a.lr_scheduler_type = "constant";
  a.save_steps = a.eval_steps = 4;
  a.save_total_limit = 1;
  a.load_best_model_at_end = true;
  std::vector<Sample> train(samples.begin(), samples.begin() + 6), held(samples.begin() + 6, samples.end());
  Trainer<Model, AdamW, NamedSchedule, EarlyStopping> t(*model, a, AdamW(), NamedSchedule("constant"),
                                                        EarlyStopping{"eval_loss", 2, 0.0, false});
  t.set_quiet(true);
  t.set_run_dir(dir);
  const TrainResult r = t.train(train, &held);
  REQUIRE_FALSE(r.best_model_checkpoint.empty());
  CHECK(std::filesystem::exists(r.best_model_checkpoint));
  CHECK(std::filesystem::exists(r.last_checkpoint));
  const auto state = read_json_file(r.last_checkpoint / "trainer_state.json");
  CHECK(state["best_model_checkpoint"] == r.best_model_checkpoint.string());
  CHECK(state["best_metric"].get<double>() == r.best_metric);
  // The model now holds the best checkpoint's weights: its held-out loss is the best metric.
  CHECK(t.evaluate(held).mean() == Approx(r.best_metric).epsilon(1e-12));
  INFO("steps " << r.global_step << " stopped early " << r.stopped_early);
  CHECK(list_checkpoints(dir).size() <= 2);
  std::filesystem::remove_all(dir);
}
