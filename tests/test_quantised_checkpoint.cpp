// Pre-quantised checkpoints (peft/io/quantised_checkpoint.hpp) are refused naming the format,
// from config.json's quantization_config or from a tensor only such a checkpoint has.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "peft/io/model_config.hpp"
#include "peft/io/quantised_checkpoint.hpp"

using namespace peft;

TEST_CASE("a quantization_config in config.json is refused naming its method", "[quantised_checkpoint]") {
  for (const std::string method : {"gptq", "awq", "bitsandbytes"}) {
    const auto j = nlohmann::json::parse(R"({"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 512, "quantization_config": {"quant_method": ")" + method + R"("}})");
    CHECK_THROWS_WITH(ModelConfig::from_json(j, "m/config.json"),
                      Catch::Contains("m/config.json: this checkpoint is already quantised") &&
                          Catch::Contains("quant_method = '" + method + "'"));
  }
  CHECK_NOTHROW(reject_quantization_config(nlohmann::json::parse(R"({"hidden_size": 64})"), "ok"));
}

TEST_CASE("tensors only quantised checkpoints have are refused naming the format", "[quantised_checkpoint]") {
  CHECK_THROWS_WITH(reject_quantised_tensors(std::vector<std::string>{"model.layers.0.self_attn.q_proj.qweight"}, "dir"),
                    Catch::Contains("q_proj.qweight' is GPTQ/AWQ-quantised"));
  CHECK_THROWS_WITH(reject_quantised_tensors(std::vector<std::string>{"model.layers.0.mlp.up_proj.weight.absmax"}, "dir"),
                    Catch::Contains("is bitsandbytes-quantised"));
  CHECK_NOTHROW(reject_quantised_tensors(std::vector<std::string>{"model.layers.0.mlp.up_proj.weight",
                                                                  "model.layers.0.self_attn.q_proj.bias"}, "dir"));
}
