// Numerics at the disk boundary (issue 17, items 5 and 12): AdamW hyperparameters that make every
// weight NaN are refused up front; no adapter, checkpoint or merged model is written with a NaN
// or Inf; adapters and base models holding one are refused when read (training, chat, merging,
// GGUF export); each error names the file
// (or folder) and the tensor. Broken inputs are made from the tiny fixture with one value poisoned.
#include <catch2/catch.hpp>

#include <functional>
#include <limits>

#include "peft/io/gguf_qwen2.hpp"
#include "peft/io/merge_lora.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/models/qwen2.hpp"
#include "peft/optim/adamw.hpp"
#include "support/fixture.hpp"

using namespace peft;
namespace fs = std::filesystem;
using Catch::Contains;
using Model = Qwen2<Lora<>, Fp32, Cpu>;

namespace {

fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("peft_test_nonfinite_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  return p;
}

// A copy of the safetensors file `in` at `out`, with element 3 of tensor `poisoned` set to `value`.
void write_poisoned_copy(const fs::path& in, const fs::path& out, const std::string& poisoned, float value) {
  const auto src = SafetensorsFile::open(in);
  SafetensorsWriter w;
  for (const auto& name : src.names()) {
    const auto& t = src.tensor(name);
    std::vector<float> v = src.read_f32(name, t.shape);
    if (name == poisoned) v.at(3) = value;
    w.add_f32(name, t.shape, v, t.dtype);
  }
  w.write(out);
}

// tiny_public's adapter with one value of `tensor` poisoned.
fs::path poisoned_adapter(const std::string& name, const std::string& tensor, float value) {
  const fs::path src = test::fixture("tiny_public") / "adapter_trained", dir = scratch(name);
  fs::create_directories(dir);
  fs::copy_file(src / "adapter_config.json", dir / "adapter_config.json");
  write_poisoned_copy(src / "adapter_model.safetensors", dir / "adapter_model.safetensors", tensor, value);
  return dir;
}

const std::string kLoraA = "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight";
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

}  // namespace

TEST_CASE("AdamW betas outside 0 <= beta < 1 and eps <= 0 are refused, naming the flag") {
  struct Case {
    double b1, b2, eps;
    const char* flag;
  };
  for (const Case& c : {Case{0.9, 1.0, 1e-8, "--adam_beta2 1 "}, Case{1.5, 0.95, 1e-8, "--adam_beta1 1.5 "},
                        Case{-0.1, 0.95, 1e-8, "--adam_beta1 -0.1 "}, Case{0.9, 0.95, 0.0, "--adam_epsilon 0 "},
                        Case{0.9, 0.95, -1e-8, "--adam_epsilon -1e-08 "}}) {
    TrainingArguments t;
    t.adam_beta1 = c.b1;
    t.adam_beta2 = c.b2;
    t.adam_epsilon = c.eps;
    CHECK_THROWS_WITH(t.validate(), Contains(c.flag));
    CHECK_THROWS_AS(AdamW({c.b1, c.b2, c.eps, 0.0}), Error);
  }
  TrainingArguments ok;
  ok.adam_beta1 = 0.0;
  ok.adam_beta2 = 0.999999;
  CHECK_NOTHROW(ok.validate());
}

TEST_CASE("a NaN or Inf trainable weight is never saved: the adapter folder stays empty") {
  LoraConfig lora = read_adapter_config(test::fixture("tiny_public") / "adapter");
  auto model = Model::from_pretrained(test::fixture("tiny_public") / "model", lora, 3);
  const ParameterList params = model->trainable_parameters();
  for (const float bad : {kNaN, kInf}) {
    (*params.at(5).value)(0, 1) = bad;
    const fs::path dir = scratch("save");
    REQUIRE_THROWS_WITH(save_adapter(dir, params, lora, "base"),
                        Contains(dir.string()) && Contains(params.at(5).name) && Contains("non-finite") &&
                            Contains("refusing to save"));
    CHECK_FALSE(fs::exists(dir / "adapter_model.safetensors"));
    (*params.at(5).value)(0, 1) = 0.0f;
  }
}

