// GPU decode benchmark: the CUDA model on the Qwen2.5-7B shape (random bf16 weights drawn on the
// device), LoRA r=8 on all seven projections kept unmerged with lora_B nonzero (so the branch is
// really computed), batch 1, a 64-token prompt, 256 new tokens by greedy decoding without stop
// tokens. The HF baseline is bench/hf_generate_baseline.py; bench/run_decode_bench.sh runs both.
//
// Reported (one JSON line):
//   prefill_ms        forward_cached of the prompt (the logits row copied to the host), median of 5
//   decode_tok_s      greedy_on_device: (new tokens - 1) / (its time - prefill_ms), median of 3;
//                     the steps replay the captured graph and the argmax stays on the device
//   generator_tok_s   the chat path: peft::Generator, logits row to the host and a host argmax per token
//   bytes_per_token   weights read by one decode step (every projection, LoRA A and B, norms,
//                     lm_head) plus the mean KV cache read
//   bound_tok_s       read_bw / bytes_per_token at 3.0 TB/s and at the read bandwidth measured
//                     here (a streaming-read kernel over 4 GiB); frac_* = decode_tok_s / bound
//   peak_mem_gb       device memory in use at the end (cudaMemGetInfo: weights, cache, context)
//   step_kernels      kernels in the captured one-token graph (model/decode.cuh: 5 a layer + 4)
//
//   decode_bench [--no-graph] [--cublas] [--merged] [--prompt N] [--new N]
//     --cublas: one-token steps on cuBLASLt (M = 1) instead of the one-row kernels (gemv.cuh)
//     --merged: the same model without the adapter (Frozen): what serving merged weights costs
//       (`export --merge_lora true`, then chat_cuda --model on that folder)
//   decode_bench --kernels: instead, each kernel of the step alone, its achieved read bandwidth
//     (bench/decode_kernels.cuh): a table, one JSON line per kernel and grid, and the step time
//     the kernels add up to
//   PEFT_GEMV_BLOCKS_PER_SM (default 4): the one-row kernels' grid, for tuning
//   PEFT_DECODE_PDL=0: no programmatic dependent launch (pdl.cuh), for comparison
//   PEFT_DECODE_SPLIT_KEYS (default 128): attention's split length (decode_attention.cuh)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "decode_kernels.cuh"
#include "peft/qwen_cuda.cuh"
#include "peft/generate/generator.hpp"
#include "peft/models/presets.hpp"

using namespace peft;

namespace {

using LoraModel = Qwen2<Lora<8>, Bf16Mixed, CudaRecompute>;
using MergedModel = Qwen2<Frozen, Bf16Mixed, CudaRecompute>;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

__global__ void read_kernel(const int4* __restrict__ p, long long n, int* sink) {
  int acc = 0;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x7fffffff) *sink = acc;  // keeps the loads
}

