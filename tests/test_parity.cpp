// Parity with the reference stack: our CPU fp32 trainer against HF transformers + PEFT on the
// fixtures in tests/fixtures (tiny_public from ../shared, the others from
// tools/reference/make_fixtures.py). Forward losses, per-step training losses and gradient
// norms, and the trained adapter must agree within 1e-4 relative (fp32 arithmetic in a
// different order drifts ~1e-6 per step; 1e-4 leaves room for 30 steps of AdamW).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>

#include "peft/io/safetensors.hpp"
#include "peft/qwen.hpp"
#include "support/fixture.hpp"
#include "support/parity.hpp"

using namespace peft;
using test::check_close;
using Model = Qwen2<Lora<>, Fp32, Cpu>;

namespace {

// Every tensor of `expected` is in `got`, and max|got - expected| <= rel * max|expected|.
void check_same_tensors(const std::filesystem::path& got_file, const std::filesystem::path& expected_file, double rel) {
  const auto got = SafetensorsFile::open(got_file);
  const auto want = SafetensorsFile::open(expected_file);
  REQUIRE(got.names() == want.names());
  for (const auto& name : want.names()) {
    const auto& shape = want.tensor(name).shape;
    const auto a = got.read_f32(name, shape);
    const auto b = want.read_f32(name, shape);
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
      scale = std::max(scale, static_cast<double>(std::abs(b[i])));
    }
    INFO(name << ": max abs diff " << diff << " vs max abs " << scale);
    CHECK(diff <= rel * scale);
  }
}

}  // namespace

TEST_CASE("forward loss equals PEFT's before training", "[parity]") {
  for (const std::string name : {"tiny_public", "tied_1kv_ga4_cosine", "batch2_ga2_linear"}) {
    SECTION(name) {
      auto model = test::load_fixture_model<Model>(name);
      const auto samples = test::fixture_samples(name);
      const auto golden = test::fixture_golden(name);
      const auto& want = golden["forward_loss_before_training"];
      REQUIRE(want.size() == samples.size());
      for (std::size_t i = 0; i < samples.size(); ++i)
        check_close(model->evaluate(PackedBatch::of(samples[i])).mean(), want[i].get<double>(), 1e-5,
                          name + " sample " + std::to_string(i));
    }
  }
}

TEST_CASE("training matches PEFT step for step", "[parity]") {
  for (const std::string name : {"tiny_public", "tied_1kv_ga4_cosine", "batch2_ga2_linear"}) {
    SECTION(name) {
      auto model = test::load_fixture_model<Model>(name);
      const auto samples = test::fixture_samples(name);
      const auto golden = test::fixture_golden(name);
      test::train_as_golden(*model, samples, golden, name);

      const auto out = std::filesystem::temp_directory_path() / ("peft_parity_" + name);
      std::filesystem::remove_all(out);
      save_adapter(out, model->trainable_parameters(), model->lora_config(), "");
      check_same_tensors(out / "adapter_model.safetensors",
                               test::fixture(name) / "adapter_trained" / "adapter_model.safetensors", 1e-4);
      std::filesystem::remove_all(out);
    }
  }
}
