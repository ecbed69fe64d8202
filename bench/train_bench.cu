// GPU training benchmark: the CUDA model (Qwen2<Lora<8>, Bf16Mixed, Cuda / CudaSelective / CudaRecompute>) on
// the Qwen2.5-7B and 0.5B shapes with random bf16 weights drawn on the device, and QLoRA
// (Qwen2<Lora<8>, Nf4Base, CudaRecompute>: random NF4 codes drawn on the device) on the 7B, 14B
// and 32B shapes at 2048, each NF4 line with the arena's plan by part. LoRA r=8
// all-linear (alpha 32, dropout 0.05, as bench/hf_peft_baseline.py), AdamW with clipping at 1.0.
// Workloads mirror the HF baseline's: one sequence per step at 2048 (keep-all, selective and recompute),
// 4096 (recompute), 64; the identity run (50 samples of 40-80 tokens, 10 epochs, GA 16) trained
// through the ordinary Trainer with the 16 samples of each optimizer step packed into one
// micro-batch; the 0.5B at 2048, with LoRA and with --train_type full (FullLm<Bf16Mixed, Cuda>:
// every weight trains, fp32 masters, gradients and AdamW moments beside the bf16 copies).
//
// Per workload it prints one JSON line: tokens/s, median step time, peak memory (the arena's
// high-water mark, comparable to torch's max_memory_allocated, and device memory in use from
// cudaMemGetInfo, which adds the CUDA context and cuBLAS), and MFU against 805 TFLOP/s (the
// cuBLAS bf16 rate measured on the H100), counting the useful FLOPs only: forward and input
// gradients of every projection and the lm_head (frozen weights need no weight gradients) plus
// causal attention (forward, and 2.5x that backward); recompute's (and selective's) extra forward is not credited.
// A full fine-tune also computes every weight gradient: 6 instead of 4 FLOPs per weight and token.
//
//   train_bench [option ...] [workload ...]
//     workloads: 7b_2048_keep 7b_2048_selective 7b_2048_recompute 7b_4096_selective 7b_4096_recompute
//                7b_64 identity 7b_16x40_recompute 7b_16x40_keep 0.5b_2048
//                0.5b_2048_full 7b_nemo_keep 7b_nemo_recompute nf4_7b_2048_recompute
//                nf4_14b_2048_recompute nf4_32b_2048_recompute 7b_2048_keep_embed_device
//                7b_2048_keep_embed_host, and the "will it fit" grid: grid_<0.5b|7b|14b|32b>_<bf16|nf4>_<512|2048>
//                (recompute, one sequence a micro-step; `grid` picks all 16) (default: all but the grid)
//     --lora-kernels=K[,K...]  separate | reordered | fused (CudaModelOptions::lora_kernels; default
//                              the model's): each fixed-length workload once per K, for an A/B
//     --lora-rank=N            LoRA rank N (Lora<> at run time; default Lora<8>)
//     --side-stream=0|1        the adapter's passes on a second stream beside the base GEMMs
//                              (CudaModelOptions::lora_side_stream; default the model's)
//     --lora-targets=M[,M...]  the adapter's target_modules (default all-linear; e.g. q_proj: what
//                              the other six projections' adapters cost a step, for an A/B)
//     --lora-dropout=P         the adapter's dropout (default 0.05, as the HF baseline)
//     --recompute-num-layers=N selective / recompute workloads: only the first N layers rebuild, the others
//                              keep everything (CudaModelOptions::recompute_num_layers; default all)
//     --graphs=0|1             replay a shape's step as a captured CUDA graph (CudaModelOptions::graphs;
//                              default the model's: on), or launch every kernel each step
//     --breakdown              after the timed steps, 3 instrumented eager steps: device time by part
//                              (base GEMMs, LoRA, attention, elementwise, lm_head + CE, optimizer,
//                              other/idle) from CUDA events (kernels/cuda/step_profile.cuh); the
//                              instrumented step runs on one stream (the side stream's passes in line)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "peft/qwen_cuda.cuh"
#include "peft/train/step_timing.hpp"

using namespace peft;