// Streaming-read bandwidth (bytes/s): the roofline the decode step works against.
double measured_read_bandwidth() {
  const std::size_t bytes = std::size_t{4} << 30;
  void* buf = nullptr;
  int* sink = nullptr;
  PEFT_CUDA_CHECK(cudaMalloc(&buf, bytes));
  PEFT_CUDA_CHECK(cudaMalloc(&sink, 4));
  PEFT_CUDA_CHECK(cudaMemset(buf, 1, bytes));
  int sms = 0;
  PEFT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const long long n = static_cast<long long>(bytes / 16);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  float best = 1e30f;
  for (int rep = 0; rep < 6; ++rep) {
    cudaEventRecord(a);
    read_kernel<<<sms * 8, 512>>>(static_cast<const int4*>(buf), n, sink);
    cudaEventRecord(b);
    PEFT_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    if (rep > 0) best = std::min(best, ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaFree(buf);
  cudaFree(sink);
  return static_cast<double>(bytes) / (best * 1e-3);
}

double device_used_gb() {
  std::size_t free = 0, total = 0;
  PEFT_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return static_cast<double>(total - free) / (1u << 30);
}

// One model's decode measurement (the JSON line above).
template <class Model>
void run(const ModelConfig& cfg, int prompt_len, int new_tokens, bool graphs, bool gemv, double bw) {
  LoraConfig lora;
  lora.r = 8;
  lora.lora_alpha = 32;
  lora.lora_dropout = 0;
  lora.target_modules = {"all-linear"};
  CudaModelOptions opt;
  opt.max_tokens = prompt_len;  // the prefill chunk: the whole prompt at once
  opt.logits_chunk_rows = 8;
  opt.extra_bytes = 1u << 20;
  opt.graphs = graphs;
  Model model(cfg, lora, opt);
  model.fill_random_weights(1234);
  constexpr bool adapted = !std::is_same_v<Model, MergedModel>;
  if constexpr (adapted) {
    model.init_adapters(5);
    std::uint64_t seed = 99;
    for (const auto& p : model.trainable_parameters().tensors())  // lora_B != 0: the branch counts
      if (p.name.find("lora_B") != std::string::npos)
        peft::cuda::fill_normal(p.value_bf16, p.numel(), seed++, 0.02f, model.stream());
  }
  PEFT_CUDA_CHECK(cudaStreamSynchronize(model.stream()));

  // Bytes one decode step reads.
  const double H = static_cast<double>(cfg.hidden_size), I = static_cast<double>(cfg.intermediate_size);
  const double Q = static_cast<double>(cfg.num_attention_heads * cfg.head_dim);
  const double KV = static_cast<double>(cfg.num_key_value_heads * cfg.head_dim);
  const double r = adapted ? 8 : 0, L = static_cast<double>(cfg.num_hidden_layers), V = static_cast<double>(cfg.vocab_size);
  const double proj = H * Q + 2 * H * KV + Q * H + 3 * H * I + (Q + 2 * KV);  // weights + q/k/v biases
  const double lora_elems = r * ((H + Q) + 2 * (H + KV) + (Q + H) + 2 * (H + I) + (I + H));
  const double mean_ctx = prompt_len + new_tokens / 2.0;
  const double bytes_per_token = 2 * (L * (proj + lora_elems + 2 * H) + V * H + H) + L * 2 * mean_ctx * KV * 2;

  std::mt19937 rng(7);
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(prompt_len));
  for (auto& id : prompt) id = static_cast<std::int32_t>(rng() % static_cast<unsigned>(cfg.vocab_size));
  auto cache = model.make_kv_cache(prompt_len + new_tokens + 8);
  cache.use_graph = graphs;
  cache.use_gemv = gemv;

  model.greedy_on_device(prompt, new_tokens, cache);  // warm-up: GEMM plans, the graph capture
  std::vector<double> prefill, total;
  for (int rep = 0; rep < 5; ++rep) {
    cache.clear();
    const auto t0 = clock_type::now();
    model.forward_cached(prompt, cache);
    prefill.push_back(seconds_since(t0));
  }
  std::vector<std::int32_t> ids;
  for (int rep = 0; rep < 3; ++rep) {
    cache.clear();
    const auto t0 = clock_type::now();
    ids = model.greedy_on_device(prompt, new_tokens, cache);
    total.push_back(seconds_since(t0));
  }
  const double prefill_s = median(prefill), total_s = median(total);
  const double decode_tok_s = (new_tokens - 1) / (total_s - prefill_s);

  // The chat path on the same model: the Generator, host argmax on the copied logits row.
  GenerationConfig g;
  g.max_new_tokens = new_tokens;
  Generator<Model> gen(model);
  const Generation out = gen.generate(prompt, g, [](std::int32_t) {});
  const bool same = out.tokens == ids;

  const double bound3 = 3.0e12 / bytes_per_token, boundm = bw / bytes_per_token;
  std::printf(
      "{\"bench\": \"decode\", \"model\": \"Qwen2.5-7B shape\", \"lora\": \"%s\", "
      "\"graphs\": %s, \"step\": \"%s\", \"pdl\": %s, \"prompt\": %d, \"new_tokens\": %d, "
      "\"prefill_ms\": %.2f, \"decode_tok_s\": %.1f, \"ms_per_token\": %.3f, \"generator_tok_s\": %.1f, "
      "\"generator_ids_equal\": %s, \"bytes_per_token_gb\": %.3f, \"read_bw_tb_s\": %.3f, "
      "\"bound_tok_s_3tb\": %.1f, \"frac_bound_3tb\": %.3f, \"bound_tok_s_measured\": %.1f, "
      "\"frac_bound_measured\": %.3f, \"peak_mem_gb\": %.2f, \"kv_cache_gb\": %.3f, \"step_kernels\": %zu, "
      "\"layers\": %d}\n",
      adapted ? "r8 all-linear unmerged" : "none (merged weights)", graphs ? "true" : "false", gemv ? "gemv" : "cublaslt", peft::cuda::pdl_enabled() ? "true" : "false",
      prompt_len, new_tokens, prefill_s * 1e3, decode_tok_s, 1e3 / decode_tok_s, out.decode_tokens_per_second(),
      same ? "true" : "false", bytes_per_token / 1e9, bw / 1e12, bound3, decode_tok_s / bound3, boundm,
      decode_tok_s / boundm, device_used_gb(), static_cast<double>(cache.bytes()) / (1u << 30),
      cache.graph_kernels(), static_cast<int>(cfg.num_hidden_layers));
}

}  // namespace

int main(int argc, char** argv) {
  try {
    bool graphs = true, gemv = true, kernels = false, merged = false;
    int prompt_len = 64, new_tokens = 256;
    for (int i = 1; i < argc; ++i) {
      if (!std::strcmp(argv[i], "--no-graph")) graphs = false;
      else if (!std::strcmp(argv[i], "--cublas")) gemv = false;
      else if (!std::strcmp(argv[i], "--kernels")) kernels = true;
      else if (!std::strcmp(argv[i], "--merged")) merged = true;
      else if (!std::strcmp(argv[i], "--prompt") && i + 1 < argc) prompt_len = std::atoi(argv[++i]);
      else if (!std::strcmp(argv[i], "--new") && i + 1 < argc) new_tokens = std::atoi(argv[++i]);
      else throw Error(std::string("decode_bench: unknown argument ") + argv[i]);
    }
    require(prompt_len >= 2 && new_tokens >= 2, "decode_bench: --prompt and --new must be at least 2");
    const double bw = measured_read_bandwidth();

    const ModelConfig cfg = preset_config<Qwen25_7B>();
    if (kernels) {
      const auto rs = decode_kernels::measure(cfg, 8, bw);
      std::printf("streaming-read kernel: %.2f TB/s\n", bw / 1e12);
      for (int ctx = 0; ctx < 2; ++ctx)
        decode_kernels::print_sum(rs, static_cast<int>(cfg.num_hidden_layers), peft::cuda::gemv_blocks_per_sm(), ctx,
                                  bw);
      return 0;
    }
    if (merged)
      run<MergedModel>(cfg, prompt_len, new_tokens, graphs, gemv, bw);
    else
      run<LoraModel>(cfg, prompt_len, new_tokens, graphs, gemv, bw);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "decode_bench: %s\n", e.what());
    return 1;
  }
}
