// The trainer's write thread (train/background_write.hpp): work runs one at a time, its error
// comes back at the next wait or start, the destructor lets a write under way finish; and through
// the trainer, a checkpoint write that fails on that thread fails train() naming the file, with
// nothing half-written left, in line and with --async_save alike.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

#include "peft/qwen.hpp"
#include "support/fixture.hpp"

using namespace peft;
using Catch::Contains;

TEST_CASE("BackgroundWrite runs one work at a time and hands its error back once") {
  std::atomic<int> done{0};
  BackgroundWrite w;
  w.start([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    done = 1;
  });
  w.start([&] { done = done == 1 ? 2 : -1; });  // starts only after the first finished
  w.wait();
  CHECK(done == 2);

  w.start([] { fail("{}: disk full", "out/checkpoint-4/optimizer.safetensors"); });
  CHECK_THROWS_WITH(w.wait(), Contains("out/checkpoint-4/optimizer.safetensors"));
  CHECK_NOTHROW(w.wait());  // handed back once

  w.start([] { fail("first write failed"); });
  bool second_ran = false;
  CHECK_THROWS_WITH(w.start([&] { second_ran = true; }), Contains("first write failed"));
  w.wait();
  CHECK_FALSE(second_ran);  // an error stops the next write from starting

  {
    BackgroundWrite scoped;
    scoped.start([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      done = 3;
    });
  }  // the destructor waits for the write under way
  CHECK(done == 3);
}

TEST_CASE("a checkpoint write that fails fails the run naming the file and leaves no partial checkpoint") {
  using Model = Qwen2<Lora<>, Fp32, Cpu>;
  const bool async_save = GENERATE(false, true);
  INFO("async_save " << async_save);
  const auto out = std::filesystem::temp_directory_path() / ("peft_test_bgwrite_" + std::to_string(async_save));
  std::filesystem::remove_all(out);
  auto model = Model::from_pretrained(test::fixture("tiny_public") / "model",
                                      read_adapter_config(test::fixture("tiny_public") / "adapter"), 7);
  TrainingArguments a;
  a.num_train_epochs = 1;
  a.save_steps = 2;
  a.async_save = async_save;
  a.output_dir = out;
  Trainer<Model, AdamW, NamedSchedule> t(*model, a, AdamW({0.9, 0.999, 1e-8, 0.0}), NamedSchedule("linear"));
  t.set_run_dir(out);
  t.set_quiet(true);
  const std::string bad(300, 'x');  // longer than a file name may be: creating it fails
  t.set_checkpoint_files({{bad, "text"}});
  CHECK_THROWS_WITH(t.train(test::fixture_samples("tiny_public")),
                    Contains("checkpoint-2") && Contains(bad) && Contains("cannot create temporary file"));
  for (const auto& e : std::filesystem::directory_iterator(out)) {
    INFO(e.path().string());
    CHECK(e.path().filename().string().find("checkpoint") == std::string::npos);
  }
  std::filesystem::remove_all(out);
}