TEST_CASE("an adapter holding a NaN or Inf is refused when loaded (--adapters, chat) and merged (merge_lora)") {
  for (const float bad : {kNaN, kInf}) {
    const fs::path adapter = poisoned_adapter(bad == kInf ? "inf_adapter" : "nan_adapter", kLoraA, bad);
    const std::string file = (adapter / "adapter_model.safetensors").string();
    LoraConfig lora = read_adapter_config(adapter);
    auto model = Model::from_pretrained(test::fixture("tiny_public") / "model", lora, 3);
    CHECK_THROWS_WITH(load_adapter_weights(adapter, model->trainable_parameters()),
                      Contains(file) && Contains(kLoraA) && Contains(bad == kInf ? "first Inf" : "first NaN"));

    const fs::path out = scratch("merged");
    CHECK_THROWS_WITH(merge_lora(test::fixture("tiny_public") / "model", adapter, out),
                      Contains(file) && Contains(kLoraA) && Contains("non-finite"));
    CHECK_FALSE(fs::exists(out));
    fs::remove_all(adapter);
  }
}

TEST_CASE("a NaN base weight is reported as a broken checkpoint naming the tensor, not as a learning-rate problem") {
  const fs::path dir = scratch("nan_base");
  fs::create_directories(dir);
  const fs::path src = test::fixture("tiny_public") / "model";
  fs::copy_file(src / "config.json", dir / "config.json");
  write_poisoned_copy(src / "model.safetensors", dir / "model.safetensors", "model.layers.0.mlp.up_proj.weight", kNaN);
  try {
    Model::from_pretrained(dir, LoraConfig{}, 3);
    FAIL("a NaN base weight was accepted");
  } catch (const Error& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Contains((dir / "model.safetensors").string()) && Contains("model.layers.0.mlp.up_proj.weight") &&
                         Contains("non-finite") && Contains("checkpoint is broken"));
    CHECK_THAT(what, !Contains("learning_rate"));
  }
  fs::remove_all(dir);
}

TEST_CASE("adapter_config.json with a lora_alpha of the wrong type names the file and the field") {
  const fs::path dir = scratch("alpha");
  fs::create_directories(dir);
  nlohmann::json j = read_json_file(test::fixture("tiny_public") / "adapter" / "adapter_config.json");
  const std::string file = (dir / "adapter_config.json").string();
  j["lora_alpha"] = "32";
  write_text_atomic(dir / "adapter_config.json", j.dump());
  CHECK_THROWS_WITH(read_adapter_config(dir), Contains(file) && Contains("'lora_alpha' must be a number, got string"));
  CHECK_THROWS_WITH(read_adapter_config(dir), !Contains("json.exception"));
  j["lora_alpha"] = 16;  // an integer is PEFT's usual spelling
  write_text_atomic(dir / "adapter_config.json", j.dump());
  CHECK(read_adapter_config(dir).lora_alpha == 16.0);
  j["r"] = 8.5;
  write_text_atomic(dir / "adapter_config.json", j.dump());
  CHECK_THROWS_WITH(read_adapter_config(dir), Contains(file) && Contains("'r' must be an integer"));
  j["r"] = 8;
  j["target_modules"] = {"q_proj", 3};
  write_text_atomic(dir / "adapter_config.json", j.dump());
  CHECK_THROWS_WITH(read_adapter_config(dir), Contains(file) && Contains("'target_modules'"));
  fs::remove_all(dir);
}

TEST_CASE("a NaN base weight is refused by merge_lora and the GGUF export, naming the file and tensor, and writes nothing") {
  const fs::path src = test::fixture("tiny_public") / "model";
  const fs::path adapter = test::fixture("tiny_public") / "adapter_trained";
  // A tensor merge_lora copies as it is, and one it adds a LoRA update to.
  for (const std::string tensor : {"model.norm.weight", "model.layers.1.mlp.down_proj.weight"}) {
    const fs::path dir = scratch("nan_base_export");
    fs::create_directories(dir);
    fs::copy_file(src / "config.json", dir / "config.json");
    write_poisoned_copy(src / "model.safetensors", dir / "model.safetensors", tensor, kNaN);
    const fs::path merged = scratch("nan_base_merged"), gguf = scratch("nan_base.gguf");
    auto refused = [&](const std::function<void()>& f) {
      try {
        f();
      } catch (const Error& e) {
        CHECK_THAT(e.what(), Contains((dir / "model.safetensors").string()) && Contains(tensor) &&
                                 Contains("non-finite") && Contains("checkpoint is broken"));
        return true;
      }
      return false;
    };
    CHECK(refused([&] { merge_lora(dir, adapter, merged); }));
    CHECK_FALSE(fs::exists(merged));
    CHECK(refused([&] { gguf::write_qwen2_gguf(dir, gguf, gguf::TensorType::F16, "nan"); }));
    CHECK_FALSE(fs::exists(gguf));
    fs::remove_all(dir);
  }
}
