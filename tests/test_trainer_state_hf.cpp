// trainer_state.json as HF's TrainerState writes it: its fields and no other, total_flos
// as HF estimates it (6 x the trained model's parameters without the embedding x tokens seen),
// counted here from the model file's own tensors rather than from the shapes, and the fields that
// describe the checkpoint they sit in (should_training_stop at the last step only, best_global_step
// naming best_model_checkpoint). The train-end entry of logging.jsonl carries the same total_flos.
#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>

#include "peft/qwen.hpp"
#include "support/fixture.hpp"

using namespace peft;

namespace {

// HF transformers' TrainerState fields (trainer_callback.py, transformers 4.5x-5.x).
const std::vector<std::string> kHfTrainerStateFields = {
    "epoch", "global_step", "max_steps", "logging_steps", "eval_steps", "save_steps", "train_batch_size",
    "num_train_epochs", "num_input_tokens_seen", "total_flos", "log_history", "best_metric", "best_global_step",
    "best_model_checkpoint", "is_local_process_zero", "is_world_process_zero", "is_hyper_param_search",
    "trial_name", "trial_params", "stateful_callbacks"};

// Every tensor of the model file but the input embedding (a tied lm_head is not stored apart).
std::int64_t file_parameters_without_embedding(const std::filesystem::path& model_dir) {
  const auto file = SafetensorsFile::open(model_dir / "model.safetensors");
  std::int64_t n = 0;
  for (const auto& name : file.names())
    if (name != "model.embed_tokens.weight") n += file.tensor(name).numel();
  return n;
}

nlohmann::json last_json_line(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return nlohmann::json::parse(last);
}

template <class Model>
void check_run(const std::string& fixture_name) {
  using namespace std::string_literals;
  const auto model_dir = test::fixture(fixture_name) / "model";
  LoraConfig lora;
  lora.lora_dropout = 0;
  auto model = Model::from_pretrained(model_dir, lora, 3);
  const std::int64_t trainable = trainable_numel(model->trainable_parameters());
  const std::int64_t added = Model::uses_lora() ? trainable : 0;  // PEFT's A/B beside the frozen weights
  const auto samples = test::fixture_samples(fixture_name);
  REQUIRE(samples.size() >= 6);
  const auto dir = std::filesystem::temp_directory_path() / ("peft_test_state_hf_" + fixture_name);
  std::filesystem::remove_all(dir);
  TrainingArguments a;
  a.learning_rate = 1e-3;
  a.num_train_epochs = 2;
  a.per_device_train_batch_size = 2;
  a.logging_steps = 1;
  a.save_steps = 2;
  a.save_total_limit = 0;  // keep every checkpoint
  a.metric_for_best_model = "loss";
  std::vector<Sample> train(samples.begin(), samples.begin() + 5), held(samples.begin() + 5, samples.end());
  Trainer<Model, AdamW, NamedSchedule> t(*model, a, AdamW(), NamedSchedule("linear"));
  t.set_quiet(true);
  t.set_run_dir(dir);
  const TrainResult r = t.train(train, &held);
  REQUIRE(r.global_step == 6);  // 5 samples in batches of 2: 3 steps an epoch, 2 epochs

  const double per_token = 6.0 * static_cast<double>(file_parameters_without_embedding(model_dir) + added);
  for (std::int64_t step : {2, 4, 6}) {
    INFO(fixture_name << " checkpoint-" << step);
    const auto state = read_json_file(dir / ("checkpoint-" + std::to_string(step)) / "trainer_state.json");
    // HF's TrainerState.load_from_json passes every key to the dataclass: one more is a TypeError.
    std::vector<std::string> keys;
    for (const auto& [key, value] : state.items()) keys.push_back(key);
    std::sort(keys.begin(), keys.end());
    std::vector<std::string> hf = kHfTrainerStateFields;
    std::sort(hf.begin(), hf.end());
    CHECK(keys == hf);
    // What resumes exactly beyond HF's fields lives beside it.
    const auto own = read_json_file(dir / ("checkpoint-" + std::to_string(step)) / "peft_state.json");
    CHECK(own["train_loss_per_step"].size() == static_cast<std::size_t>(step));
    CHECK(own["resume"].contains("dropout_rng"));
    CHECK(state["global_step"] == step);
    CHECK(state["max_steps"] == 6);
    CHECK(state["num_train_epochs"] == 2);
    CHECK(state["train_batch_size"] == 2);
    CHECK(state["logging_steps"] == 1);
    CHECK(state["save_steps"] == 2);
    CHECK(state["eval_steps"] == 2);  // unset: ms-swift evaluates at every save
    const auto tokens = state["num_input_tokens_seen"].get<std::int64_t>();
    CHECK(tokens > 0);
    CHECK(state["total_flos"].get<double>() == Approx(per_token * static_cast<double>(tokens)).epsilon(1e-12));
    const auto& control = state["stateful_callbacks"]["TrainerControl"]["args"];
    CHECK(control["should_save"] == true);
    CHECK(control["should_training_stop"] == (step == 6));
    const std::string best = state["best_model_checkpoint"].get<std::string>();
    CHECK(best.ends_with("checkpoint-"s + std::to_string(state["best_global_step"].get<std::int64_t>())));
  }
  const auto state = read_json_file(dir / "checkpoint-6" / "trainer_state.json");
  const auto end = last_json_line(dir / "logging.jsonl");
  REQUIRE(end.contains("train_runtime"));
  CHECK(end["total_flos"].get<double>() == state["total_flos"].get<double>());
  std::filesystem::remove_all(dir);
}

}  // namespace

TEST_CASE("trainer_state.json holds HF TrainerState's fields, and total_flos counts a LoRA model's adapter",
          "[trainer_state]") {
  check_run<Qwen2<Lora<>, Fp32, Cpu>>("tiny_public");
}

TEST_CASE("total_flos of a full fine-tune of a tied model: the base without its one embedding",
          "[trainer_state]") {
  check_run<Qwen2<Full, Fp32, Cpu>>("tied_1kv_ga4_cosine");
}
