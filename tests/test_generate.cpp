// KV-cache generation on the CPU model: the cached forward equals the full forward pass, greedy
// decoding equals HF transformers' `generate` token for token (golden made by
// tools/reference/make_generate_golden.py), and the generator's bookkeeping (prefix reuse, stop
// tokens, max_new_tokens) behaves as documented.
#include <catch2/catch.hpp>
#include <fstream>

#include "peft/generate/greedy.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/models/qwen2.hpp"
#include "support/fixture.hpp"

using namespace peft;

namespace {

template <class Model>
std::unique_ptr<Model> fixture_model(const std::string& name, const std::string& adapter) {
  const auto dir = test::fixture(name);
  LoraConfig lora = read_adapter_config(dir / adapter);
  lora.lora_dropout = 0;
  auto model = Model::from_pretrained(dir / "model", lora, 0);
  load_adapter_weights(dir / adapter, model->trainable_parameters());
  return model;
}

// Rows of the full forward pass's logits against the cached pass fed in chunks of `chunk` tokens.
template <class Model>
double max_cached_vs_full_diff(Model& model, const std::vector<std::int32_t>& ids, std::size_t chunk, double& scale) {
  const Matrix full = model.logits(PackedBatch::of(Sample{ids, std::vector<std::int32_t>(ids.size(), kIgnoreIndex)}));
  auto cache = model.make_kv_cache();
  double diff = 0;
  scale = full.cwiseAbs().maxCoeff();
  for (std::size_t at = 0; at < ids.size(); at += chunk) {
    const std::size_t n = std::min(chunk, ids.size() - at);
    const Matrix rows = model.forward_cached(std::span(ids).subspan(at, n), cache, true);
    REQUIRE(rows.rows() == static_cast<Eigen::Index>(n));
    const Matrix want = full.middleRows(static_cast<Eigen::Index>(at), static_cast<Eigen::Index>(n));
    diff = std::max(diff, static_cast<double>((rows - want).cwiseAbs().maxCoeff()));
  }
  REQUIRE(cache.length() == static_cast<std::int64_t>(ids.size()));
  return diff;
}

// Greedy by re-running the whole sequence each step: slow, obviously right, our oracle.
template <class Model>
std::vector<std::int32_t> greedy_by_full_forward(Model& model, std::vector<std::int32_t> ids, int steps) {
  std::vector<std::int32_t> out;
  for (int i = 0; i < steps; ++i) {
    const Eigen::Index last = static_cast<Eigen::Index>(ids.size()) - 1;
    const Matrix logits =
        model.logits(PackedBatch::of(Sample{ids, std::vector<std::int32_t>(ids.size(), kIgnoreIndex)}),
                     std::span<const Eigen::Index>(&last, 1));
    const auto id = argmax(std::span<const float>(logits.data(), static_cast<std::size_t>(logits.size())));
    out.push_back(id);
    ids.push_back(id);
  }
  return out;
}

std::vector<nlohmann::json> golden_cases(const std::string& file) {
  std::ifstream in(test::fixture("generate") / file);
  REQUIRE(in);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  REQUIRE(!out.empty());
  return out;
}

using LoraFp32 = Qwen2<Lora<>, Fp32, Cpu>;

GenerationConfig greedy_for(std::int64_t max_new_tokens) {
  GenerationConfig g;
  g.max_new_tokens = max_new_tokens;
  return g;
}

}  // namespace

TEST_CASE("KV-cache logits equal the full forward pass (fp32)", "[generate]") {
  // fp32 sums in a different order (GEMV per new row vs one GEMM) differ by ~1e-6 of the logit
  // scale; 1e-5 of the scale is the bound, far below any argmax-changing gap.
  for (const std::string name : {"tiny_public", "tied_1kv_ga4_cosine", "batch2_ga2_linear"}) {
    SECTION(name) {
      auto model = fixture_model<LoraFp32>(name, "adapter_trained");
      const auto samples = test::fixture_samples(name);
      for (std::size_t chunk : {std::size_t{1}, std::size_t{5}, std::size_t{1000}}) {
        double scale = 0;
        const double diff = max_cached_vs_full_diff(*model, samples[0].input_ids, chunk, scale);
        INFO(name << " chunk " << chunk << ": max |cached - full| " << diff << ", max |logit| " << scale);
        CHECK(diff <= 1e-5 * scale);
        CHECK(diff <= 1e-4);
      }
    }
  }
}

TEST_CASE("KV-cache logits equal the full forward pass (bf16 storage)", "[generate]") {
  // Under Bf16Mixed every stored activation is rounded to bf16 (8 bits of mantissa): a different
  // summation order can move a value across a rounding boundary, one bf16 ulp (2^-8 relative),
  // and that propagates. 2% of the logit scale bounds it on these models; a wrong cache offset
  // or RoPE position gives differences of the order of the logits themselves.
  auto model = fixture_model<Qwen2<Lora<>, Bf16Mixed, Cpu>>("tiny_public", "adapter_trained");
  double scale = 0;
  const double diff = max_cached_vs_full_diff(*model, test::fixture_samples("tiny_public")[1].input_ids, 1, scale);
  INFO("max |cached - full| " << diff << ", max |logit| " << scale);
  CHECK(diff <= 0.02 * scale);
}

