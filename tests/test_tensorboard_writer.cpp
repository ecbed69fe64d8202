// The TensorBoard event writer (train/tensorboard_writer.hpp), read back by an independent parser
// (support/tensorboard_events.hpp) written from the format's description.
#include <catch2/catch.hpp>
#include <cstring>
#include <map>

#include "peft/train/tensorboard_writer.hpp"
#include "support/temp_dir.hpp"
#include "support/tensorboard_events.hpp"

using namespace peft;
using peft::test::mask;
using peft::test::parse_event;
using peft::test::read_events;

TEST_CASE("crc32c is the Castagnoli CRC (the check value of the standard test string)") {
  CHECK(tensorboard::crc32c("123456789", 9) == 0xE3069283u);
  CHECK(tensorboard::crc32c("", 0) == 0u);
  CHECK(tensorboard::masked_crc32c("123456789", 9) == mask(0xE3069283u));
}

TEST_CASE("TensorBoardWriter writes a file version event, then one event per log entry, tagged as HF does") {
  test::TempDir dir("tensorboard");
  std::filesystem::path file;
  {
    TensorBoardWriter w(dir / "runs");
    file = w.file();
    w.add_log_entry({{"step", 5}, {"loss", 1.25}, {"learning_rate", 1e-4}, {"grad_norm", 0.5}, {"epoch", 0.5}});
    w.add_log_entry({{"step", 10}, {"eval_loss", 2.5}, {"eval_identity_accuracy", 0.75}, {"epoch", 1.0}});
    w.add_log_entry({{"step", 15}, {"loss", nullptr}, {"note", "text"}});  // nothing numeric but step: no event
  }
  CHECK(file.parent_path() == dir / "runs");
  CHECK(file.filename().string().rfind("events.out.tfevents.", 0) == 0);
  const auto events = read_events(file);
  REQUIRE(events.size() == 3);
  CHECK(events[0].file_version == "brain.Event:2");
  CHECK(events[0].wall_time > 1.6e9);
  CHECK(events[1].step == 5);
  CHECK(events[1].scalars == std::map<std::string, float>{
                                 {"train/loss", 1.25f}, {"train/learning_rate", 1e-4f}, {"train/grad_norm", 0.5f},
                                 {"train/epoch", 0.5f}});
  CHECK(events[2].step == 10);
  CHECK(events[2].scalars ==
        std::map<std::string, float>{{"eval/loss", 2.5f}, {"eval/identity_accuracy", 0.75f}, {"train/epoch", 1.0f}});  // HF: only eval_* keys are eval/
  CHECK(events[2].wall_time >= events[1].wall_time);
}

TEST_CASE("a second TensorBoardWriter in the same folder (a resumed run) never overwrites the first file") {
  test::TempDir dir("tensorboard_two");
  TensorBoardWriter a(dir / "runs");
  a.add_scalars(1, {{"train/loss", 1.0f}});
  TensorBoardWriter b(dir / "runs");
  CHECK(a.file() != b.file());
  CHECK(read_events(a.file()).size() == 2);
}

TEST_CASE("a corrupted byte breaks the record's CRC") {
  const std::string r = tensorboard::tfrecord(tensorboard::scalar_event(1.0, 3, {{"train/loss", 2.0f}}));
  std::string bad = r;
  bad[20] ^= 0x01;
  const auto len_crc = [](const std::string& s) { std::uint32_t c; std::memcpy(&c, s.data() + 8, 4); return c; };
  const auto data_crc = [](const std::string& s) { std::uint32_t c; std::memcpy(&c, s.data() + s.size() - 4, 4); return c; };
  CHECK(len_crc(r) == mask(tensorboard::crc32c(r.data(), 8)));
  CHECK(data_crc(r) == mask(tensorboard::crc32c(r.data() + 12, r.size() - 16)));
  CHECK(data_crc(bad) != mask(tensorboard::crc32c(bad.data() + 12, bad.size() - 16)));
  CHECK(parse_event(std::string_view(r).substr(12, r.size() - 16)).scalars.at("train/loss") == 2.0f);
}
