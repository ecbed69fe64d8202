// ms-swift's progress keys and tqdm bar (train/progress.hpp), and the token accuracy the CPU cross
// entropy counts for them: the formats parsers of ms-swift's logging.jsonl expect.
#include <catch2/catch.hpp>

#include <vector>

#include "peft/kernels/cpu/cross_entropy.hpp"
#include "peft/train/progress.hpp"

using namespace peft;

TEST_CASE("ms-swift's time format") {
  CHECK(swift_format_time(0) == "0s");
  CHECK(swift_format_time(45.9) == "45s");
  CHECK(swift_format_time(62) == "1m 2s");
  CHECK(swift_format_time(7205) == "2h 0m 5s");
  CHECK(swift_format_time(86400 + 3 * 3600) == "1d 3h 0m 0s");
}

TEST_CASE("the progress keys of a log entry") {
  nlohmann::json e;
  add_swift_progress_keys(e, 5, 60, 5, 10.0, 1.234);
  CHECK(e["global_step/max_steps"] == "5/60");
  CHECK(e["percentage"] == "8.33%");
  CHECK(e["elapsed_time"] == "10s");
  CHECK(e["remaining_time"] == "1m 50s");  // 2 s a step, 55 to go
  CHECK(e["memory(GiB)"] == Approx(1.23));
  CHECK(e["train_speed(iter/s)"] == Approx(0.5));
  // A resumed run: 3 steps taken by this process in 6 s, at step 30 of 60.
  add_swift_progress_keys(e, 30, 60, 3, 6.0, 0);
  CHECK(e["remaining_time"] == "1m 0s");
  CHECK(e["percentage"] == "50.00%");
}

TEST_CASE("an evaluation entry gets ms-swift's progress keys, not the training step's memory and speed") {
  nlohmann::json e = {{"eval_loss", 1.5}};
  add_swift_train_message(e, 50, 60, 50, 100.0);
  CHECK(e["global_step/max_steps"] == "50/60");
  CHECK(e["percentage"] == "83.33%");
  CHECK(e["elapsed_time"] == "1m 40s");
  CHECK(e["remaining_time"] == "20s");
  CHECK_FALSE(e.contains("memory(GiB)"));
  CHECK_FALSE(e.contains("train_speed(iter/s)"));
}

TEST_CASE("the tqdm line") {
  CHECK(tqdm_line(27, 60, 27, 10.0) == "Train:  45%|█████████           | 27/60 [00:10<00:12,  2.70it/s]");
  CHECK(tqdm_line(0, 60, 0, 0.0) == "Train:   0%|                    | 0/60 [00:00<?,  0.00it/s]");
  CHECK(tqdm_line(60, 60, 60, 3725.0) == "Train: 100%|████████████████████| 60/60 [1:02:05<00:00, 62.08s/it]");
  CHECK(tqdm_line(1, 16, 1, 1.0).find("▎") != std::string::npos);  // 1/16 of 20 cells: an eighth-block part
}

TEST_CASE("the CPU cross entropy counts the label tokens its argmax predicts (token_acc)") {
  Matrix w(3, 2);  // vocab 3, hidden 2: token 0 likes x, token 1 likes y, token 2 likes neither
  w << 1, 0, 0, 1, 0, 0;
  Matrix h(3, 2);
  h << 2, 0, 0, 2, 2, 0;
  const std::vector<std::int32_t> targets = {0, 1, 2};
  const auto r = cpu::cross_entropy(h, w, targets, 0.0f, nullptr, nullptr, [](Matrix&) {});
  CHECK(r.tokens == 3);
  CHECK(r.correct == 2);
}