TEST_CASE("Frozen and Full models (merged weights) run the KV cache too", "[generate]") {
  const auto dir = test::fixture("tiny_public") / "model";
  const auto ids = test::fixture_samples("tiny_public")[2].input_ids;
  double scale = 0;
  auto frozen = Qwen2<Frozen, Fp32, Cpu>::from_pretrained(dir, LoraConfig{}, 0);
  const double frozen_diff = max_cached_vs_full_diff(*frozen, ids, 3, scale);
  CHECK(frozen_diff <= 1e-5 * scale);
  auto full = Qwen2<Full, Fp32, Cpu>::from_pretrained(dir, LoraConfig{}, 0);
  const double full_diff = max_cached_vs_full_diff(*full, ids, 3, scale);
  CHECK(full_diff <= 1e-5 * scale);
}

TEST_CASE("greedy decoding equals HF transformers' generate", "[generate][parity]") {
  for (const auto& c : golden_cases("greedy_golden.jsonl")) {
    const std::string name = c["fixture"], adapter = c["adapter"];
    INFO(c["id"].get<std::string>());
    GenerationConfig g = greedy_for(c["max_new_tokens"]);
    g.sampling.repetition_penalty = c.value("repetition_penalty", 1.0);
    const auto prompt = c["prompt"].get<std::vector<std::int32_t>>();
    const auto want = c["output"].get<std::vector<std::int32_t>>();
    std::vector<std::int32_t> got;
    if (adapter.empty()) {
      auto model = Qwen2<Frozen, Fp32, Cpu>::from_pretrained(test::fixture(name) / "model", LoraConfig{}, 0);
      got = Generator(*model).generate(prompt, g, [](std::int32_t) {}).tokens;
    } else {
      auto model = fixture_model<LoraFp32>(name, adapter);
      got = Generator(*model).generate(prompt, g, [](std::int32_t) {}).tokens;
    }
    CHECK(got == want);
  }
}

TEST_CASE("greedy with the KV cache equals greedy by re-running the sequence", "[generate]") {
  auto model = fixture_model<LoraFp32>("tiny_public", "adapter");
  const auto prompt = test::fixture_samples("tiny_public")[3].input_ids;
  std::vector<std::int32_t> streamed;
  const auto got =
      generate_greedy(*model, prompt, GreedyConfig{20, {}}, [&](std::int32_t id) { streamed.push_back(id); });
  CHECK(got == greedy_by_full_forward(*model, prompt, 20));
  CHECK(streamed == got);
}

TEST_CASE("generator reuses a shared prompt prefix and gives what a fresh one gives", "[generate]") {
  auto model = fixture_model<LoraFp32>("tiny_public", "adapter_trained");
  const auto sample = test::fixture_samples("tiny_public")[5].input_ids;
  const GenerationConfig g = greedy_for(12);
  Generator<LoraFp32> chat(*model);
  const std::vector<std::int32_t> first(sample.begin(), sample.begin() + 4);
  const Generation turn1 = chat.generate(first, g, [](std::int32_t) {});
  CHECK(turn1.reused_tokens == 0);

  // Turn 2: the history (prompt + reply) plus new tokens, as a chat re-renders it.
  std::vector<std::int32_t> second = first;
  second.insert(second.end(), turn1.tokens.begin(), turn1.tokens.end());
  second.insert(second.end(), sample.begin() + 4, sample.end());
  const Generation turn2 = chat.generate(second, g, [](std::int32_t) {});
  CHECK(turn2.reused_tokens == static_cast<std::int64_t>(first.size() + turn1.tokens.size() - 1));
  Generator<LoraFp32> fresh(*model);
  CHECK(fresh.generate(second, g, [](std::int32_t) {}).tokens == turn2.tokens);

  // A prompt that diverges early drops the rest of the cache.
  std::vector<std::int32_t> other = second;
  other[1] = (other[1] + 1) % 512;
  const Generation turn3 = chat.generate(other, g, [](std::int32_t) {});
  CHECK(turn3.reused_tokens == 1);
  CHECK(Generator<LoraFp32>(*model).generate(other, g, [](std::int32_t) {}).tokens == turn3.tokens);
}

