// config.json parsing: the transformers 5 fixture, 4.x spellings, defaults, and errors that name
// the file and the field.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "peft/io/atomic_file.hpp"
#include "peft/io/checkpoint_shapes.hpp"
#include "peft/io/model_config.hpp"

namespace fs = std::filesystem;
using namespace peft;
using Catch::Contains;

namespace {

const fs::path kTinyConfig = fs::path(PEFT_FIXTURES) / "tiny_public" / "model" / "config.json";

nlohmann::json minimal_config() {
  return {{"hidden_size", 64}, {"intermediate_size", 176}, {"num_hidden_layers", 2},
          {"num_attention_heads", 4}, {"vocab_size", 512}};
}

fs::path temp_file(const std::string& name) {
  static int counter = 0;
  return fs::temp_directory_path() /
         ("peft_test_model_config_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + name);
}

}  // namespace

TEST_CASE("tiny fixture config (transformers 5: rope_parameters / dtype)") {
  const ModelConfig c = ModelConfig::from_file(kTinyConfig);
  CHECK(c.hidden_size == 64);
  CHECK(c.intermediate_size == 176);
  CHECK(c.num_hidden_layers == 2);
  CHECK(c.num_attention_heads == 4);
  CHECK(c.num_key_value_heads == 2);
  CHECK(c.vocab_size == 512);
  CHECK(c.max_position_embeddings == 256);
  CHECK(c.head_dim == 16);
  CHECK(c.rope_theta == 1e6);
  CHECK(c.rms_norm_eps == 1e-6);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK(c.model_type == "qwen2");
  CHECK(c.torch_dtype == "float32");
}

TEST_CASE("config defaults and transformers 4 spellings") {
  nlohmann::json j = minimal_config();
  ModelConfig c = ModelConfig::from_json(j, "min.json");
  CHECK(c.num_key_value_heads == 4);
  CHECK(c.head_dim == 16);
  CHECK(c.rope_theta == 10000.0);
  CHECK(c.max_position_embeddings == 32768);
  CHECK(c.torch_dtype == "float32");

  j["rope_theta"] = 500000.0;
  j["torch_dtype"] = "bfloat16";
  j["rope_scaling"] = nullptr;
  j["num_key_value_heads"] = 1;
  j["head_dim"] = 32;
  j["tie_word_embeddings"] = true;
  c = ModelConfig::from_json(j, "v4.json");
  CHECK(c.rope_theta == 500000.0);
  CHECK(c.torch_dtype == "bfloat16");
  CHECK(c.num_key_value_heads == 1);
  CHECK(c.head_dim == 32);
  CHECK(c.tie_word_embeddings);
}

TEST_CASE("config missing required fields name the file and the field") {
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"}) {
    SECTION(field) {
      nlohmann::json j = minimal_config();
      j.erase(field);
      const fs::path p = temp_file("config.json");
      write_text_atomic(p, j.dump());
      REQUIRE_THROWS_WITH(ModelConfig::from_file(p), Contains(p.string()) && Contains(std::string("'") + field + "'"));
      fs::remove(p);
    }
  }
}

TEST_CASE("config with wrong types / bad values or unsupported features is rejected") {
  struct Case {
    const char* what;
    nlohmann::json patch;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"string size", {{"hidden_size", "64"}}, "'hidden_size' must be an integer"},
      {"float size", {{"vocab_size", 512.5}}, "'vocab_size' must be an integer"},
      {"zero layers", {{"num_hidden_layers", 0}}, "'num_hidden_layers' must be positive"},
      {"heads do not divide hidden", {{"num_attention_heads", 5}}, "not divisible by num_attention_heads"},
      {"kv heads do not divide heads", {{"num_key_value_heads", 3}}, "not divisible by num_key_value_heads"},
      {"odd head_dim", {{"head_dim", 15}}, "must be even"},
      {"negative eps", {{"rms_norm_eps", -1.0}}, "rms_norm_eps"},
      {"bool as string", {{"tie_word_embeddings", "false"}}, "'tie_word_embeddings' must be true or false"},
      {"yarn rope", {{"rope_scaling", {{"type", "yarn"}, {"factor", 4.0}}}}, "rope_type 'yarn'"},
      {"rope_parameters not default", {{"rope_parameters", {{"rope_type", "linear"}}}}, "rope_type 'linear'"},
      {"disagreeing rope_theta", {{"rope_theta", 1e4}, {"rope_parameters", {{"rope_theta", 1e6}}}}, "disagree"},
      {"gelu", {{"hidden_act", "gelu"}}, "hidden_act 'gelu'"},
      {"sliding window", {{"use_sliding_window", true}}, "use_sliding_window"},
      {"another architecture", {{"model_type", "llama"}}, "model_type 'llama' is not supported"},
      {"size past any memory", {{"intermediate_size", std::int64_t{1} << 40}}, "'intermediate_size' = 1099511627776 is too large"},
  };
  for (const Case& c : cases) {
    SECTION(c.what) {
      nlohmann::json j = minimal_config();
      j.update(c.patch);
      REQUIRE_THROWS_WITH(ModelConfig::from_json(j, "some/config.json"),
                          Contains("some/config.json") && Contains(c.message));
    }
  }
  REQUIRE_THROWS_WITH(ModelConfig::from_json(nlohmann::json::array(), "arr.json"), Contains("arr.json"));
}

