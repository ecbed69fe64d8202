// Data-parallel identity_finetune as a user launches it (`NPROC_PER_NODE=2 MASTER_PORT=0
// identity_finetune ...`): the program re-executes itself as two ranks over the CPU transport.
//   - parity: 2 ranks x accumulation 2 against 1 process x accumulation 4 (same global batch):
//     every logged loss and grad norm, and every value of the saved adapter, within relative 1e-5
//     (fp32 on the CPU: the same sums in another order; a wrong shard is off by percents);
//   - only rank 0 writes: the run folder holds what a single-process run holds, nothing else;
//   - resume across world sizes: a 2-rank run killed after its checkpoint at step 4 resumes as 1
//     process (and a 1-process run as 2 ranks), ending where the uninterrupted run ends, same
//     tolerance.
// A C++ test rather than a CMake script because it compares floats. Each run takes well under a
// second; the binary is built beside this test (PEFT_BIN_DIR).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "peft/io/json_file.hpp"
#include "peft/io/safetensors.hpp"
#include "support/fixture.hpp"

using namespace peft;
namespace fs = std::filesystem;

namespace {

// One folder per test case: ctest runs the cases as parallel processes, and each starts by
// clearing its folder.
fs::path kWork;
void use_work_dir(const char* name) {
  kWork = fs::path(PEFT_BIN_DIR) / ".." / "tests" / "dist_cli_work" / name;
  fs::remove_all(kWork);
}

// Runs identity_finetune in kWork with `env` prefixed; returns the exit status and the output.
std::pair<int, std::string> run(const std::string& env, const std::string& args) {
  fs::create_directories(kWork);
  const fs::path log = kWork / "last_run.log";
  const auto tiny = test::fixture("tiny_public");
  const std::string cmd = fmt::format(
      "cd '{}' && env {} '{}/identity_finetune' --model '{}/model' --dataset '{}/tokens.jsonl' --add_version false "
      "--learning_rate 2e-3 --num_train_epochs 2 --logging_steps 1 --save_steps 4 --lora_dropout 0 "
      "--torch_dtype float32 --warmup_ratio 0.1 {} > '{}' 2>&1",
      kWork.string(), env.empty() ? "PEFT_UNUSED=1" : env, PEFT_BIN_DIR, tiny.string(), tiny.string(), args,
      log.string());
  const int status = std::system(cmd.c_str());
  std::ifstream in(log);
  std::stringstream out;
  out << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out.str()};
}

// The training entries of a run's logging.jsonl (not the train-end entry or ms-swift's summary).
std::vector<nlohmann::json> log_of(const std::string& dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(kWork / dir / "logging.jsonl");
  for (std::string line; std::getline(in, line);)
    if (auto j = nlohmann::json::parse(line); j.contains("loss")) out.push_back(std::move(j));
  return out;
}

bool close(double a, double b) { return std::abs(a - b) <= 1e-5 * (1 + std::abs(b)); }

void check_same_run(const std::string& a, const std::string& b, const std::string& final_checkpoint) {
  const auto la = log_of(a), lb = log_of(b);
  REQUIRE(la.size() == lb.size());
  REQUIRE(!la.empty());
  for (std::size_t i = 0; i < la.size(); ++i) {
    INFO(a << ": " << la[i].dump() << "\n" << b << ": " << lb[i].dump());
    CHECK(la[i]["step"] == lb[i]["step"]);
    CHECK(close(la[i]["loss"].get<double>(), lb[i]["loss"].get<double>()));
    CHECK(close(la[i]["grad_norm"].get<double>(), lb[i]["grad_norm"].get<double>()));
  }
  const auto fa = SafetensorsFile::open(kWork / a / final_checkpoint / "adapter_model.safetensors");
  const auto fb = SafetensorsFile::open(kWork / b / final_checkpoint / "adapter_model.safetensors");
  REQUIRE(fa.names() == fb.names());
  double worst = 0;
  for (const auto& name : fa.names()) {
    const auto& shape = fa.tensor(name).shape;
    const auto va = fa.read_f32(name, std::span<const std::int64_t>(shape)), vb = fb.read_f32(name, std::span<const std::int64_t>(shape));
    for (std::size_t k = 0; k < va.size(); ++k)
      worst = std::max(worst, static_cast<double>(std::abs(va[k] - vb[k]) / (1e-3f + std::abs(vb[k]))));
  }
  INFO("largest relative difference in the adapter: " << worst);
  CHECK(worst < 1e-4);
}

// Every file under dir; a TensorBoard event file as its pattern (its name holds the time and the pid).
std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(kWork / dir)) {
    const std::string rel = fs::relative(e.path(), kWork / dir).string();
    out.push_back(rel.starts_with("runs/events.out.tfevents.") ? "runs/events.out.tfevents.*" : rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("identity_finetune on 2 ranks matches 1 process at the same global batch", "[dist][cli]") {
  use_work_dir("same_global_batch");
  auto [rc1, out1] = run("", "--gradient_accumulation_steps 4 --output_dir one");
  INFO(out1);
  REQUIRE(rc1 == 0);
  auto [rc2, out2] = run("NPROC_PER_NODE=2 MASTER_PORT=0", "--gradient_accumulation_steps 2 --output_dir two");
  INFO(out2);
  REQUIRE(rc2 == 0);
  CHECK_THAT(out2, Catch::Contains("[dist] rank 0/2") && Catch::Contains("[dist] rank 1/2"));
  CHECK_THAT(out2, Catch::Contains("8 optimizer steps"));
  check_same_run("two", "one", "checkpoint-8");
  // Rank 1 wrote nothing: the same files as the single-process run.
  auto a = listing("one"), b = listing("two");
  CHECK(a == b);
}

TEST_CASE("a 2-rank run resumes as 1 process and a 1-process run as 2 ranks", "[dist][cli]") {
  use_work_dir("resume_across_world_sizes");
  REQUIRE(run("", "--gradient_accumulation_steps 4 --output_dir full").first == 0);
  // 2 ranks, rank 0 killed after step 5 (checkpoint-4 is on disk): the launcher reports it. The
  // killed runs save in line: a kill while a checkpoint's files are written beside the steps (the
  // default) leaves the one before it, so the kill point's checkpoint would depend on timing.
  auto [rc, out] = run("NPROC_PER_NODE=2 MASTER_PORT=0 PEFT_DEBUG_FAULT_RANK=0",
                       "--gradient_accumulation_steps 2 --output_dir from2 --debug_sigkill_at_step 5 --async_save false");
  INFO(out);
  CHECK(rc != 0);
  CHECK_THAT(out, Catch::Contains("rank 0 (pid") && Catch::Contains("died by signal 9"));
  REQUIRE(fs::exists(kWork / "from2/checkpoint-4/optimizer.safetensors"));
  REQUIRE(run("", "--gradient_accumulation_steps 4 --output_dir from2 --resume_from_checkpoint from2/checkpoint-4").first == 0);
  check_same_run("from2", "full", "checkpoint-8");
  // The other way: 1 process killed after step 5, resumed on 2 ranks.
  CHECK(run("", "--gradient_accumulation_steps 4 --output_dir from1 --debug_sigkill_at_step 5 --async_save false")
            .first != 0);
  auto [rc3, out3] = run("NPROC_PER_NODE=2 MASTER_PORT=0",
                         "--gradient_accumulation_steps 2 --output_dir from1 --resume_from_checkpoint from1/checkpoint-4");
  INFO(out3);
  REQUIRE(rc3 == 0);
  check_same_run("from1", "full", "checkpoint-8");
}
