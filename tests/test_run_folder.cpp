// Run-folder ownership at library level (train/run_folder.hpp, checkpoint rotation, the result
// settings and trainer_state.json's checks): the lock, the cleaning of what killed saves left,
// rotation that deletes only the current run's checkpoints. The programs' behaviour on top of
// these is tested in tests/cli/data_safety_tests.cmake.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "peft/qwen.hpp"  // checkpoint.hpp needs the layouts
#include "peft/train/result_settings.hpp"
#include "peft/train/run_folder.hpp"
#include "peft/train/trainer_state.hpp"

using namespace peft;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const char* name) {
  const fs::path d = fs::temp_directory_path() / fmt::format("peft_test_run_folder_{}_{}", name, ::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// A run's state at its start: its id and a dropout generator seeded with `seed`.
TrainerState state_of_run(const std::string& run_id, std::uint64_t seed) {
  TrainerState s;
  std::ostringstream rng;
  rng << std::mt19937_64(seed);
  s.dropout_rng = rng.str();
  s.run_id = run_id;
  return s;
}

void fake_checkpoint(const fs::path& dir, const std::string& run_id) {
  write(dir / "trainer_state.json", nlohmann::json{{"global_step", 1}}.dump());
  write(dir / "peft_state.json", nlohmann::json{{"run_id", run_id}}.dump());
}

}  // namespace

TEST_CASE("run.lock: a live holder is refused by pid, a dead one is taken over, release removes it", "[run_folder]") {
  const fs::path d = fresh_dir("lock");
  write(d / "run.lock", "1\n");  // pid 1 is always alive
  CHECK_THROWS_WITH(RunLock(d), Catch::Contains("is in use by another run (pid 1"));
  write(d / "run.lock", "999999999\n");  // no such process
  {
    RunLock lock(d);
    std::ifstream in(d / "run.lock");
    long long pid = 0;
    in >> pid;
    CHECK(pid == ::getpid());
  }
  CHECK_FALSE(fs::exists(d / "run.lock"));
  fs::remove_all(d);
}

TEST_CASE("stale staging: our own names go, a moved-aside checkpoint comes back, other files stay", "[run_folder]") {
  const fs::path d = fresh_dir("staging");
  write(d / "checkpoint-8.tmp-0123456789ab" / "x", "partial");
  write(d / "logging.jsonl.tmp-00000000beef", "partial");
  write(d / "checkpoint-4" / "a", "new");
  write(d / "checkpoint-4.old-aaaaaaaaaaaa" / "a", "old");
  write(d / "checkpoint-6.old-bbbbbbbbbbbb" / "a", "the only copy");
  write(d / "notes.tmp-mine", "user");
  write(d / "data.tmp-0123456789abc", "user: 13 hex digits");
  clean_stale_staging(d);
  CHECK_FALSE(fs::exists(d / "checkpoint-8.tmp-0123456789ab"));
  CHECK_FALSE(fs::exists(d / "logging.jsonl.tmp-00000000beef"));
  CHECK_FALSE(fs::exists(d / "checkpoint-4.old-aaaaaaaaaaaa"));
  CHECK(fs::exists(d / "checkpoint-4" / "a"));
  CHECK(fs::exists(d / "checkpoint-6" / "a"));
  CHECK_FALSE(fs::exists(d / "checkpoint-6.old-bbbbbbbbbbbb"));
  CHECK(fs::exists(d / "notes.tmp-mine"));
  CHECK(fs::exists(d / "data.tmp-0123456789abc"));
  fs::remove_all(d);
}

TEST_CASE("rotation deletes only the current run's oldest checkpoints", "[run_folder]") {
  const fs::path d = fresh_dir("rotate");
  fake_checkpoint(d / "checkpoint-1", "earlier");
  fake_checkpoint(d / "checkpoint-2", "earlier");
  write(d / "checkpoint-3" / "adapter_model.safetensors", "no trainer_state: an older peft's");
  fake_checkpoint(d / "checkpoint-4", "now");
  fake_checkpoint(d / "checkpoint-5", "now");
  fake_checkpoint(d / "checkpoint-6", "now");
  rotate_checkpoints(d, 1, "now", {d / "checkpoint-6", d / "checkpoint-4"});  // as the trainer: the new one, the resumed one
  CHECK(fs::exists(d / "checkpoint-1"));
  CHECK(fs::exists(d / "checkpoint-2"));
  CHECK(fs::exists(d / "checkpoint-3"));
  CHECK(fs::exists(d / "checkpoint-4"));
  CHECK_FALSE(fs::exists(d / "checkpoint-5"));
  CHECK(fs::exists(d / "checkpoint-6"));
  rotate_checkpoints(d, 0, "", {});  // no run id: nothing can be told apart, nothing is deleted
  CHECK(list_checkpoints(d).size() == 5);
  fs::remove_all(d);
}

TEST_CASE("result settings: every difference is named - the dataset fingerprint follows the samples", "[run_folder]") {
  Sample a{{1, 2, 3}, {-100, 2, 3}}, b{{1, 2, 4}, {-100, 2, 4}};
  CHECK(dataset_fingerprint({a, b}) == dataset_fingerprint({a, b}));
  CHECK(dataset_fingerprint({a, b}) != dataset_fingerprint({b, a}));
  CHECK(dataset_fingerprint({a}) != dataset_fingerprint({a, b}));
  TrainingArguments t;
  LoraConfig lora;
  const auto before = result_settings(t, {a, b}, &lora, 1);
  t.learning_rate = 5e-3;
  lora.r = 16;
  const auto diff = settings_differences(before, result_settings(t, {a, b}, &lora, 1));
  REQUIRE(diff.size() == 2);
  CHECK(diff[0] == "learning_rate: recorded 0.0001, now 0.005");
  CHECK(diff[1] == "lora_rank: recorded 8, now 16");
  // Two ranks with half the accumulation take the same steps.
  t.gradient_accumulation_steps = 4;
  TrainingArguments half = t;
  half.gradient_accumulation_steps = 2;
  CHECK(settings_differences(result_settings(t, {a}, &lora, 1), result_settings(half, {a}, &lora, 2)).empty());
}

TEST_CASE("peft_state.json: a damaged field is refused with the file and the field", "[run_folder]") {
  const fs::path d = fresh_dir("state");
  TrainerState s = state_of_run("r1", 7);
  write(d / "trainer_state.json", trainer_state_json(s, 0, TrainerStateCounts{.max_steps = 10}).dump());
  nlohmann::json j = peft_state_json(s, nlohmann::json::object());
  write(d / "peft_state.json", j.dump());
  CHECK(read_trainer_state(d).dropout_rng == s.dropout_rng);
  CHECK(checkpoint_run_id(d) == "r1");
  j["resume"]["dropout_rng"] = s.dropout_rng.substr(0, s.dropout_rng.size() / 2);
  write(d / "peft_state.json", j.dump());
  CHECK_THROWS_WITH(read_trainer_state(d),
                    Catch::Contains("peft_state.json: field 'resume.dropout_rng' is not a random generator state"));
  j["resume"]["dropout_rng"] = s.dropout_rng + " 17";
  write(d / "peft_state.json", j.dump());
  CHECK_THROWS_WITH(read_trainer_state(d), Catch::Contains("'resume.dropout_rng'"));
  j["resume"]["dropout_rng"] = s.dropout_rng;
  j["resume"]["interval_loss"] = "high";
  write(d / "peft_state.json", j.dump());
  CHECK_THROWS_WITH(read_trainer_state(d), Catch::Contains("peft_state.json: field 'resume.interval_loss'"));
  j["resume"].erase("interval_loss");
  write(d / "peft_state.json", j.dump());
  CHECK_THROWS_WITH(read_trainer_state(d), Catch::Contains("field 'resume.interval_loss' is missing"));
  nlohmann::json hf = trainer_state_json(s, 0, TrainerStateCounts{});
  hf.erase("log_history");
  write(d / "trainer_state.json", hf.dump());
  CHECK_THROWS_WITH(read_trainer_state(d), Catch::Contains("trainer_state.json: field 'log_history' is missing"));
  fs::remove(d / "peft_state.json");
  CHECK_THROWS_WITH(read_trainer_state(d), Catch::Contains("trainer_state.json: no peft_state.json beside it"));
  CHECK(checkpoint_run_id(d).empty());
  fs::remove_all(d);
}

TEST_CASE("a checkpoint of peft before peft_state.json (all of it in trainer_state.json) still resumes",
          "[run_folder]") {
  const fs::path d = fresh_dir("state_before_split");
  TrainerState s = state_of_run("old-run", 11);
  s.res.global_step = 2;
  s.res.step_losses = {2.5, 2.25};
  s.res.step_grad_norms = {1.0, 0.5};
  s.res.step_lrs = {1e-4, 5e-5};
  s.interval_loss = 2.25;
  s.interval_steps = 1;
  nlohmann::json j = trainer_state_json(s, 0.5, TrainerStateCounts{.max_steps = 4});
  j.update(peft_state_json(s, nlohmann::json::object()));  // the one file of those versions
  write(d / "trainer_state.json", j.dump());
  const TrainerState back = read_trainer_state(d);
  CHECK(back.run_id == "old-run");
  CHECK(back.res.global_step == 2);
  CHECK(back.res.step_losses == s.res.step_losses);
  CHECK(back.interval_loss == 2.25);
  CHECK(checkpoint_run_id(d) == "old-run");
  j["resume"]["interval_steps"] = -1;
  write(d / "trainer_state.json", j.dump());
  CHECK_THROWS_WITH(read_trainer_state(d), Catch::Contains("trainer_state.json: negative step counts"));
  fs::remove_all(d);
}
