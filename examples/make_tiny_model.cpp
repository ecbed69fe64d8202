// make_tiny_model: the embedded default (sft/embedded_default.hpp: tiny Qwen2.5 architecture, the
// real Qwen2.5 tokenizer, random weights from a fixed seed) written out as a model folder, so the
// commands that take a model on disk (identity_finetune --model, chat --model, merge_lora) run
// after the quickstart without a download:
//   make_tiny_model DIR      writes DIR/config.json, DIR/model.safetensors (float32), DIR/tokenizer.json
// The weights are the ones identity_finetune trains when no --model is given (the same draws), so
// a run on DIR starts where the embedded default starts. DIR must not exist yet: this program
// never overwrites a folder it did not create.
#include <fmt/format.h>

#include <filesystem>

#include "peft/qwen.hpp"
#include "sft/embedded_default.hpp"

using namespace peft;

int main(int argc, char** argv) try {
  if (argc != 2 || std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h") {
    fmt::print(argc == 2 ? stdout : stderr,
               "usage: make_tiny_model DIR\n  writes the embedded default model (random weights) as a model folder:\n"
               "  config.json, model.safetensors, tokenizer.json\n");
    return argc == 2 ? 0 : 2;
  }
  const std::filesystem::path dir = argv[1];
  require(!std::filesystem::exists(std::filesystem::symlink_status(dir)),
          "{} already exists: make_tiny_model writes a new folder and never overwrites one", dir.string());
  const auto tokenizer = examples::default_tokenizer();
  require(std::filesystem::exists(tokenizer), "{} is missing: run tools/fetch_tokenizer.sh (part of the set-up) first",
          tokenizer.string());

  // Every parameter trainable: the checkpoint writer then saves the whole model as HF weights
  // (model.safetensors + config.json), which is what a model folder is.
  using Model = Qwen2<FullModel, Fp32, Cpu>;
  RandomWeights weights(examples::kEmbeddedWeightSeed);
  auto model = Model::from_weights(examples::embedded_default_config(), weights, LoraConfig{}, 0);
  write_directory_atomic(dir, [&](const std::filesystem::path& staging) {
    save_trained_weights(staging, *model, std::string(examples::kEmbeddedModelName));
    std::filesystem::copy_file(tokenizer, staging / "tokenizer.json");
  });
  fmt::print("make_tiny_model: wrote {} (config.json, model.safetensors, tokenizer.json): the embedded default, "
             "random weights (seed {})\n", dir.string(), examples::kEmbeddedWeightSeed);
  return 0;
} catch (const std::exception& e) {
  fmt::print(stderr, "make_tiny_model: error: {}\n", e.what());
  return 1;
}