namespace {

constexpr double kPeakFlops = 805e12;

struct BenchOptions {
  std::vector<peft::cuda::LoraKernels> kernels;  // empty: the model's default
  int rank = 0;                                  // 0: Lora<8>
  bool breakdown = false;
  int side_stream = -1;                          // -1: the model's default (CudaModelOptions::lora_side_stream)
  int graphs = -1;                               // -1: the model's default (CudaModelOptions::graphs)
  std::vector<std::string> targets{"all-linear"};  // --lora-targets (PEFT's target_modules)
  double dropout = 0.05;                           // --lora-dropout
  int recompute_num_layers = -1;                   // --recompute-num-layers (-1: every layer)
};
BenchOptions bench;

// A model's options for `max_tokens` a micro-batch, with the command line's --side-stream.
CudaModelOptions bench_model_options(int max_tokens) {
  CudaModelOptions opt{max_tokens};
  if (bench.side_stream >= 0) opt.lora_side_stream = bench.side_stream == 1;
  if (bench.graphs >= 0) opt.graphs = bench.graphs == 1;
  opt.recompute_num_layers = bench.recompute_num_layers;
  return opt;
}

const char* kernels_name(peft::cuda::LoraKernels k) {
  using peft::cuda::LoraKernels;
  return k == LoraKernels::kSeparate ? "separate" : k == LoraKernels::kReordered ? "reordered" : "fused";
}

double flops_per_token(const ModelConfig& c, double mean_keys, bool weight_grads) {
  const double h = static_cast<double>(c.hidden_size), i = static_cast<double>(c.intermediate_size);
  const double q = static_cast<double>(c.num_attention_heads * c.head_dim), kv = static_cast<double>(c.num_key_value_heads * c.head_dim);
  const double linear = static_cast<double>(c.num_hidden_layers) * (h * q + 2 * h * kv + q * h + 3 * h * i) +
                        static_cast<double>(c.vocab_size) * h;
  const double attn_fwd = 4.0 * mean_keys * q * static_cast<double>(c.num_hidden_layers);  // QK^T and PV
  return (weight_grads ? 6.0 : 4.0) * linear + 3.5 * attn_fwd;
}

std::size_t device_used_bytes() {
  std::size_t free = 0, total = 0;
  PEFT_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return total - free;
}
double device_used_gb() { return static_cast<double>(device_used_bytes()) / (1u << 30); }

// "a,b,c" -> {"a", "b", "c"} (an empty value gives no names).
std::vector<std::string> comma_list(const std::string& value) {
  std::vector<std::string> names;
  std::stringstream list(value);
  for (std::string n; std::getline(list, n, ',');) names.push_back(n);
  return names;
}

LoraConfig bench_lora() {
  LoraConfig l;
  l.r = bench.rank > 0 ? bench.rank : 8;
  l.lora_alpha = 32;
  l.lora_dropout = bench.dropout;
  l.target_modules = bench.targets;
  return l;
}

Sample random_sample(std::mt19937& rng, int len) {
  Sample s;
  std::uniform_int_distribution<int> tok(0, 149999);
  for (int i = 0; i < len; ++i) s.input_ids.push_back(tok(rng));
  s.labels = s.input_ids;
  return s;
}

void report(const std::string& name, const ModelConfig& c, double tokens_per_step, double step_ms, double mean_keys,
            std::size_t arena_peak, double used_gb, const std::string& extra = "", bool weight_grads = false) {
  const double tps = tokens_per_step / (step_ms / 1000.0);
  const double mfu = tps * flops_per_token(c, mean_keys, weight_grads) / kPeakFlops;
  std::printf("{\"workload\": \"%s\", \"tok_per_s\": %.1f, \"step_ms\": %.2f, \"arena_peak_gb\": %.2f, "
              "\"device_used_gb\": %.2f, \"mfu\": %.3f%s}\n",
              name.c_str(), tps, step_ms, static_cast<double>(arena_peak) / (1u << 30), used_gb, mfu, extra.c_str());
  std::fflush(stdout);
}

// Where the device time of a step goes: `steps` instrumented eager steps (after one that creates
// the events), the optimizer timed here and everything else by the model's own scopes.
template <class Model>
void print_breakdown(const std::string& name, Model& model, const PackedBatch& batch, int steps) {
  using peft::cuda::StepPart;
  peft::cuda::StepProfile prof;
  model.set_step_profile(&prof);
  const auto params = model.trainable_parameters();
  AdamW opt = adamw_from(TrainingArguments{});
  optimizer_init(opt, params);
  const float scale = 1.0f / static_cast<float>(batch.label_tokens);
  Rng dropout(1);
  for (int s = 0; s <= steps; ++s) {
    if (s == 1) prof.reset();
    prof.step_begin(model.stream());
    model.forward_backward(batch, scale, &dropout);
    {
      const peft::cuda::ProfileScope o(&prof, StepPart::kOptimizer, model.stream());
      clip_grad_norm(params, 1.0);
      optimizer_step(opt, params, 1e-4);
      model.zero_grad();
    }
    prof.step_end(model.stream());
    prof.collect();
  }
  model.set_step_profile(nullptr);
  std::string parts;
  std::printf("# breakdown %s (%d instrumented eager steps, %zu timed calls a step): ms a step, %% of %.2f ms\n",
              name.c_str(), prof.steps(), prof.scopes_per_step(), prof.total_ms());
  for (std::size_t i = 0; i < peft::cuda::StepProfile::kParts; ++i) {
    const auto p = static_cast<StepPart>(i);
    std::printf("#   %-58s %8.2f  %5.1f%%\n", peft::cuda::step_part_name(p), prof.part_ms(p),
                100.0 * prof.part_ms(p) / prof.total_ms());
    parts += std::string(parts.empty() ? "" : ", ") + "\"" + peft::cuda::step_part_name(p) + "\": " +
             std::to_string(prof.part_ms(p));
  }
  std::printf("#   %-58s %8.2f  %5.1f%%\n", "other / idle", prof.other_ms(), 100.0 * prof.other_ms() / prof.total_ms());
  std::printf("{\"breakdown\": \"%s\", \"eager_step_ms\": %.2f, \"other_idle_ms\": %.2f, \"parts_ms\": {%s}}\n",
              name.c_str(), prof.total_ms(), prof.other_ms(), parts.c_str());
  std::fflush(stdout);
}

// One sequence of `seq` tokens per optimizer step: forward+backward, clip, AdamW, zero_grad.
// `samples` > 1 packs that many sequences of `seq` tokens into the micro-batch (varlen attention
// keeps them apart), as NeMo's packed micro-batch 2 does.
template <class Device, class Layout = Lora<8>, class Precision = Bf16Mixed>
void fixed_length_with(const std::string& name, const ModelConfig& cfg, int seq, int steps, int warmup, int samples,
                       CudaModelOptions opt) {
  using Model = Qwen2<Layout, Precision, Device>;
  const peft::cuda::PlannedMemory planned = Model::planned_memory(cfg, bench_lora(), opt);
  const std::string plan = peft::cuda::describe(planned);
  Model model(cfg, bench_lora(), opt);
  model.fill_random_weights(1);
  model.init_adapters(0);
  std::mt19937 rng(0);
  std::vector<Sample> drawn;
  for (int i = 0; i < samples; ++i) drawn.push_back(random_sample(rng, seq));
  std::vector<const Sample*> packed;
  for (const Sample& x : drawn) packed.push_back(&x);
  const PackedBatch batch = PackedBatch::of(packed);
  Rng dropout(0);
  const StepTiming t = time_training_steps(model, batch, warmup, steps, &dropout, [&] {
    PEFT_CUDA_CHECK(cudaStreamSynchronize(model.stream()));
  });
  const std::size_t used = device_used_bytes();
  char extra[768];
  std::snprintf(extra, sizeof extra,
                ", \"lora_kernels\": \"%s\", \"side_stream\": %d, \"recompute_num_layers\": %d, \"lora_rank\": %d, \"lora_dropout\": %.3g, "
                "\"loss\": %.4f, \"steps\": %d, \"step_ms_min\": %.2f, "
                "\"trainable\": %lld, \"embedding\": \"%s\", \"arena_peak_bytes\": %zu, \"planned_bytes\": %zu, "
                "\"host_embedding_bytes\": %zu, \"device_used_bytes\": %zu, \"plan\": \"%s\"",
                kernels_name(opt.lora_kernels), opt.lora_side_stream ? 1 : 0,
                peft::cuda::ActivationSets::keeps_all(Device::activations::keeps_layers, Device::activations::keeps_mlp)
                    ? -1
                    : opt.recompute_num_layers,
                bench_lora().r, bench_lora().lora_dropout, t.loss,
                steps, t.min_ms,
                static_cast<long long>(model.trainable_parameters().numel()),
                model.embedding_in_host_memory() ? "host" : "device", model.arena().high_water(), planned.total(),
                planned.host_embedding, used, plan.c_str());
  report(name, cfg, static_cast<double>(seq) * samples, t.median_ms, (seq + 1) / 2.0, model.arena().high_water(),
         static_cast<double>(used) / (1u << 30), extra, !Model::uses_lora());
  if (bench.breakdown) print_breakdown(name + " " + kernels_name(opt.lora_kernels), model, batch, 3);
}

// Once per --lora-kernels choice (once with the default when none); --lora-rank runs Lora<>.
// `embedding`: where the token embedding lives (automatic: host memory when frozen and untied).
template <class Device, class Layout = Lora<8>, class Precision = Bf16Mixed>
void fixed_length(const std::string& name, const ModelConfig& cfg, int seq, int steps, int warmup, int samples = 1,
                  EmbeddingHome embedding = EmbeddingHome::automatic) {
  CudaModelOptions opt = bench_model_options(seq * samples);
  opt.embedding = embedding;
  std::vector<peft::cuda::LoraKernels> kernels = bench.kernels;
  if (kernels.empty()) kernels.push_back(opt.lora_kernels);
  for (const auto k : kernels) {
    opt.lora_kernels = k;
    if constexpr (std::is_same_v<Layout, Lora<8>>) {
      if (bench.rank > 0) {
        fixed_length_with<Device, Lora<>, Precision>(name, cfg, seq, steps, warmup, samples, opt);
        continue;
      }
    }
    fixed_length_with<Device, Layout, Precision>(name, cfg, seq, steps, warmup, samples, opt);
  }
}

// The recipe's identity run through the Trainer: batch 16 of packed samples, GA 1 (the same
// optimizer steps as batch 1 x GA 16: HF normalises by the step's label tokens either way).
void identity_run(const ModelConfig& cfg) {
  using Model = Qwen2<Lora<8>, Bf16Mixed, Cuda>;
  const auto t_load = std::chrono::steady_clock::now();
  Model model(cfg, bench_lora(), bench_model_options(16 * 80));
  model.fill_random_weights(1);
  model.init_adapters(0);
  PEFT_CUDA_CHECK(cudaDeviceSynchronize());
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  std::mt19937 rng(0);
  std::vector<Sample> data;
  std::uniform_int_distribution<int> len(40, 80);
  std::int64_t tokens = 0;
  for (int i = 0; i < 50; ++i) {
    data.push_back(random_sample(rng, len(rng)));
    tokens += static_cast<std::int64_t>(data.back().size());
  }
  TrainingArguments args;
  args.learning_rate = 1e-4;
  args.num_train_epochs = 10;
  args.per_device_train_batch_size = 16;
  args.gradient_accumulation_steps = 1;
  args.max_grad_norm = 1.0;
  args.lr_scheduler_type = "cosine";
  args.warmup_ratio = 0.05;
  args.logging_steps = 1000;
  Trainer<Model> trainer(model, args, adamw_from(args), NamedSchedule(args.lr_scheduler_type));
  trainer.set_quiet(true);
  const TrainResult r = trainer.train(data);
  const auto out = std::filesystem::temp_directory_path() / "peft_bench_identity_adapter";
  const auto t_save = std::chrono::steady_clock::now();
  save_trained_weights(out, model, "random-7b");
  const double save_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_save).count();
  std::filesystem::remove_all(out);
  char extra[256];
  std::snprintf(extra, sizeof extra,
                ", \"train_s\": %.2f, \"init_s\": %.2f, \"save_s\": %.3f, \"total_s\": %.2f, \"optimizer_steps\": %lld, "
                "\"tokens\": %lld, \"first_loss\": %.4f, \"last_loss\": %.4f",
                r.seconds, load_s, save_s, load_s + r.seconds + save_s, static_cast<long long>(r.global_step),
                static_cast<long long>(10 * tokens), r.step_losses.front(), r.step_losses.back());
  // step_ms: per optimizer step; tok_per_s: all training tokens over the training wall time.
  report("identity", cfg, static_cast<double>(10 * tokens) / static_cast<double>(r.global_step),
         r.seconds * 1000.0 / static_cast<double>(r.global_step), 30.0, model.arena().high_water(), device_used_gb(),
         extra);
}

