// QLoRA on the GPU: Qwen2<Lora<>, Nf4Base, Cuda> (the frozen projections in NF4, dequantised one
// at a time into one bf16 scratch before each GEMM, or at up to 64 tokens (the fixture's steps,
// the prefill here) decoded inside the fused NF4 GEMM where the shape is whole 64-wide tiles). test_layouts.cu holds it to the CPU's
// Nf4Base step for step on random weights; here:
//   (1) the plan: the arena counts each projection at its NF4 size (packed codes, absmax codes,
//       scales, each block rounded to the arena's 256 bytes) instead of bf16, plus ONE scratch the
//       size of the largest projection; planned_memory equals the arena allocated;
//   (2) the HF fixture: tiny_public's model quantised on load, trained by the ordinary Trainer,
//       against qlora_tiny's golden run (HF PEFT training LoRA in fp32 on the NF4 round trip of
//       the same model): bf16 tolerances, as test_model's fixture checks (Cuda and CudaRecompute);
//   (3) generation: the KV-cache path (a 16-token prefill through the fused NF4 GEMM, then
//       one-token steps through the fused NF4 GEMV) gives the training forward's logits, with the embedding on the device and in
//       host memory;
//   (4) the host embedding (CudaModelOptions::embedding): the plan no longer counts it (and says
//       so), a tied one is refused, and training the same tiny untied model with the embedding on
//       the device and in pinned host memory gives the same losses and adapter (NF4 and bf16);
//   (5) shared scratch: the NF4 weight scratch shares the dropout buffer, and the loss's buffers
//       (logits chunk, labelled rows) share the layers' step scratch.
#include <algorithm>
#include <cmath>
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
  lora.lora_dropout = 0;
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
  // The weight scratch shares one block with the attention backward's scratch (and the dropout
  // input): NF4 adds exactly its excess over the attention scratch (none here since that scratch
  // has a 256 KB margin for cuDNN's workspace; a separate block would add all 64 KB).
  const CudaModelOptions short_opt{16};
  const std::size_t attn = rounded(4 * peft::cuda::attention_backward_scratch_floats(
                                           16, {static_cast<int>(cfg.num_attention_heads),
                                                static_cast<int>(cfg.num_key_value_heads), static_cast<int>(cfg.head_dim)}));
  const auto bf16_short = Qwen2<Lora<>, Bf16Mixed, CudaRecompute>::planned_memory(cfg, lora, short_opt);
  const auto nf4_short = Qwen2<Lora<>, Nf4Base, CudaRecompute>::planned_memory(cfg, lora, short_opt);
  const std::size_t excess = rounded(2 * largest) > attn ? rounded(2 * largest) - attn : 0;
  t.expect(nf4_short.workspace - bf16_short.workspace == excess,
           "NF4 plan: one bf16 weight scratch, the largest projection (" + std::to_string(2 * largest) +
               " bytes), sharing the attention backward's block");
  t.expect(nf4.activations == bf16.activations && nf4.optimizer == bf16.optimizer,
           "NF4 plan: activations and optimizer state as bf16's");
  Qwen2<Lora<>, Nf4Base, CudaRecompute> m(cfg, lora, opt);
  t.expect(nf4.total() == m.arena().capacity(), "NF4 plan == the arena allocated");

  // At 300 tokens with dropout, the dropout buffer ([T, intermediate] bf16) is larger than this
  // model's largest projection: the shared block holds the NF4 weight scratch at no cost.
  lora.lora_dropout = 0.1f;
  const auto bf16_drop = Qwen2<Lora<>, Bf16Mixed, CudaRecompute>::planned_memory(cfg, lora, opt);
  const auto nf4_drop = Qwen2<Lora<>, Nf4Base, CudaRecompute>::planned_memory(cfg, lora, opt);
  t.expect(2 * largest <= 2 * static_cast<std::size_t>(opt.max_tokens) * I &&
               nf4_drop.workspace == bf16_drop.workspace,
           "NF4 plan with dropout: the weight scratch shares the dropout buffer (no extra workspace)");
  // The loss's buffers live only between the forward and the backward, inside the step scratch's
  // block: a logits chunk of 8 or of 256 rows (both smaller than the layers' scratch here) plans
  // the same workspace.
  CudaModelOptions few = opt, many = opt;
  few.logits_chunk_rows = 8;
  many.logits_chunk_rows = 256;
  t.expect(Qwen2<Lora<>, Nf4Base, CudaRecompute>::planned_memory(cfg, lora, few).workspace ==
               Qwen2<Lora<>, Nf4Base, CudaRecompute>::planned_memory(cfg, lora, many).workspace,
           "the logits chunk shares the layers' step scratch");
}

