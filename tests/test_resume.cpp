// Exact resume at library level: a run interrupted after a checkpoint (an exception thrown from a
// hook stands in for the kill; the CLI test in tests/cli/resume_tests.cmake uses a real SIGKILL)
// and resumed from it must reproduce the uninterrupted run bit for bit (the interrupted and
// resumed runs write their checkpoints on the trainer's write thread, the uninterrupted one in
// line): per-step losses, grad norms, learning rates, logging.jsonl's numbers, the adapter and
// the optimizer moments. Dropout
// is on and the data is reshuffled every epoch, so the generator state and the loader position
// must both come back. Also: rotation keeps the checkpoint resumed from.
#include <catch2/catch.hpp>
#include <fstream>

#include "peft/qwen.hpp"
#include "support/fixture.hpp"

using namespace peft;

namespace {

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

// Throws in the step after `at`, as if the process died there.
struct CrashAt {
  std::int64_t at = -1;
  void on_step_end(const TrainResult& r) {
    if (at >= 0 && r.global_step > at) throw Interrupted();
  }
};

TrainingArguments args_for(const std::filesystem::path& out) {
  TrainingArguments a;
  a.learning_rate = 2e-3;
  a.num_train_epochs = 3;
  a.lr_scheduler_type = "cosine";
  a.warmup_ratio = 0.1;
  a.logging_steps = 4;  // logging intervals straddle the checkpoints
  a.save_steps = 6;
  a.save_total_limit = 1;
  a.weight_decay = 0.1;
  a.output_dir = out;
  return a;
}

template <class Model>
std::unique_ptr<Model> make_model() {
  LoraConfig lora = read_adapter_config(test::fixture("tiny_public") / "adapter");
  lora.lora_dropout = 0.1;  // unused by Full: there the generator state is still restored, unexercised
  return Model::from_pretrained(test::fixture("tiny_public") / "model", lora, 7);
}

template <class Model>
TrainResult run(const std::filesystem::path& out, std::int64_t crash_at, const std::filesystem::path& resume = {},
                bool async_save = false) {
  auto model = make_model<Model>();
  TrainingArguments a = args_for(out);
  a.resume_from_checkpoint = resume;
  a.async_save = async_save;
  Trainer<Model, AdamW, NamedSchedule, CrashAt> t(*model, a, AdamW({0.9, 0.95, 1e-8, 0.1}), NamedSchedule("cosine"),
                                                 CrashAt{crash_at});
  t.set_run_dir(out);
  t.set_quiet(true);
  return t.train(test::fixture_samples("tiny_public"));
}

// logging.jsonl without the wall-clock fields, which differ between any two runs.
std::vector<nlohmann::json> log_numbers(const std::filesystem::path& dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(dir / "logging.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    for (const char* wall_clock : {"elapsed_s", "tokens_per_second", "elapsed_time", "remaining_time", "memory(GiB)",
                                   "train_speed(iter/s)", "train_runtime", "train_samples_per_second",
                                   "train_steps_per_second"})
      j.erase(wall_clock);
    out.push_back(j);
  }
  return out;
}

std::vector<float> all_floats(const std::filesystem::path& file) {
  const auto st = SafetensorsFile::open(file);
  std::vector<float> out;
  for (const auto& n : st.names()) {
    const auto v = st.read_f32(n, st.tensor(n).shape);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

}  // namespace

// LoRA in fp32, and full fine-tuning with bf16 storage, whose exact resume needs the fp32 masters
// kept in optimizer.safetensors (model.safetensors holds bf16).
TEMPLATE_TEST_CASE("a resumed run equals the uninterrupted one bit for bit", "[resume]", (Qwen2<Lora<>, Fp32, Cpu>),
                   (Qwen2<Full, Bf16Mixed, Cpu>)) {
  using Model = TestType;
  const auto root = std::filesystem::temp_directory_path() / ("peft_test_resume_" + std::to_string(Model::uses_lora()));
  std::filesystem::remove_all(root);
  const TrainResult full = run<Model>(root / "full", -1);
  REQUIRE(full.global_step > 12);

  // The interrupted run writes its checkpoints beside its steps (--async_save): checkpoint-6's
  // tensors are copied at step 6 while steps 7..9 change the model, and the exception's way out
  // waits for the write. The resumed run saves that way too; the uninterrupted one in line.
  REQUIRE_THROWS_AS(run<Model>(root / "cut", 9, {}, true), Interrupted);
  // Steps 7..9 happened after checkpoint-6 and were logged; save_total_limit 1 kept only it.
  REQUIRE(std::filesystem::exists(root / "cut" / "checkpoint-6"));
  const TrainResult resumed = run<Model>(root / "cut", -1, root / "cut" / "checkpoint-6", true);

  REQUIRE(resumed.step_losses.size() == full.step_losses.size());
  for (std::size_t s = 0; s < full.step_losses.size(); ++s) {
    INFO("step " << s + 1);
    CHECK(resumed.step_losses[s] == full.step_losses[s]);
    CHECK(resumed.step_grad_norms[s] == full.step_grad_norms[s]);
    CHECK(resumed.step_lrs[s] == full.step_lrs[s]);
  }
  CHECK(resumed.train_loss == full.train_loss);
  CHECK(log_numbers(root / "cut") == log_numbers(root / "full"));
  const auto last = fmt::format("checkpoint-{}", full.global_step);
  const char* weights = Model::uses_lora() ? "adapter_model.safetensors" : "model.safetensors";
  CHECK(all_floats(root / "cut" / last / weights) == all_floats(root / "full" / last / weights));
  CHECK(all_floats(root / "cut" / last / "optimizer.safetensors") ==
        all_floats(root / "full" / last / "optimizer.safetensors"));
  // Rotation (limit 1) never deleted the checkpoint the run resumed from.
  CHECK(std::filesystem::exists(root / "cut" / "checkpoint-6"));
  CHECK(list_checkpoints(root / "full").size() == 1);
  CHECK(std::filesystem::exists(root / "cut" / "loss.svg"));
  std::filesystem::remove_all(root);
}

TEST_CASE("resume refuses a folder that is not a checkpoint", "[resume]") {
  const auto root = std::filesystem::temp_directory_path() / "peft_test_resume_bad";
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root / "checkpoint-3");
  using Model = Qwen2<Lora<>, Fp32, Cpu>;
  CHECK_THROWS_WITH(run<Model>(root, -1, root / "checkpoint-3"), Catch::Contains("trainer_state.json"));
  CHECK_THROWS_WITH(run<Model>(root, -1, root / "nowhere"), Catch::Contains("not a directory"));
  std::filesystem::remove_all(root);
}
