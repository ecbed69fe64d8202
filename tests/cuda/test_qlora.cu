// QLoRA on the GPU: Qwen2<Lora<>, Nf4Base, Cuda> (the frozen projections in NF4, dequantised one
// at a time into one bf16 scratch before each GEMM). test_layouts.cu holds it to the CPU's
// Nf4Base step for step on random weights; here:
//   (1) the plan: the arena counts each projection at its NF4 size (packed codes, absmax codes,
//       scales, each block rounded to the arena's 256 bytes) instead of bf16, plus ONE scratch the
//       size of the largest projection; planned_memory equals the arena allocated;
//   (2) the HF fixture: tiny_public's model quantised on load, trained by the ordinary Trainer,
//       against qlora_tiny's golden run (HF PEFT training LoRA in fp32 on the NF4 round trip of
//       the same model): bf16 tolerances, as test_model's fixture checks (Cuda and CudaRecompute);
//   (3) generation: the KV-cache path (prefill, then one-token steps on cuBLASLt, each projection
//       dequantised) gives the training forward's logits.
#include <algorithm>
#include <filesystem>

#include "cuda_test.cuh"
#include "model_parity.cuh"
#include "peft/qwen_cuda.cuh"

using namespace peft;
using peft::cuda_test::Floats;
using peft::cuda_test::TestContext;

namespace {

std::size_t rounded(std::size_t bytes) {
  const std::size_t a = peft::cuda::DeviceArena::kAlignment;
  return (bytes + a - 1) / a * a;
}

void check_plan(TestContext& t, const ModelConfig& cfg) {
  LoraConfig lora;
  lora.r = 8;
  lora.lora_alpha = 16;
  const CudaModelOptions opt{300};
  const auto bf16 = Qwen2<Lora<>, Bf16Mixed, CudaRecompute>::planned_memory(cfg, lora, opt);
  const auto nf4 = Qwen2<Lora<>, Nf4Base, CudaRecompute>::planned_memory(cfg, lora, opt);
  const std::size_t H = static_cast<std::size_t>(cfg.hidden_size), I = static_cast<std::size_t>(cfg.intermediate_size);
  const std::size_t Q = static_cast<std::size_t>(cfg.num_attention_heads * cfg.head_dim);
  const std::size_t KV = static_cast<std::size_t>(cfg.num_key_value_heads * cfg.head_dim);
  std::size_t saved = 0, largest = 0;  // per layer: bf16 bytes minus NF4 bytes of the seven projections
  for (std::size_t n : {H * Q, H * KV, H * KV, Q * H, H * I, H * I, I * H}) {
    largest = std::max(largest, n);
    const std::size_t blocks = (n + 63) / 64, groups = (blocks + 255) / 256;
    saved += rounded(2 * n) - rounded((n + 1) / 2) - rounded(blocks) - rounded(4 * groups);
  }
  saved *= static_cast<std::size_t>(cfg.num_hidden_layers);
  std::printf("  plan bf16 %s\n  plan NF4  %s\n", peft::cuda::describe(bf16).c_str(), peft::cuda::describe(nf4).c_str());
  t.expect(bf16.weights - nf4.weights == saved, "NF4 plan: every projection at its NF4 size (" +
                                                    std::to_string(saved) + " bytes less than bf16)");
  t.expect(nf4.workspace - bf16.workspace == rounded(2 * largest),
           "NF4 plan: one bf16 weight scratch, the largest projection (" + std::to_string(2 * largest) + " bytes)");
  t.expect(nf4.activations == bf16.activations && nf4.optimizer == bf16.optimizer,
           "NF4 plan: activations and optimizer state as bf16's");
  Qwen2<Lora<>, Nf4Base, CudaRecompute> m(cfg, lora, opt);
  t.expect(nf4.total() == m.arena().capacity(), "NF4 plan == the arena allocated");
}

void check_generation(TestContext& t) {
  ModelConfig cfg = test::tiny_test_config(64, false, 1);
  LoraConfig lora;
  lora.r = 8;
  lora.lora_alpha = 16;
  lora.lora_dropout = 0;
  RandomWeights w(11);
  auto m = Qwen2<Lora<>, Nf4Base, Cuda>::from_weights(cfg, w, lora, 3, {128});
  auto h = m->trainable_parameters().to_host();  // a non-zero B, so the adapter shows in the logits
  for (std::size_t i = 0; i < h.list.size(); ++i)
    if (h.list[i].name.find("lora_B") != std::string::npos)
      for (Eigen::Index j = 0; j < h.values[i].size(); ++j) h.values[i].data()[j] = 0.05f * t.normal_f32(1)[0];
  m->trainable_parameters().upload(h.list);
  Sample s;
  for (int i = 0; i < 24; ++i) {
    s.input_ids.push_back(t.uniform_int(0, static_cast<int>(cfg.vocab_size) - 1));
    s.labels.push_back(s.input_ids.back());
  }
  const Matrix want = m->logits(PackedBatch::of(s));
  auto cache = m->make_kv_cache(64);
  const std::span<const std::int32_t> ids(s.input_ids);
  const Matrix pre = m->forward_cached(ids.first(16), cache, true);
  Floats got, ref;
  for (Eigen::Index r = 0; r < pre.rows(); ++r)
    for (Eigen::Index v = 0; v < pre.cols(); ++v) got.push_back(pre(r, v)), ref.push_back(want(r, v));
  for (std::size_t i = 16; i < ids.size(); ++i) {  // one-token steps (the second one is captured, then replayed)
    const Matrix one = m->forward_cached(ids.subspan(i, 1), cache);
    for (Eigen::Index v = 0; v < one.cols(); ++v)
      got.push_back(one(0, v)), ref.push_back(want(static_cast<Eigen::Index>(i), v));
  }
  t.close("NF4 generation: prefill and one-token steps == the training forward's logits", got, ref, 2e-2);
}

}  // namespace

int main(int argc, char** argv) {
  TestContext t(argc, argv, "cuda_test_qlora");
  try {
    std::printf("  %s\n", peft::cuda::describe_device(0).c_str());
    check_plan(t, test::tiny_test_config(64, false, 1));
    check_generation(t);
    using peft::cuda_test::check_hf_fixture;
    check_hf_fixture<Qwen2<Lora<>, Nf4Base, Cuda>>(t, "qlora_tiny (keep)", "tiny_public", "qlora_tiny");
    check_hf_fixture<Qwen2<Lora<>, Nf4Base, CudaRecompute>>(t, "qlora_tiny (recompute)", "tiny_public", "qlora_tiny");
  } catch (const std::exception& e) {
    std::printf("FAILED with exception: %s\n", e.what());
    return 2;
  }
  return t.finish();
}
