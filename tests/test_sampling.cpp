// Sampling semantics on hand-made logits: each processor does what HF's does (values worked out
// by hand in the comments), they run in HF's order, greedy ignores the warpers but not the
// repetition penalty, and draws follow the softmax of what survives.
#include <catch2/catch.hpp>
#include <cmath>
#include <map>

#include "peft/generate/generation_config.hpp"
#include "peft/generate/sampling.hpp"

using namespace peft;

namespace {

std::vector<float> log_probs(std::initializer_list<double> p) {
  std::vector<float> out;
  for (double x : p) out.push_back(static_cast<float>(std::log(x)));
  return out;
}
std::vector<std::size_t> kept(const std::vector<float>& logits) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < logits.size(); ++i)
    if (logits[i] != kFilteredLogit) out.push_back(i);
  return out;
}
using Ids = std::vector<std::size_t>;

}  // namespace

TEST_CASE("repetition penalty divides positive and multiplies negative logits of seen tokens / once", "[sampling]") {
  std::vector<float> l = {2.0f, -2.0f, 1.0f, 0.5f};
  const std::vector<std::int32_t> context = {0, 1, 1, 1};  // token 1 three times: still penalised once
  apply_repetition_penalty(l, context, 2.0);
  CHECK(l == std::vector<float>{1.0f, -4.0f, 1.0f, 0.5f});
  apply_repetition_penalty(l, context, 1.0);  // 1 is "off"
  CHECK(l == std::vector<float>{1.0f, -4.0f, 1.0f, 0.5f});
  const std::vector<std::int32_t> bad = {4};
  CHECK_THROWS_WITH(apply_repetition_penalty(l, bad, 1.1), Catch::Contains("token id 4"));
}

TEST_CASE("temperature divides the logits", "[sampling]") {
  std::vector<float> l = {1.0f, -2.0f};
  apply_temperature(l, 0.5);
  CHECK(l == std::vector<float>{2.0f, -4.0f});
}

TEST_CASE("top-k keeps the k largest logits and ties at the boundary", "[sampling]") {
  const std::vector<float> base = {1.0f, 3.0f, 3.0f, 2.0f, 0.0f};
  auto run = [&](std::int64_t k) {
    auto l = base;
    apply_top_k(l, k);
    return kept(l);
  };
  CHECK(run(1) == Ids{1, 2});  // torch: scores < topk(...)[-1] are removed, so both 3s stay
  CHECK(run(2) == Ids{1, 2});
  CHECK(run(3) == Ids{1, 2, 3});
  CHECK(run(0) == Ids{0, 1, 2, 3, 4});   // off
  CHECK(run(50) == Ids{0, 1, 2, 3, 4});  // k above the vocabulary: off
}

TEST_CASE("top-p drops the unlikely tail whose mass is <= 1 - top_p", "[sampling]") {
  // p = 0.5, 0.3, 0.15, 0.05; ascending cumulative 0.05, 0.20, 0.50, 1.00.
  const auto base = log_probs({0.5, 0.3, 0.15, 0.05});
  auto run = [&](double p) {
    auto l = base;
    apply_top_p(l, p);
    return kept(l);
  };
  CHECK(run(0.75) == Ids{0, 1});        // cut 0.25: 0.05 and 0.20 are <= it
  CHECK(run(0.85) == Ids{0, 1, 2});     // cut 0.15: only 0.05
  CHECK(run(0.9) == Ids{0, 1, 2});      // cut 0.10
  CHECK(run(0.97) == Ids{0, 1, 2, 3});  // cut 0.03: even the 0.05 tail stays
  CHECK(run(0.999) == Ids{0, 1, 2, 3});
  CHECK(run(1.0) == Ids{0, 1, 2, 3});   // off
  CHECK(run(0.01) == Ids{0});           // the most likely token always stays
}

TEST_CASE("processors run in HF's order: penalty / temperature / top-k / top-p", "[sampling]") {
  // Temperature 2 flattens p to 0.379, 0.294, 0.207, 0.120 before top-p 0.75 sees it: three stay
  // (at temperature 1 only two would).
  auto l = log_probs({0.5, 0.3, 0.15, 0.05});
  Sampler(SamplingConfig{2.0, 0, 0.75, 1.0}, 1).process(l, {});
  CHECK(kept(l) == Ids{0, 1, 2});
  CHECK(l[0] == Approx(std::log(0.5) / 2));

  // top-k 2 before top-p: the pair left renormalises to 0.625 / 0.375, so top-p 0.6 keeps one.
  l = log_probs({0.5, 0.3, 0.15, 0.05});
  Sampler(SamplingConfig{1.0, 2, 0.6, 1.0}, 1).process(l, {});
  CHECK(kept(l) == Ids{0});
}