// Issue 15's "will it fit" table: every preset x base x length, recompute (the lightest plan), the
// planned and measured peak side by side (bench/memory_grid.py prints it beside HF's bf16 rows).
// Only when named, or all of it by `grid`: a default run leaves it out.
template <class Precision>
void grid_row(const std::string& model, const ModelConfig& cfg, int seq, const std::vector<std::string>& want) {
  const bool nf4 = std::is_same_v<Precision, Nf4Base>;
  const std::string name = "grid_" + model + (nf4 ? "_nf4_" : "_bf16_") + std::to_string(seq);
  auto named = [&](const std::string& w) { return std::find(want.begin(), want.end(), w) != want.end(); };
  if (!named(name) && !named("grid")) return;
  // Fewer steps where a step is long (the 32B at 2048: ~1 s); the median of at least 3.
  const double step_gflop = flops_per_token(cfg, seq / 2.0, false) * seq / 1e9;
  const int steps = step_gflop > 2e5 ? 3 : step_gflop > 5e4 ? 5 : 10;
  try {
    fixed_length<CudaRecompute, Lora<8>, Precision>(name, cfg, seq, steps, 1);
  } catch (const std::exception& e) {  // a row that does not fit is a row of the table, not the end of it
    std::printf("{\"workload\": \"%s\", \"error\": \"%s\"}\n", name.c_str(), e.what());
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> want;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--breakdown") {
      bench.breakdown = true;
    } else if (a == "--side-stream=0" || a == "--side-stream=1") {
      bench.side_stream = a.back() - '0';
    } else if (a == "--graphs=0" || a == "--graphs=1") {
      bench.graphs = a.back() - '0';
    } else if (a.rfind("--lora-rank=", 0) == 0) {
      bench.rank = std::atoi(a.c_str() + 12);
      if (bench.rank <= 0) {
        std::fprintf(stderr, "train_bench: --lora-rank needs a positive rank (got '%s')\n", a.c_str());
        return 2;
      }
    } else if (a.rfind("--recompute-num-layers=", 0) == 0) {
      char* end = nullptr;
      const long n = std::strtol(a.c_str() + 23, &end, 10);
      if (end == a.c_str() + 23 || *end != '\0' || n < 0 || n > 1000) {
        std::fprintf(stderr, "train_bench: --recompute-num-layers needs a layer count (got '%s')\n", a.c_str());
        return 2;
      }
      bench.recompute_num_layers = static_cast<int>(n);
    } else if (a.rfind("--lora-targets=", 0) == 0) {
      bench.targets = comma_list(a.substr(15));  // names checked below, by LoraConfig::validate
    } else if (a.rfind("--lora-dropout=", 0) == 0) {
      char* end = nullptr;
      bench.dropout = std::strtod(a.c_str() + 15, &end);
      if (end == a.c_str() + 15 || *end != '\0') {
        std::fprintf(stderr, "train_bench: --lora-dropout needs a number (got '%s')\n", a.c_str());
        return 2;
      }
    } else if (a.rfind("--lora-kernels=", 0) == 0) {
      for (const std::string& k : comma_list(a.substr(15))) {
        using peft::cuda::LoraKernels;
        if (k == "separate") bench.kernels.push_back(LoraKernels::kSeparate);
        else if (k == "reordered") bench.kernels.push_back(LoraKernels::kReordered);
        else if (k == "fused") bench.kernels.push_back(LoraKernels::kFused);
        else {
          std::fprintf(stderr, "train_bench: --lora-kernels: '%s' is not separate, reordered or fused\n", k.c_str());
          return 2;
        }
      }
    } else if (a.rfind("--", 0) == 0) {
      std::fprintf(stderr, "train_bench: unknown option '%s'\n", a.c_str());
      return 2;
    } else {
      want.push_back(a);
    }
  }
  try {  // the adapter the options describe, checked once before any model is built
    bench_lora().validate();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_bench: %s\n", e.what());
    return 2;
  }
  auto on = [&](const char* w) { return want.empty() || std::find(want.begin(), want.end(), w) != want.end(); };
  const ModelConfig b7 = preset_config<Qwen25_7B>(), b05 = preset_config<Qwen25_0_5B>();
  const ModelConfig b14 = preset_config<Qwen25_14B>(), b32 = preset_config<Qwen25_32B>();
  try {  // a machine without a usable GPU gets the error line too, not an uncaught exception
    cudaDeviceProp prop{};
    PEFT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("{\"device\": \"%s\", \"sms\": %d}\n", prop.name, prop.multiProcessorCount);
    if (on("7b_2048_keep")) fixed_length<Cuda>("7b_2048_keep", b7, 2048, 8, 2);
    // The host embedding's cost on the fastest step (bf16, keep-all): the same workload both ways.
    if (on("7b_2048_keep_embed_device"))
      fixed_length<Cuda>("7b_2048_keep_embed_device", b7, 2048, 8, 2, 1, EmbeddingHome::device);
    if (on("7b_2048_keep_embed_host"))
      fixed_length<Cuda>("7b_2048_keep_embed_host", b7, 2048, 8, 2, 1, EmbeddingHome::host);
    if (on("7b_2048_selective")) fixed_length<CudaSelective>("7b_2048_selective", b7, 2048, 8, 2);
    if (on("7b_2048_recompute")) fixed_length<CudaRecompute>("7b_2048_recompute", b7, 2048, 8, 2);
    if (on("7b_4096_selective")) fixed_length<CudaSelective>("7b_4096_selective", b7, 4096, 5, 1);
    if (on("7b_4096_recompute")) fixed_length<CudaRecompute>("7b_4096_recompute", b7, 4096, 5, 1);
    if (on("7b_64")) fixed_length<Cuda>("7b_64", b7, 64, 30, 5);
    if (on("identity")) identity_run(b7);
    // One step of the recipe at a fixed shape: 16 identity-sized samples (40 tokens) packed into
    // one micro-batch (batch 1 x GA 16 joined, train/step_batches.hpp), ms-swift's default
    // checkpointing and keep-all. With --graphs=0 against the default: what the recipe's steps,
    // each of a new shape and so eager, leave to launches.
    if (on("7b_16x40_recompute")) fixed_length<CudaRecompute>("7b_16x40_recompute", b7, 40, 20, 3, 16);
    if (on("7b_16x40_keep")) fixed_length<Cuda>("7b_16x40_keep", b7, 40, 20, 3, 16);
    if (on("0.5b_2048")) fixed_length<Cuda>("0.5b_2048", b05, 2048, 10, 3);
    if (on("0.5b_2048_full")) fixed_length<Cuda, Full>("0.5b_2048_full", b05, 2048, 10, 3);
    // NVIDIA NeMo AutoModel's published Qwen2.5-7B LoRA setup (seq 4096, micro-batch 2 packed; its
    // global batch 32 is GA 16 here, whose one optimizer step in 16 micro-steps this per-micro-step
    // timing over-counts: AdamW runs every step).
    if (on("7b_nemo_keep")) fixed_length<Cuda>("7b_nemo_keep", b7, 4096, 5, 1, 2);
    if (on("7b_nemo_recompute")) fixed_length<CudaRecompute>("7b_nemo_recompute", b7, 4096, 5, 1, 2);
    // QLoRA, the issue's targets: one 2048-token sequence per micro-step with recompute (a GA 16
    // step is 16 of these and one AdamW update over the same adapter).
    if (on("nf4_7b_2048_recompute"))
      fixed_length<CudaRecompute, Lora<8>, Nf4Base>("nf4_7b_2048_recompute", b7, 2048, 8, 2);
    if (on("nf4_14b_2048_recompute"))
      fixed_length<CudaRecompute, Lora<8>, Nf4Base>("nf4_14b_2048_recompute", b14, 2048, 6, 2);
    if (on("nf4_32b_2048_recompute"))
      fixed_length<CudaRecompute, Lora<8>, Nf4Base>("nf4_32b_2048_recompute", b32, 2048, 4, 1);
    const std::pair<const char*, ModelConfig> grid_models[] = {{"0.5b", b05}, {"7b", b7}, {"14b", b14}, {"32b", b32}};
    for (const auto& [model, cfg] : grid_models)
      for (const int seq : {512, 2048}) {
        grid_row<Bf16Mixed>(model, cfg, seq, want);
        grid_row<Nf4Base>(model, cfg, seq, want);
      }
  } catch (const std::exception& e) {
    std::printf("{\"error\": \"%s\"}\n", e.what());
    return 1;
  }
  return 0;
}