TEST_CASE("malformed or missing config.json names the file") {
  const fs::path p = temp_file("config.json");
  write_text_atomic(p, "{\n  \"hidden_size\": 64,\n  \"vocab_size\": \n}\n");
  REQUIRE_THROWS_WITH(ModelConfig::from_file(p), Contains(p.string()) && Contains("invalid JSON") && Contains("line 4"));
  write_text_atomic(p, R"({"hidden_size": 1e400})");  // out_of_range in nlohmann, found by the fuzz test
  REQUIRE_THROWS_WITH(ModelConfig::from_file(p), Contains(p.string()) && Contains("number overflow"));
  fs::remove(p);
  REQUIRE_THROWS_WITH(ModelConfig::from_file(p), Contains(p.string()));
}

TEST_CASE("config to_json is what transformers loads and reads back the same") {
  ModelConfig c = ModelConfig::from_file(kTinyConfig);
  c.tie_word_embeddings = true;
  c.torch_dtype = "bfloat16";
  const nlohmann::json j = c.to_json();
  CHECK(j["architectures"] == nlohmann::json::array({"Qwen2ForCausalLM"}));
  CHECK(j["model_type"] == "qwen2");
  CHECK(j["hidden_act"] == "silu");
  CHECK(j["rope_theta"] == 1e6);
  CHECK(j["rope_parameters"]["rope_theta"] == 1e6);
  CHECK(j["rope_parameters"]["rope_type"] == "default");
  CHECK(j["dtype"] == "bfloat16");

  const ModelConfig back = ModelConfig::from_json(j, "roundtrip");
  CHECK(back.hidden_size == c.hidden_size);
  CHECK(back.intermediate_size == c.intermediate_size);
  CHECK(back.num_hidden_layers == c.num_hidden_layers);
  CHECK(back.num_attention_heads == c.num_attention_heads);
  CHECK(back.num_key_value_heads == c.num_key_value_heads);
  CHECK(back.vocab_size == c.vocab_size);
  CHECK(back.max_position_embeddings == c.max_position_embeddings);
  CHECK(back.head_dim == c.head_dim);
  CHECK(back.rope_theta == c.rope_theta);
  CHECK(back.rms_norm_eps == c.rms_norm_eps);
  CHECK(back.tie_word_embeddings);
  CHECK(back.torch_dtype == "bfloat16");
}

// Issue 17, item 6: the sizes config.json gives are checked against the checkpoint's headers
// before a model is allocated, so a wrong size is a named error at once, never gigabytes of
// allocation or a bare std::bad_alloc.
TEST_CASE("config.json sizes are checked against the checkpoint's tensor headers") {
  const fs::path dir = temp_file("model");
  fs::create_directories(dir);
  fs::copy_file(kTinyConfig.parent_path() / "model.safetensors", dir / "model.safetensors");
  const nlohmann::json good = read_json_file(kTinyConfig);
  write_text_atomic(dir / "config.json", good.dump());
  CHECK(read_checked_model_config(dir).intermediate_size == 176);

  struct Case {
    nlohmann::json patch;
    std::vector<std::string> message;
  };
  const std::vector<Case> cases = {
      {{{"intermediate_size", 5000000}}, {"model.layers.0.mlp.gate_proj.weight", "[176, 64]", "[5000000, 64]", "intermediate_size"}},
      {{{"vocab_size", 1000000000}}, {"model.embed_tokens.weight", "[1000000000, 64]"}},
      {{{"num_hidden_layers", 1000000000}}, {"no tensor 'model.layers.2.input_layernorm.weight'", "num_hidden_layers = 1000000000"}},
      {{{"num_key_value_heads", 4}}, {"model.layers.0.self_attn.k_proj.weight", "num_key_value_heads"}},
      {{{"tie_word_embeddings", true}, {"hidden_size", 128}, {"num_attention_heads", 8}}, {"model.embed_tokens.weight"}},
  };
  for (const Case& c : cases) {
    nlohmann::json j = good;
    j.update(c.patch);
    write_text_atomic(dir / "config.json", j.dump());
    INFO(c.patch.dump());
    try {
      read_checked_model_config(dir);
      FAIL("accepted");
    } catch (const Error& e) {
      const std::string what = e.what();
      CHECK_THAT(what, Contains((dir / "config.json").string()));
      for (const auto& m : c.message) CHECK_THAT(what, Contains(m));
    }
  }
  fs::remove_all(dir);
}