// The embedding in pinned host memory: not in the arena (exactly its bf16 bytes less), counted
// apart and printed; the default for a frozen untied embedding; refused when tied.
void check_host_embedding_plan(TestContext& t) {
  const ModelConfig cfg = test::tiny_test_config(64, false, 1);
  LoraConfig lora;
  lora.r = 8;
  lora.lora_alpha = 16;
  CudaModelOptions dev{300}, host{300};
  dev.embedding = EmbeddingHome::device;
  host.embedding = EmbeddingHome::host;
  using M = Qwen2<Lora<>, Nf4Base, CudaRecompute>;
  const auto on_dev = M::planned_memory(cfg, lora, dev), on_host = M::planned_memory(cfg, lora, host);
  const std::size_t bytes = static_cast<std::size_t>(cfg.vocab_size * cfg.hidden_size) * 2;
  std::printf("  plan, embedding on the device: %s\n  plan, embedding in host memory: %s\n",
              peft::cuda::describe(on_dev).c_str(), peft::cuda::describe(on_host).c_str());
  t.expect(on_dev.weights - on_host.weights == rounded(bytes) && on_dev.host_embedding == 0 &&
               on_host.host_embedding == bytes,
           "host embedding: the arena plan no longer counts it (" + std::to_string(bytes) + " bytes)");
  t.expect(peft::cuda::describe(on_host).find("embedding: host (pinned)") != std::string::npos,
           "host embedding: the plan printout says so");
  t.expect(M::planned_memory(cfg, lora, {300}).host_embedding == bytes, "host embedding: the default when untied");
  M m(cfg, lora, host);
  t.expect(m.embedding_in_host_memory() && m.arena().capacity() == on_host.total() &&
               m.memory_report().find("embedding: host (pinned)") != std::string::npos,
           "host embedding: the arena allocated is the plan; the memory report names it");
  const ModelConfig tied = test::tiny_test_config(64, true, 1);
  t.expect(M::planned_memory(tied, lora, {300}).host_embedding == 0, "host embedding: a tied one stays on the device");
  bool refused = false;
  try {
    M::planned_memory(tied, lora, host);
  } catch (const std::exception& e) {
    refused = std::string(e.what()).find("tied") != std::string::npos;
  }
  t.expect(refused, "host embedding: asked for on a tied embedding, refused naming why");
}

