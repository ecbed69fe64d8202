// CPU training-step time for the shapes CI and the demo run: the tiny parity fixture and the
// embedded default (hidden 64, 2 layers, Qwen2.5's 152k vocabulary, where the lm_head dominates).
//   cpu_step_bench [--steps N]
// Prints one Markdown row per workload: median forward+backward+AdamW step time over N steps
// after 3 warm-up steps, and tokens/s. Timings are for bench/RESULTS.md, never asserted in tests.
#include <peft/qwen.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fmt/format.h>
#include <string>

#include "peft/models/embedded_default.hpp"

#ifndef PEFT_FIXTURES
#define PEFT_FIXTURES "tests/fixtures"
#endif

namespace {

// A sample of `len` tokens, the second half labelled (a prompt + answer shape).
peft::Sample sample(std::int64_t vocab, int len, std::uint64_t seed) {
  peft::Rng rng(seed);
  peft::Sample s;
  for (int i = 0; i < len; ++i) {
    s.input_ids.push_back(static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(vocab))));
    s.labels.push_back(i < len / 2 ? peft::kIgnoreIndex : s.input_ids.back());
  }
  return s;
}

template <class Model>
void bench(const char* name, Model& model, const peft::Sample& s, int steps) {
  peft::AdamW opt({.weight_decay = 0.1});
  const auto params = model.trainable_parameters();
  opt.init(params);
  const auto batch = peft::PackedBatch::of(s);
  std::vector<double> ms;
  for (int i = 0; i < steps + 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    model.forward_backward(batch, 1.0f / static_cast<float>(batch.label_tokens), nullptr);
    opt.step(params, 1e-4);
    model.zero_grad();
    if (i >= 3) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  fmt::print("| {} | {} | {:.2f} | {:.0f} |\n", name, s.input_ids.size(), med,
             static_cast<double>(s.input_ids.size()) / med * 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 20;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::max(1, std::stoi(argv[i + 1]));
  peft::LoraConfig lora;
  lora.lora_dropout = 0;
  fmt::print("| workload | tokens/step | median step ms | tokens/s |\n|---|---|---|---|\n");

  using TinyFp32 = peft::Qwen2<peft::Lora<8>, peft::Fp32, peft::Cpu>;
  auto tiny = TinyFp32::from_pretrained(PEFT_FIXTURES "/tiny_public/model", lora, 1);
  bench("tiny_public fixture, LoRA r8 fp32", *tiny, sample(tiny->config().vocab_size, 40, 1), steps);

  using Embedded = peft::Qwen2<peft::Lora<8>, peft::Bf16Mixed, peft::Cpu>;
  peft::RandomWeights w(peft::kEmbeddedWeightSeed);
  auto emb = Embedded::from_weights(peft::embedded_default_config(), w, lora, 1);
  bench("embedded default (vocab 151936), LoRA r8 bf16", *emb, sample(151936, 40, 2), steps);
  bench("embedded default (vocab 151936), LoRA r8 bf16", *emb, sample(151936, 160, 3), steps);
  return 0;
}