TEST_CASE("greedy applies the repetition penalty but no warper / and takes the first maximum", "[sampling]") {
  std::vector<float> l = {3.0f, 2.9f, 1.0f};
  const std::vector<std::int32_t> context = {0};
  Sampler greedy(SamplingConfig{0.0, 1, 0.1, 1.2}, 1);  // top-k/top-p given, ignored when greedy
  auto copy = l;
  CHECK(greedy.next(copy, context) == 1);  // 3 / 1.2 = 2.5 < 2.9
  CHECK(copy[2] == 1.0f);                  // no top-k filtering happened
  std::vector<float> tie = {1.0f, 5.0f, 5.0f};
  CHECK(argmax(tie) == 1);
}

TEST_CASE("draws follow the softmax of the surviving logits and are seeded", "[sampling]") {
  // p = 0.5, 0.3, 0.15, 0.05 with top-k 3: the last never appears, the others as 0.5/0.3/0.15
  // renormalised (0.526, 0.316, 0.158). 40000 draws: standard error < 0.0025, bound 0.01.
  const SamplingConfig cfg{1.0, 3, 1.0, 1.0};
  Sampler s(cfg, 123);
  std::map<std::int32_t, int> count;
  const int n = 40000;
  std::vector<std::int32_t> first_draws;
  for (int i = 0; i < n; ++i) {
    auto l = log_probs({0.5, 0.3, 0.15, 0.05});
    const auto id = s.next(l, {});
    ++count[id];
    if (i < 50) first_draws.push_back(id);
  }
  CHECK(count[3] == 0);
  CHECK(std::abs(count[0] / double(n) - 0.5 / 0.95) < 0.01);
  CHECK(std::abs(count[1] / double(n) - 0.3 / 0.95) < 0.01);
  CHECK(std::abs(count[2] / double(n) - 0.15 / 0.95) < 0.01);

  Sampler again(cfg, 123), other(cfg, 124);
  std::vector<std::int32_t> a, b;
  for (int i = 0; i < 50; ++i) {
    auto l1 = log_probs({0.5, 0.3, 0.15, 0.05}), l2 = l1;
    a.push_back(again.next(l1, {}));
    b.push_back(other.next(l2, {}));
  }
  CHECK(a == first_draws);
  CHECK(b != first_draws);
  CHECK(sample_from_logits(std::vector<float>{kFilteredLogit, 0.0f, kFilteredLogit}, 0.999999) == 1);
}

TEST_CASE("generation_config.json supplies defaults / flags win / temperature 0 is greedy", "[sampling]") {
  // Qwen2.5-7B-Instruct's generation_config.json.
  const auto qwen = GenerationDefaults::from_json(nlohmann::json::parse(R"({"bos_token_id": 151643,
      "pad_token_id": 151643, "do_sample": true, "eos_token_id": [151645, 151643], "repetition_penalty": 1.05,
      "temperature": 0.7, "top_p": 0.8, "top_k": 20, "transformers_version": "4.37.0"})"), "gen.json");
  CHECK(qwen.eos_token_ids == std::vector<std::int32_t>{151645, 151643});
  SamplingConfig s = resolve_sampling(qwen, {});
  CHECK(s.temperature == 0.7);
  CHECK(s.top_k == 20);
  CHECK(s.top_p == 0.8);
  CHECK(s.repetition_penalty == 1.05);
  CHECK_FALSE(s.greedy());

  SamplingOverrides o;
  o.temperature = 0.0;
  o.top_k = 5;
  s = resolve_sampling(qwen, o);
  CHECK(s.greedy());
  CHECK(s.top_k == 5);
  CHECK(s.repetition_penalty == 1.05);  // ms-swift keeps the file's penalty under --temperature 0

  // No file (or do_sample false): HF's defaults, greedy.
  s = resolve_sampling(GenerationDefaults{}, {});
  CHECK(s.greedy());
  CHECK(s.top_k == 50);
  CHECK(s.top_p == 1.0);
  const auto single = GenerationDefaults::from_json(nlohmann::json::parse(R"({"eos_token_id": 7, "do_sample": false,
      "temperature": 0.7})"), "gen.json");
  CHECK(single.eos_token_ids == std::vector<std::int32_t>{7});
  CHECK(resolve_sampling(single, {}).greedy());

  CHECK_THROWS_WITH(GenerationDefaults::from_json(nlohmann::json::parse(R"({"top_k": "20"})"), "m/gen.json"),
                    Catch::Contains("m/gen.json") && Catch::Contains("top_k"));
  o = {};
  o.top_p = 1.5;
  CHECK_THROWS_WITH(resolve_sampling(qwen, o), Catch::Contains("--top_p"));
  o = {};
  o.temperature = -1;
  CHECK_THROWS_WITH(resolve_sampling(qwen, o), Catch::Contains("--temperature"));
}
