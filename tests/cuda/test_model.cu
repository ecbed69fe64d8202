// The CUDA model held to the CPU model and to HF: (1) Qwen2<L, Bf16Mixed, Cuda> against the CPU
// Qwen2<L, Bf16Mixed, Cpu> on tiny random configs (loss and every LoRA gradient, tensor-core and
// small-head attention paths, padded rank 4, tied and untied heads, keep, selective and recompute);
// (2) packing: samples back to back in one micro-batch give the loss and gradients of the same
// samples run one at a time; (3) training through the ordinary Trainer on the HF fixtures,
// per-step loss within 2e-2 of the golden losses, the trained adapter close to PEFT's.
// Activations and scratch are poisoned with NaN before every run (an unwritten read shows up
// as a non-finite loss or gradient). (4) CUDA graph replay equals eager execution. (5) The three
// activation policies compute the same steps, dropout on; their memory plans are the arenas.
// --small skips (3), for compute-sanitizer.
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <type_traits>

#include "../support/fixture.hpp"
#include "cuda_test.cuh"
#include "model_parity.cuh"
#include "peft/qwen_cuda.cuh"

using namespace peft;
using peft::cuda_test::Floats;
using peft::cuda_test::TestContext;
using peft::cuda_test::cuda_grads;
using peft::cuda_test::flat;
using peft::cuda_test::random_samples;

