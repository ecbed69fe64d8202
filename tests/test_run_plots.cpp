// What a training run leaves to look at: loss.svg (x-axis to the last step, every step's point,
// grad norm and identity accuracy), images/*.png as ms-swift names them, and with report_to
// tensorboard one event file under runs/ holding every logging.jsonl number at its step.
#include <cairo.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <regex>

#include "peft/qwen.hpp"
#include "support/fixture.hpp"
#include "support/temp_dir.hpp"
#include "support/tensorboard_events.hpp"

using namespace peft;

namespace {

using Model = Qwen2<Lora<>, Fp32, Cpu>;

// Reports an identity accuracy at every evaluation, as the identity hook does, so its curve is drawn.
struct FakeIdentityAccuracy {
  bool evaluates() const { return true; }
  void on_evaluate(nlohmann::json& e) { e["eval_identity_accuracy"] = 0.25 * static_cast<double>(e["step"].get<int>() / 5); }
};

TrainResult train_run(const std::filesystem::path& out, bool tensorboard) {
  LoraConfig lora = read_adapter_config(test::fixture("tiny_public") / "adapter");
  auto model = Model::from_pretrained(test::fixture("tiny_public") / "model", lora, 7);
  TrainingArguments a;
  a.learning_rate = 2e-3;
  a.max_steps = 13;
  a.warmup_steps = 4;
  a.logging_steps = 4;
  a.eval_steps = 5;
  a.save_steps = 100;
  if (tensorboard) a.report_to = {"tensorboard"};
  Trainer<Model, AdamW, NamedSchedule, FakeIdentityAccuracy> t(*model, a, AdamW(), NamedSchedule("cosine"), {});
  t.set_run_dir(out);
  t.set_quiet(true);
  const auto samples = test::fixture_samples("tiny_public");
  return t.train(samples, &samples);
}

std::string read_text(const std::filesystem::path& f) {
  std::ifstream in(f);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("a run's loss.svg ends its x-axis at the last step and draws every step") {
  test::TempDir dir("run_plots_svg");
  const TrainResult r = train_run(dir.path, false);
  REQUIRE(r.global_step == 13);
  const std::string svg = read_text(dir / "loss.svg");
  // The x tick labels of the upper panel: none past the last step (the old axis went to 14 or 15).
  const std::regex tick(R"(text-anchor="middle">([0-9.]+)</text>)");
  double largest = 0;
  for (std::sregex_iterator it(svg.begin(), svg.end(), tick), end; it != end; ++it)
    largest = std::max(largest, std::stod((*it)[1]));
  CHECK(largest <= 13);
  CHECK(largest >= 10);
  // The train-loss polyline (the first one) has one point per step, not one per log entry (4).
  const auto at = svg.find("<polyline");
  REQUIRE(at != std::string::npos);
  const auto pts_at = svg.find("points=\"", at) + 8;
  const std::string pts = svg.substr(pts_at, svg.find('"', pts_at) - pts_at);
  CHECK(std::count(pts.begin(), pts.end(), ',') == 13);
  CHECK(svg.find("grad norm") != std::string::npos);
  CHECK(svg.find("eval identity accuracy") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "runs"));  // no --report_to: no events
}

TEST_CASE("a run writes ms-swift's images/*.png") {
  test::TempDir dir("run_plots_png");
  train_run(dir.path, false);
  for (const char* name : {"train_loss", "train_learning_rate", "train_grad_norm", "eval_loss", "eval_identity_accuracy"}) {
    INFO(name);
    const auto file = dir / "images" / (std::string(name) + ".png");
    REQUIRE(std::filesystem::exists(file));
    cairo_surface_t* s = cairo_image_surface_create_from_png(file.c_str());
    CHECK(cairo_surface_status(s) == CAIRO_STATUS_SUCCESS);
    CHECK(cairo_image_surface_get_width(s) == 800);
    CHECK(cairo_image_surface_get_height(s) == 500);
    cairo_surface_destroy(s);
  }
}

TEST_CASE("report_to tensorboard writes every logged number as an event at its step") {
  test::TempDir dir("run_plots_tb");
  train_run(dir.path, true);
  const auto files = test::event_files(dir / "runs");
  REQUIRE(files.size() == 1);
  const auto events = test::read_events(files[0]);
  REQUIRE(events.size() >= 2);
  CHECK(events[0].file_version == "brain.Event:2");
  std::ifstream log(dir / "logging.jsonl");
  std::string line;
  std::size_t i = 1, compared = 0;
  while (std::getline(log, line)) {
    const auto e = nlohmann::json::parse(line);
    REQUIRE(i < events.size());
    CHECK(events[i].step == e["step"].get<std::int64_t>());
    for (const auto& [k, v] : e.items()) {
      if (k == "step" || !v.is_number()) continue;
      const std::string tag = k.rfind("eval_", 0) == 0 ? "eval/" + k.substr(5) : "train/" + k;
      INFO(tag << " at step " << e["step"]);
      REQUIRE(events[i].scalars.count(tag) == 1);
      CHECK(events[i].scalars.at(tag) == v.get<float>());
      ++compared;
    }
    ++i;
  }
  CHECK(i == events.size());
  CHECK(compared > 20);
}

TEST_CASE("report_to accepts tensorboard, all and none, and names what it does not write") {
  TrainingArguments a;
  a.report_to = {"none"};
  CHECK_FALSE(a.reports_tensorboard());
  a.report_to = {"all"};
  CHECK(a.reports_tensorboard());
  a.report_to = {"wandb"};
  CHECK_THROWS_WITH(a.validate(), Catch::Contains("--report_to wandb") && Catch::Contains("tensorboard"));
}
