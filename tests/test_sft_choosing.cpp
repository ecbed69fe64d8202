// run_sft_choosing (examples/sft/run_sft.hpp), the programs' shared run: the CUDA programs choose
// their model type (the activation policy that fits the GPU) after the data is read, so the chooser
// must see the data's longest sample, not --max_length (which defaults to the model's whole
// context), and what it settles must reach the run's args.json. Driven here with CPU models.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sft/run_sft.hpp"

namespace fs = std::filesystem;
using namespace peft;
using namespace peft::examples;

namespace {

const std::string kTiny = std::string(PEFT_FIXTURES) + "/tiny_public";

SftArgs args_for(const fs::path& out, std::vector<std::string> extra) {
  std::vector<std::string> v = {"identity_finetune", "--model", kTiny + "/model", "--dataset", kTiny + "/tokens.jsonl",
                                "--output_dir", out.string(), "--add_version", "false", "--torch_dtype", "float32"};
  v.insert(v.end(), extra.begin(), extra.end());
  std::vector<const char*> argv;
  for (const auto& s : v) argv.push_back(s.c_str());
  return parse_sft_args(static_cast<int>(argv.size()), argv.data());
}

// The fixture's longest row, in tokens, counted here from the file.
std::int64_t longest_row() {
  std::ifstream in(kTiny + "/tokens.jsonl");
  std::int64_t n = 0;
  for (std::string line; std::getline(in, line);)
    n = std::max<std::int64_t>(n, static_cast<std::int64_t>(nlohmann::json::parse(line)["input_ids"].size()));
  return n;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const char* name) : path(fs::temp_directory_path() / name) { fs::remove_all(path); }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST_CASE("the model type is chosen after the data is read, for its longest sample") {
  const TempDir out("peft_test_sft_choosing_longest");
  std::int64_t seen = -1, max_length = -1;
  const int rc = run_sft_choosing(args_for(out.path, {}), nullptr, [&](SftArgs& a, std::int64_t longest, auto&&) {
    seen = longest;
    max_length = a.data.max_length;
    return 7;  // the chooser's answer is the run's
  });
  CHECK(rc == 7);
  REQUIRE(longest_row() > 8);
  CHECK(seen == longest_row());
  CHECK(max_length == 256);  // --max_length defaulted to the model's max_position_embeddings, far above the data
}

TEST_CASE("what the chooser settles is what args.json records") {
  const TempDir out("peft_test_sft_choosing_record");
  const int rc = run_sft_choosing(args_for(out.path, {"--max_steps", "1"}), nullptr,
                                  [&](SftArgs& a, std::int64_t, auto&& run) {
                                    a.gradient_checkpointing = cuda::Activations::kSelective;  // as a fallback would
                                    a.recompute_num_layers = 1;
                                    return run.template operator()<LoraLm<Fp32>>();
                                  });
  REQUIRE(rc == 0);
  const nlohmann::json args = nlohmann::json::parse(std::ifstream(out.path / "args.json"));
  CHECK(args["gradient_checkpointing"] == "selective");
  CHECK(args["recompute_num_layers"] == 1);
  CHECK(args["max_length"] == 256);
}