namespace {

// CPU and CUDA from the same RandomWeights and adapter seed, B set to the same random values (B = 0
// would make every dA zero), then one forward_backward of a packed batch.
// `rslora`: the update scaled by alpha / sqrt(r) (--use_rslora), which both backends must read.
template <class Act>
void check_against_cpu(TestContext& t, const char* label, ModelConfig cfg, int rank, bool rslora = false) {
  using CpuModel = Qwen2<Lora<>, Bf16Mixed, Cpu>;
  using GpuModel = Qwen2<Lora<>, Bf16Mixed, CudaDevice<Act>>;
  LoraConfig lora;
  lora.r = rank;
  lora.lora_alpha = 16;
  lora.lora_dropout = 0;
  lora.use_rslora = rslora;
  RandomWeights w1(7), w2(7);
  auto cpu = CpuModel::from_weights(cfg, w1, lora, 42);
  auto gpu = GpuModel::from_weights(cfg, w2, lora, 42, {256});
  auto host = cpu->trainable_parameters();
  peft::cuda_test::randomize_lora_b(t, host);
  gpu->trainable_parameters().upload(host);

  const auto samples = random_samples(t, static_cast<int>(cfg.vocab_size), {37, 64, 5, 90});
  std::vector<const Sample*> ptrs;
  for (const auto& s : samples) ptrs.push_back(&s);
  const PackedBatch batch = PackedBatch::of(ptrs);
  const float scale = 1.0f / static_cast<float>(batch.label_tokens);

  gpu->poison_activations();
  const LossSum lg = gpu->forward_backward(batch, scale, nullptr);
  const LossSum lc = cpu->forward_backward(batch, scale, nullptr);
  const std::string name =
      std::string(label) + " r" + std::to_string(rank) + (rslora ? " rslora " : " ") + std::string(Act::name);
  t.close(name + ": loss sum vs CPU", {static_cast<float>(lg.sum)}, {static_cast<float>(lc.sum)}, 2e-3);
  t.expect(lg.tokens == lc.tokens, name + ": label tokens");
  // bf16 activation gradients on the GPU (as HF) vs fp32 ones on the CPU oracle: ~1e-2.
  t.close(name + ": LoRA gradients vs CPU", cuda_grads(*gpu), flat(host, true), 3e-2);
  const LossSum eg = gpu->evaluate(batch);
  t.close(name + ": evaluate == forward loss", {static_cast<float>(eg.sum)}, {static_cast<float>(lg.sum)}, 1e-6);

  // logits at chosen rows, and the generation calls (prefill 2 tokens' worth of history, decode one).
  const std::vector<Eigen::Index> rows = {0, 36, 37, 100, static_cast<Eigen::Index>(batch.tokens() - 1)};
  const Matrix gl = gpu->logits(batch, rows), cl = cpu->logits(batch, rows);
  t.close(name + ": logits at 5 rows vs CPU", Floats(gl.data(), gl.data() + gl.size()),
          Floats(cl.data(), cl.data() + cl.size()), 2e-2);
  auto gc = gpu->make_kv_cache();
  auto cc = cpu->make_kv_cache();
  const std::vector<std::int32_t> prompt(samples[0].input_ids.begin(), samples[0].input_ids.begin() + 20);
  const std::int32_t next = samples[0].input_ids[20];
  gpu->forward_cached(prompt, gc);
  cpu->forward_cached(prompt, cc);
  const Matrix gd = gpu->forward_cached(std::span<const std::int32_t>(&next, 1), gc);
  const Matrix cd = cpu->forward_cached(std::span<const std::int32_t>(&next, 1), cc);
  // One row's bf16 logits against fp32 ones: 1.0-1.7e-2 in most runs (fresh draws each run), 2.28e-2
  // and 2.39e-2 seen once each (2026-12-05), so 3e-2, the gradients' tolerance; a wrong position or
  // cache entry is off by O(1).
  t.close(name + ": forward_cached decode logits vs CPU", Floats(gd.data(), gd.data() + gd.size()),
          Floats(cd.data(), cd.data() + cd.size()), 3e-2);
}

// One packed micro-batch vs the same samples one by one, same grad_scale.
void check_packing(TestContext& t, const char* label, ModelConfig cfg) {
  using GpuModel = Qwen2<Lora<>, Bf16Mixed, Cuda>;
  LoraConfig lora;
  lora.r = 8;
  lora.lora_dropout = 0;
  RandomWeights w(11);
  auto gpu = GpuModel::from_weights(cfg, w, lora, 3, {512});
  auto host_owner = gpu->trainable_parameters().to_host();
  for (std::size_t i = 0; i < host_owner.list.size(); ++i)
    if (host_owner.list[i].name.find("lora_B") != std::string::npos)
      for (Eigen::Index j = 0; j < host_owner.values[i].size(); ++j) host_owner.values[i].data()[j] = 0.05f * t.normal_f32(1)[0];
  gpu->trainable_parameters().upload(host_owner.list);
  const auto samples = random_samples(t, static_cast<int>(cfg.vocab_size), {61, 7, 130, 66, 1, 44});
  std::vector<const Sample*> ptrs;
  for (const auto& s : samples) ptrs.push_back(&s);
  const PackedBatch packed = PackedBatch::of(ptrs);
  const float scale = 1.0f / static_cast<float>(packed.label_tokens);

  gpu->zero_grad();
  gpu->poison_activations();
  const double packed_loss = gpu->forward_backward(packed, scale, nullptr).sum;
  const Floats packed_grads = cuda_grads(*gpu);
  gpu->zero_grad();
  double single_loss = 0;
  for (const auto& s : samples) {
    gpu->poison_activations();
    single_loss += gpu->forward_backward(PackedBatch::of(s), scale, nullptr).sum;
  }
  const Floats single_grads = cuda_grads(*gpu);
  t.close(std::string(label) + ": packed loss == one at a time", {static_cast<float>(packed_loss)},
          {static_cast<float>(single_loss)}, 2e-3);
  t.close(std::string(label) + ": packed LoRA grads == one at a time", packed_grads, single_grads, 2e-2);
}

// CUDA graphs: a model that captures and replays (graphs on) against one that runs every step
// eagerly, on batches of one shape with fresh tokens each step and LoRA dropout on (same Rng
// seeds for both): the replay must read this step's tokens and dropout seeds, not the captured
// step's. Steps 1, 2 and 3 are eager, captured and replayed.
void check_graphs(TestContext& t, const char* label, ModelConfig cfg) {
  using GpuModel = Qwen2<Lora<>, Bf16Mixed, Cuda>;
  LoraConfig lora;
  lora.r = 8;
  lora.lora_dropout = 0.1;
  RandomWeights w1(5), w2(5);
  CudaModelOptions eager_opt{256};
  eager_opt.graphs = false;
  auto graphed = GpuModel::from_weights(cfg, w1, lora, 9, {256});
  auto eager = GpuModel::from_weights(cfg, w2, lora, 9, eager_opt);
  auto h = graphed->trainable_parameters().to_host();
  for (std::size_t i = 0; i < h.list.size(); ++i)
    if (h.list[i].name.find("lora_B") != std::string::npos)
      for (Eigen::Index j = 0; j < h.values[i].size(); ++j) h.values[i].data()[j] = 0.05f * t.normal_f32(1)[0];
  graphed->trainable_parameters().upload(h.list);
  eager->trainable_parameters().upload(h.list);
  Rng ra(77), rb(77);
  for (int step = 0; step < 4; ++step) {
    const auto samples = random_samples(t, static_cast<int>(cfg.vocab_size), {40, 24, 57});
    std::vector<const Sample*> ptrs;
    for (const auto& s : samples) ptrs.push_back(&s);
    const PackedBatch b = PackedBatch::of(ptrs);
    const float scale = 1.0f / static_cast<float>(b.label_tokens);
    graphed->zero_grad();
    eager->zero_grad();
    graphed->poison_activations();
    const double lg = graphed->forward_backward(b, scale, &ra).sum;
    const double le = eager->forward_backward(b, scale, &rb).sum;
    const std::string name = std::string(label) + " step " + std::to_string(step) + (step == 0 ? " (eager)" : step == 1 ? " (capture)" : " (replay)");
    t.close(name + ": loss", {static_cast<float>(lg)}, {static_cast<float>(le)}, 1e-6);
    t.close(name + ": LoRA grads", cuda_grads(*graphed), cuda_grads(*eager), 1e-3);
  }
}

// lora_B = the same N(0, 0.05) draws in every model it is called on (B = 0 would make every dA zero).
template <class M>
void set_lora_b(M& m) {
  auto h = m.trainable_parameters().to_host();
  std::mt19937 rb(3);
  std::normal_distribution<float> nb(0.0f, 0.05f);
  for (std::size_t i = 0; i < h.list.size(); ++i)
    if (h.list[i].name.find("lora_B") != std::string::npos)
      for (Eigen::Index j = 0; j < h.values[i].size(); ++j) h.values[i].data()[j] = nb(rb);
  m.trainable_parameters().upload(h.list);
}

// The LoRA branch's three kernel sets (CudaModelOptions::lora_kernels: today's separate passes, the
// reordered forward, dropout fused into the rank-r passes) compute the same step: same weights,
// same dropout seeds, dropout on; they differ in bf16 rounding order only. The fused model's step
// is then profiled (StepProfile): the same loss, and every part the model times shows up. Above
// rank 8 the fused set runs the tensor-core kernels at padded rank r (rank groups of 8). The fused
// set runs twice: with the adapter's passes beside the base GEMMs (the default, on the side stream;
// kernels/cuda/side_stream.cuh) and in line (lora_side_stream false: the adapter's term before the
// base GEMM's). The profiled step of the first runs its arrangement on one stream: the same
// kernels in the same order on the same data, so the same bits but for the order of dA's atomic
// sums (~5e-8; above rank 8 the adapter's cuBLASLt products may also pick other algorithms for the
// side stream's smaller workspace). A race between the streams would show there or between the
// graph and eager runs.
void check_lora_kernels(TestContext& t, const char* label, ModelConfig cfg, int rank = 8) {
  using GpuModel = Qwen2<Lora<>, Bf16Mixed, Cuda>;
  using peft::cuda::LoraKernels;
  LoraConfig lora;
  lora.r = rank;
  lora.lora_dropout = 0.1;
  const auto samples = random_samples(t, static_cast<int>(cfg.vocab_size), {40, 24, 57});
  std::vector<const Sample*> ptrs;
  for (const auto& s : samples) ptrs.push_back(&s);
  const PackedBatch b = PackedBatch::of(ptrs);
  const float scale = 1.0f / static_cast<float>(b.label_tokens);
  std::vector<float> losses;
  std::vector<double> sums;  // the same in double, printed
  std::vector<Floats> grads;
  std::vector<std::unique_ptr<GpuModel>> models;
  for (const auto k : {LoraKernels::kSeparate, LoraKernels::kReordered, LoraKernels::kFused, LoraKernels::kFused}) {
    RandomWeights w(5);
    CudaModelOptions opt{256};
    opt.lora_kernels = k;
    opt.lora_side_stream = models.size() == 2;  // the first fused model: beside; the second: in line
    auto m = GpuModel::from_weights(cfg, w, lora, 9, opt);
    set_lora_b(*m);
    m->poison_activations();
    Rng dropout(77);
    sums.push_back(m->forward_backward(b, scale, &dropout).sum);
    losses.push_back(static_cast<float>(sums.back()));
    grads.push_back(cuda_grads(*m));
    models.push_back(std::move(m));
  }
  const std::string name = std::string(label) + " r" + std::to_string(rank);
  std::printf("  %s: loss sums separate %.12g, reordered %.12g, fused beside %.12g, fused in line %.12g\n",
              name.c_str(), sums[0], sums[1], sums[2], sums[3]);
  t.close(name + ": reordered vs separate, loss", {losses[1]}, {losses[0]}, 1e-3);
  t.close(name + ": reordered vs separate, LoRA grads", grads[1], grads[0], 2e-2);
  t.close(name + ": fused vs separate, loss", {losses[2]}, {losses[0]}, 1e-3);
  t.close(name + ": fused vs separate, LoRA grads", grads[2], grads[0], 2e-2);
  t.close(name + ": fused in line vs separate, loss", {losses[3]}, {losses[0]}, 1e-3);
  t.close(name + ": fused in line vs separate, LoRA grads", grads[3], grads[0], 2e-2);
  // The two orders of the adapter's forward term round it the same way (lora_up_mma.cuh), so they
  // differ only in dA's atomic order (~5e-8); before they did, rank 8 was ~1.8e-2 apart.
  t.close(name + ": fused beside vs in line, loss", {losses[2]}, {losses[3]}, 1e-6);
  t.close(name + ": fused beside vs in line, LoRA grads", grads[2], grads[3], 1e-5);

  GpuModel& fused = *models[2];
  peft::cuda::StepProfile prof;
  fused.set_step_profile(&prof);
  fused.zero_grad();
  Rng dropout(77);
  prof.step_begin(fused.stream());
  const float profiled = static_cast<float>(fused.forward_backward(b, scale, &dropout).sum);
  prof.step_end(fused.stream());
  prof.collect();
  fused.set_step_profile(nullptr);
  t.close(name + ": profiled step (one stream) vs side stream, loss", {profiled}, {losses[2]}, 1e-6);
  t.close(name + ": profiled step (one stream) vs side stream, LoRA grads", cuda_grads(fused), grads[2],
          rank == 8 ? 1e-6 : 1e-5);
  using peft::cuda::StepPart;
  bool parts = prof.steps() == 1 && prof.scopes_per_step() > 0 && prof.other_ms() >= -0.05 * prof.total_ms();
  for (const auto p : {StepPart::kBaseGemm, StepPart::kLora, StepPart::kAttention, StepPart::kElementwise,
                       StepPart::kLmHeadCe})
    parts = parts && prof.part_ms(p) > 0.0;
  t.expect(parts && prof.part_ms(StepPart::kOptimizer) == 0.0,
           name + ": profile has every model part (" + std::to_string(prof.scopes_per_step()) + " calls)");
}

// planned_memory (what the programs' --gradient_checkpointing decision reads, before any device
// call) is exactly the arena the model then allocates; selective plans less activation memory
// than keep (by exactly the MLP side of all layers but one), recompute less than selective.
void check_memory_plan(TestContext& t, const char* label, const ModelConfig& cfg) {
  LoraConfig lora;
  lora.r = 8;
  lora.lora_alpha = 16;
  const CudaModelOptions opt{300};
  const auto keep = Qwen2<Lora<>, Bf16Mixed, Cuda>::planned_memory(cfg, lora, opt);
  const auto selective = Qwen2<Lora<>, Bf16Mixed, CudaSelective>::planned_memory(cfg, lora, opt);
  const auto recompute = Qwen2<Lora<>, Bf16Mixed, CudaRecompute>::planned_memory(cfg, lora, opt);
  Qwen2<Lora<>, Bf16Mixed, Cuda> a(cfg, lora, opt);
  Qwen2<Lora<>, Bf16Mixed, CudaSelective> s(cfg, lora, opt);
  Qwen2<Lora<>, Bf16Mixed, CudaRecompute> b(cfg, lora, opt);
  std::printf("  %s: keep %s; selective %s; recompute %s\n", label, peft::cuda::describe(keep).c_str(),
              peft::cuda::describe(selective).c_str(), peft::cuda::describe(recompute).c_str());
  t.expect(keep.total() == a.arena().capacity(), std::string(label) + ": keep plan == the arena allocated");
  t.expect(selective.total() == s.arena().capacity(), std::string(label) + ": selective plan == the arena allocated");
  t.expect(recompute.total() == b.arena().capacity(), std::string(label) + ": recompute plan == the arena allocated");
  t.expect(keep.weights == recompute.weights && keep.optimizer == recompute.optimizer && keep.weights > 0 &&
               keep.optimizer > 0 && recompute.activations > 0 && recompute.activations < keep.activations &&
               recompute.workspace >= opt.extra_bytes,
           std::string(label) + ": same weights and optimizer state, fewer activations under recompute");
  // n1, n2 (hidden each), gate, up (intermediate each), bf16, for layers - 1 of the layers (each
  // allocation is rounded up to the plan's 256-byte alignment)
  const std::size_t side = 2 * 2 * static_cast<std::size_t>(opt.max_tokens) * (cfg.hidden_size + cfg.intermediate_size);
  const std::size_t saved = keep.activations - selective.activations;
  const std::size_t layers = static_cast<std::size_t>(cfg.num_hidden_layers) - 1;
  std::printf("  %s: selective saves %zu bytes (MLP side %zu a layer)\n", label, saved, side);
  t.expect(selective.weights == keep.weights && selective.optimizer == keep.optimizer &&
               selective.workspace == keep.workspace && saved >= side * layers && saved <= side * layers + 4 * 256 * layers &&
               recompute.activations < selective.activations,
           std::string(label) + ": selective drops the MLP side of all but one layer, recompute keeps less");
}

// --recompute_num_layers N (CudaModelOptions::recompute_num_layers) on a 4-layer model: the first N
// layers share one set (recompute) or one MLP side (selective), the others keep their own, so the
// plans move by whole sets: N = 0 or 1 plans what keep plans (a set shared by one layer is its
// own), N = 4 what the default plans, and each step of N between saves exactly one set (recompute)
// or one MLP side (selective); the arena allocated is the plan. N outside 0..4 is refused, named.
void check_recompute_layers_plan(TestContext& t, const char* label, ModelConfig cfg) {
  cfg.num_hidden_layers = 4;
  LoraConfig lora;
  lora.r = 8;
  auto plan = [&](auto tag, int n) {
    CudaModelOptions opt{300};
    opt.recompute_num_layers = n;
    return Qwen2<Lora<>, Bf16Mixed, typename decltype(tag)::type>::planned_memory(cfg, lora, opt);
  };
  const std::type_identity<Cuda> keep_tag;
  const std::type_identity<CudaSelective> sel_tag;
  const std::type_identity<CudaRecompute> rec_tag;
  const auto keep = plan(keep_tag, -1);
  const std::size_t side = keep.activations - plan(sel_tag, 2).activations;  // one MLP side
  const std::size_t set = keep.activations - plan(rec_tag, 2).activations;   // one layer's whole set
  std::printf("  %s: one MLP side %zu bytes, one layer's set %zu bytes\n", label, side, set);
  bool steps = side > 0 && set > side;
  for (int n = 0; n <= 4; ++n) {
    const std::size_t shared = n > 1 ? static_cast<std::size_t>(n - 1) : 0;  // sets saved against keep
    const auto s = plan(sel_tag, n), r = plan(rec_tag, n);
    steps = steps && s.activations == keep.activations - shared * side && r.activations == keep.activations - shared * set &&
            s.weights == keep.weights && r.optimizer == keep.optimizer && s.workspace == keep.workspace;
  }
  steps = steps && plan(sel_tag, 4).total() == plan(sel_tag, -1).total() &&
          plan(rec_tag, 4).total() == plan(rec_tag, -1).total();
  t.expect(steps, std::string(label) + ": recompute_num_layers 0..4 plan keep's sets less one set (or MLP side) per shared layer");
  CudaModelOptions opt{300};
  opt.recompute_num_layers = 2;
  Qwen2<Lora<>, Bf16Mixed, CudaSelective> s(cfg, lora, opt);
  Qwen2<Lora<>, Bf16Mixed, CudaRecompute> r(cfg, lora, opt);
  t.expect(s.arena().capacity() == plan(sel_tag, 2).total() && r.arena().capacity() == plan(rec_tag, 2).total(),
           std::string(label) + ": recompute_num_layers 2, the arenas allocated are the plans");
  for (const int bad : {5, -2}) {
    std::string what;
    try {
      plan(rec_tag, bad);
    } catch (const Error& e) {
      what = e.what();
    }
    t.expect(what.find("--recompute_num_layers " + std::to_string(bad) + ": the model has 4 layers") != std::string::npos,
             std::string(label) + ": recompute_num_layers " + std::to_string(bad) + " refused (" + what + ")");
  }
}

// The three activation policies on the same weights, batches and dropout seeds (dropout on, graphs
// on: steps 0, 1, 2 eager, captured, replayed): the same forward, so the same loss (1e-6), and
// gradients that differ only by the order of the LoRA reductions' fp32 atomics (1e-5; 5e-8 seen).
// Selective's rebuilt gate/up must be the forward's (same dropout masks), and its shared MLP side
// must not leak a layer's values into another's backward; the activations are poisoned before
// every step. recompute_num_layers: selective and recompute rebuild only the first N layers.
void check_activation_policies(TestContext& t, const char* label, ModelConfig cfg, int recompute_num_layers = -1) {
  LoraConfig lora;
  lora.r = 8;
  lora.lora_dropout = 0.1;
  auto make = [&](auto tag) {
    using M = Qwen2<Lora<>, Bf16Mixed, typename decltype(tag)::type>;
    RandomWeights w(5);
    CudaModelOptions opt{256};
    opt.recompute_num_layers = recompute_num_layers;
    auto m = M::from_weights(cfg, w, lora, 9, opt);
    set_lora_b(*m);
    return m;
  };
  auto keep = make(std::type_identity<Cuda>{});
  auto selective = make(std::type_identity<CudaSelective>{});
  auto recompute = make(std::type_identity<CudaRecompute>{});
  Rng rk(77), rs(77), rr(77);
  for (int step = 0; step < 3; ++step) {
    const auto samples = random_samples(t, static_cast<int>(cfg.vocab_size), {40, 24, 57});
    std::vector<const Sample*> ptrs;
    for (const auto& x : samples) ptrs.push_back(&x);
    const PackedBatch b = PackedBatch::of(ptrs);
    const float scale = 1.0f / static_cast<float>(b.label_tokens);
    keep->zero_grad();
    selective->zero_grad();
    recompute->zero_grad();
    selective->poison_activations();
    recompute->poison_activations();
    const auto lk = static_cast<float>(keep->forward_backward(b, scale, &rk).sum);
    const auto ls = static_cast<float>(selective->forward_backward(b, scale, &rs).sum);
    const auto lr = static_cast<float>(recompute->forward_backward(b, scale, &rr).sum);
    const std::string name = std::string(label) + " step " + std::to_string(step);
    t.close(name + ": selective loss == keep's", {ls}, {lk}, 1e-6);
    t.close(name + ": recompute loss == keep's", {lr}, {lk}, 1e-6);
    const Floats gk = cuda_grads(*keep);
    t.close(name + ": selective LoRA grads vs keep", cuda_grads(*selective), gk, 1e-5);
    t.close(name + ": recompute LoRA grads vs keep", cuda_grads(*recompute), gk, 1e-5);
  }
}

// Bf16 training against HF's fp32 golden run (model_parity.cuh's check_hf_fixture).
template <class Device>
void check_fixture(TestContext& t, const std::string& name) {
  peft::cuda_test::check_hf_fixture<Qwen2<Lora<>, Bf16Mixed, Device>>(
      t, name + " (" + std::string(Device::activations::name) + ")", name, name);
}

// The trainer packs a step's micro-batches into one call on this backend (Trainer's
// accumulation_pack_cap): the update must equal one call per micro-batch. Both runs are bf16 on
// the same weights with dropout 0; what differs is the grouping of the same rows, so the losses
// agree to bf16 rounding (1e-3 relative) and the adapters to 1e-2 of their largest entry.
void check_accumulation_packing(TestContext& t, const std::string& name) {
  using Model = Qwen2<Lora<>, Bf16Mixed, Cuda>;
  const auto dir = test::fixture(name);
  LoraConfig lora = read_adapter_config(dir / "adapter");
  lora.lora_dropout = 0;
  const auto samples = test::fixture_samples(name);
  TrainingArguments args = test::golden_args(test::fixture_golden(name));
  args.gradient_accumulation_steps = 4;
  args.per_device_train_batch_size = 1;
  auto run = [&](std::int64_t pack, std::vector<float>* adapter) {
    auto model = Model::from_pretrained(dir / "model", lora, 3, {256});
    args.accumulation_pack_tokens = pack;
    Trainer<Model> trainer(*model, args, AdamW({args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay}),
                           NamedSchedule(args.lr_scheduler_type));
    trainer.set_quiet(true);
    const TrainResult r = trainer.train(samples);
    for (const auto& m : model->trainable_parameters().to_host().values)
      adapter->insert(adapter->end(), m.data(), m.data() + m.size());
    return r.step_losses;
  };
  std::vector<float> a_packed, a_single;
  const auto packed = run(-1, &a_packed), single = run(0, &a_single);
  Floats lp(packed.begin(), packed.end()), ls(single.begin(), single.end());
  t.expect(packed.size() == single.size() && !packed.empty(), name + ": accumulation packing, step count");
  t.close(name + ": GA 4 packed into one call vs 4 calls, step losses", lp, ls, 1e-3);
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a_packed.size() && i < a_single.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(a_packed[i] - a_single[i])));
    scale = std::max(scale, static_cast<double>(std::abs(a_single[i])));
  }
  std::printf("  %-46s max abs diff %.3e of max %.3e\n", (name + ": packed vs unpacked adapter").c_str(), diff, scale);
  t.expect(a_packed.size() == a_single.size() && diff <= 1e-2 * scale, name + ": packed adapter within 1e-2 of unpacked");
}

}  // namespace