// The same tiny untied model trained with the embedding on the device and in host memory:
// the same rows reach the first layer, so the losses and the adapter must be the same. Short
// samples (one attention key block each) keep the kernels deterministic; a second device run
// measures any run-to-run noise, and the host run may differ by no more than that.
template <class Model>
void check_host_embedding_training(TestContext& t, const std::string& label) {
  const ModelConfig cfg = test::tiny_test_config(64, false, 1);
  LoraConfig lora;
  lora.r = 8;
  lora.lora_alpha = 16;
  lora.lora_dropout = 0.1f;
  std::vector<Sample> samples = peft::cuda_test::random_samples(t, static_cast<int>(cfg.vocab_size),
                                                                 {30, 17, 24, 31, 12, 28, 20, 32});
  TrainingArguments args;
  args.learning_rate = 1e-3;
  args.per_device_train_batch_size = 2;
  args.num_train_epochs = 2;
  args.lr_scheduler_type = "constant";
  args.logging_steps = 1000;
  args.save_steps = 100000;
  struct Run {
    std::vector<double> losses;
    Floats adapter;
  };
  auto train = [&](EmbeddingHome home) {
    RandomWeights w(5);
    CudaModelOptions opt{128};
    opt.embedding = home;
    auto m = Model::from_weights(cfg, w, lora, 3, opt);
    t.expect(m->embedding_in_host_memory() == (home == EmbeddingHome::host),
             label + ": embedding " + (home == EmbeddingHome::host ? "in host memory" : "on the device"));
    Trainer<Model> trainer(*m, args, AdamW({args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay}),
                           NamedSchedule(args.lr_scheduler_type));
    trainer.set_quiet(true);
    Run r;
    for (double l : trainer.train(samples).step_losses) r.losses.push_back(l);
    for (const auto& v : m->trainable_parameters().to_host().values) r.adapter.insert(r.adapter.end(), v.data(), v.data() + v.size());
    return r;
  };
  const Run dev = train(EmbeddingHome::device), dev2 = train(EmbeddingHome::device), host = train(EmbeddingHome::host);
  auto diff = [](const Run& a, const Run& b) {
    double d = a.losses.size() == b.losses.size() && a.adapter.size() == b.adapter.size() ? 0.0 : 1e30;
    for (std::size_t i = 0; d < 1e30 && i < a.losses.size(); ++i) d = std::max(d, std::abs(a.losses[i] - b.losses[i]));
    for (std::size_t i = 0; d < 1e30 && i < a.adapter.size(); ++i)
      d = std::max(d, static_cast<double>(std::abs(a.adapter[i] - b.adapter[i])));
    return d;
  };
  const double noise = diff(dev, dev2), got = diff(dev, host);
  std::printf("  %-46s %zu steps, loss %.5f -> %.5f; host vs device max diff %.3e (device vs device %.3e)\n",
              label.c_str(), host.losses.size(), host.losses.empty() ? 0.0 : host.losses.front(),
              host.losses.empty() ? 0.0 : host.losses.back(), got, noise);
  t.expect(host.losses.size() >= 4 && std::isfinite(host.losses.back()), label + ": trained, finite loss");
  t.expect(got == 0 || got <= 4 * noise, label + ": host embedding == device embedding (losses and adapter)");
}

void check_generation(TestContext& t, EmbeddingHome home) {
  ModelConfig cfg = test::tiny_test_config(64, false, 1);
  LoraConfig lora;
  lora.r = 8;
  lora.lora_alpha = 16;
  lora.lora_dropout = 0;
  RandomWeights w(11);
  CudaModelOptions opt{128};
  opt.embedding = home;
  auto m = Qwen2<Lora<>, Nf4Base, Cuda>::from_weights(cfg, w, lora, 3, opt);
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
  t.close(std::string("NF4 generation (embedding ") + (home == EmbeddingHome::host ? "in host memory" : "on the device") +
              "): prefill and one-token steps == the training forward's logits",
          got, ref, 2e-2);
}

}  // namespace

int main(int argc, char** argv) {
  TestContext t(argc, argv, "cuda_test_qlora");
  try {
    std::printf("  %s\n", peft::cuda::describe_device(0).c_str());
    check_plan(t, test::tiny_test_config(64, false, 1));
    check_host_embedding_plan(t);
    check_generation(t, EmbeddingHome::device);
    check_generation(t, EmbeddingHome::host);
    check_host_embedding_training<Qwen2<Lora<>, Nf4Base, CudaRecompute>>(t, "host embedding, NF4 recompute");
    check_host_embedding_training<Qwen2<Lora<>, Bf16Mixed, Cuda>>(t, "host embedding, bf16 keep");
    using peft::cuda_test::check_hf_fixture;
    check_hf_fixture<Qwen2<Lora<>, Nf4Base, Cuda>>(t, "qlora_tiny (keep)", "tiny_public", "qlora_tiny");
    check_hf_fixture<Qwen2<Lora<>, Nf4Base, CudaRecompute>>(t, "qlora_tiny (recompute)", "tiny_public", "qlora_tiny");
  } catch (const std::exception& e) {
    std::printf("FAILED with exception: %s\n", e.what());
    return 2;
  }
  return t.finish();
}