TEST_CASE("generation stops at a stop token or at max_new_tokens", "[generate]") {
  auto model = fixture_model<LoraFp32>("tiny_public", "adapter");
  const auto prompt = test::fixture_samples("tiny_public")[3].input_ids;
  GenerationConfig g = greedy_for(20);
  Generator<LoraFp32> gen(*model);
  const Generation free_run = gen.generate(prompt, g, [](std::int32_t) {});
  REQUIRE(free_run.tokens.size() == 20);
  CHECK(free_run.finish == FinishReason::Length);

  g.stop_ids = {free_run.tokens[6]};
  const auto& t = free_run.tokens;
  const auto first_stop = std::find(t.begin(), t.end(), g.stop_ids[0]) - t.begin();
  const Generation stopped = gen.generate(prompt, g, [](std::int32_t) {});
  CHECK(stopped.finish == FinishReason::Stop);
  CHECK(stopped.tokens == std::vector<std::int32_t>(free_run.tokens.begin(), free_run.tokens.begin() + first_stop + 1));

  g.max_new_tokens = 0;
  CHECK(gen.generate(prompt, g, [](std::int32_t) {}).tokens.empty());
  CHECK_THROWS_WITH(gen.generate(std::vector<std::int32_t>{}, g, [](std::int32_t) {}), Catch::Contains("empty"));
}

// The model as generate_greedy sees it, recording the cache size it is asked for.
struct CacheSizeRecorder {
  LoraFp32* model;
  std::vector<std::int64_t> asked;
  KvCache make_kv_cache(std::int64_t max_context) {
    asked.push_back(max_context);
    return model->make_kv_cache(max_context);
  }
  Matrix forward_cached(std::span<const std::int32_t> ids, KvCache& cache) { return model->forward_cached(ids, cache); }
};

TEST_CASE("greedy asks for a cache of the prompt and the answer, not the model's context", "[generate]") {
  // The trainer's identity questions run between steps beside the training's memory: on the GPU a
  // default cache is the model's whole context (1.9 GB at 7B), allocated up front.
  auto model = fixture_model<LoraFp32>("tiny_public", "adapter");
  const auto prompt = test::fixture_samples("tiny_public")[3].input_ids;
  CacheSizeRecorder recorder{model.get(), {}};
  const GreedyConfig cfg{9, {}};
  const auto got = generate_greedy(recorder, prompt, cfg, [](std::int32_t) {});
  REQUIRE(recorder.asked.size() == 1);
  CHECK(recorder.asked[0] == static_cast<std::int64_t>(prompt.size()) + 9);
  CHECK(got == Generator<LoraFp32>(*model).generate(prompt, greedy_for(9), [](std::int32_t) {}).tokens);
  CHECK(Generator<CacheSizeRecorder>(recorder).generate(prompt, greedy_for(1), [](std::int32_t) {}).tokens.size() == 1);
  CHECK(recorder.asked.back() == 0);  // a Generator made without a size leaves it to the model
}

TEST_CASE("sampling with a seed is reproducible and differs from greedy", "[generate]") {
  auto model = fixture_model<LoraFp32>("tiny_public", "adapter");
  const auto prompt = test::fixture_samples("tiny_public")[3].input_ids;
  GenerationConfig g = greedy_for(24);
  g.sampling = {1.5, 0, 1.0, 1.0};
  Generator<LoraFp32> gen(*model);
  const auto a = gen.generate(prompt, g, [](std::int32_t) {}).tokens;
  const auto b = gen.generate(prompt, g, [](std::int32_t) {}).tokens;
  g.seed = 7;
  const auto c = gen.generate(prompt, g, [](std::int32_t) {}).tokens;
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a != greedy_by_full_forward(*model, prompt, 24));
}

TEST_CASE("processed logits equal HF's LogitsProcessorList (penalty / temperature / top-k / top-p)",
          "[generate][parity]") {
  // Same survivors exactly; values within 1e-4 (the model's fp32 logits differ from torch's by ~1e-6,
  // divided by temperature 0.7).
  auto model = fixture_model<LoraFp32>("tiny_public", "adapter_trained");
  for (const auto& c : golden_cases("processed_golden.jsonl")) {
    INFO(c["id"].get<std::string>());
    const auto prompt = c["prompt"].get<std::vector<std::int32_t>>();
    auto cache = model->make_kv_cache();
    Matrix logits = model->forward_cached(prompt, cache);
    const Sampler s(SamplingConfig{c["temperature"], c["top_k"], c["top_p"], c["repetition_penalty"]}, 0);
    s.process(std::span<float>(logits.data(), static_cast<std::size_t>(logits.size())), prompt);
    std::vector<std::int64_t> kept;
    for (Eigen::Index i = 0; i < logits.size(); ++i)
      if (logits(0, i) != kFilteredLogit) kept.push_back(i);
    REQUIRE(kept == c["kept"].get<std::vector<std::int64_t>>());
    const auto values = c["values"].get<std::vector<double>>();
    for (std::size_t i = 0; i < kept.size(); ++i) CHECK(std::abs(logits(0, kept[i]) - values[i]) <= 1e-4);
  }
}