int main(int argc, char** argv) {
  TestContext t(argc, argv, "cuda_test_model");
  try {
    std::printf("  %s\n", peft::cuda::describe_device(0).c_str());  // which kernel family these checks ran
    check_against_cpu<peft::cuda::KeepActivations>(t, "d64 gqa2 tied", test::tiny_test_config(64, true, 1), 8);
    check_against_cpu<peft::cuda::RecomputeLayer>(t, "d64 gqa2 tied", test::tiny_test_config(64, true, 1), 8);
    check_against_cpu<peft::cuda::SelectiveRecompute>(t, "d64 gqa2 tied", test::tiny_test_config(64, true, 1), 8);
    check_against_cpu<peft::cuda::SelectiveRecompute>(t, "d16 gqa2 untied", test::tiny_test_config(16, false, 4), 4);
    check_against_cpu<peft::cuda::KeepActivations>(t, "d16 gqa2 untied", test::tiny_test_config(16, false, 4), 4);
    check_against_cpu<peft::cuda::KeepActivations>(t, "d128 mha untied", test::tiny_test_config(128, false, 1), 8);
    check_against_cpu<peft::cuda::KeepActivations>(t, "d128 mha untied", test::tiny_test_config(128, false, 1), 64);
    check_against_cpu<peft::cuda::KeepActivations>(t, "d128 mha untied", test::tiny_test_config(128, false, 1), 64, true);
    check_against_cpu<peft::cuda::SelectiveRecompute>(t, "d64 gqa2 tied", test::tiny_test_config(64, true, 1), 16);
    check_packing(t, "d64 packing", test::tiny_test_config(64, true, 1));
    check_packing(t, "d16 packing", test::tiny_test_config(16, false, 4));
    check_graphs(t, "d64 graphs+dropout", test::tiny_test_config(64, true, 1));
    check_lora_kernels(t, "d64 LoRA kernels+dropout", test::tiny_test_config(64, true, 1));
    check_lora_kernels(t, "d64 LoRA kernels+dropout", test::tiny_test_config(64, true, 1), 24);
    check_lora_kernels(t, "d128 LoRA kernels+dropout", test::tiny_test_config(128, false, 1), 64);
    check_memory_plan(t, "d128 memory plan", test::tiny_test_config(128, false, 1));
    check_activation_policies(t, "d64 keep/selective/recompute+dropout", test::tiny_test_config(64, true, 1));
    check_recompute_layers_plan(t, "d128 4 layers", test::tiny_test_config(128, false, 1));
    for (const int n : {0, 1, 2, 3, 4}) {
      ModelConfig four = test::tiny_test_config(64, true, 1);
      four.num_hidden_layers = 4;
      check_activation_policies(t, ("d64 4 layers, recompute_num_layers " + std::to_string(n)).c_str(), four, n);
    }
    if (!t.small) {
      check_fixture<Cuda>(t, "tiny_public");
      check_fixture<CudaRecompute>(t, "tiny_public");
      check_fixture<CudaSelective>(t, "tiny_public");
      check_fixture<Cuda>(t, "batch2_ga2_linear");
      check_accumulation_packing(t, "tiny_public");
      // intermediate_size 100 breaks the 16-byte rows the kernels need: a clear error, not a crash.
      bool threw = false;
      try {
        check_fixture<Cuda>(t, "tied_1kv_ga4_cosine");
      } catch (const Error& e) {
        threw = std::string(e.what()).find("intermediate_size") != std::string::npos;
        std::printf("  tied_1kv_ga4_cosine: %s\n", e.what());
      }
      t.expect(threw, "tied_1kv_ga4_cosine: rejected, naming intermediate_size");
    }
  } catch (const std::exception& e) {
    std::printf("FAILED with exception: %s\n", e.what());
    return 2;
  }
  return t.finish();
}
