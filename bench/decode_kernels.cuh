// decode_bench --kernels: each kernel of the one-token decode step timed alone at the model's
// shapes, as achieved read bandwidth, so a step that falls short of the bandwidth bound says which
// kernel is short of it. The end-to-end number (decode_tok_s) cannot: the step is one CUDA graph.
//
// Each kernel is launched as model/decode.cuh launches it (gemv.cuh's fused one-row products with
// LoRA r8 unmerged, RoPE + the cache append, SwiGLU, the residual, the argmax; decode_attention over
// a cache), back to back on one stream with programmatic dependent launch, cycling through enough
// copies of its weights (at least 4x the L2 cache) that every launch reads them from HBM, as the
// real step does (15 GB pass between two reads of one layer's weights). Time per launch from CUDA
// events over >= 30 launches; GB/s = the bytes the kernel must read (weights, LoRA A and B, bias,
// norm weight; K and V for attention) / that time. The gemv kernels are also timed at the other
// grids of 2 to 4 blocks per SM (gemv_blocks_per_sm) beside the default, and attention at other
// split lengths (decode_attention_split_keys).
#pragma once
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "peft/qwen_cuda.cuh"

namespace decode_kernels {

using peft::cuda::bf16;
namespace kc = peft::cuda;

class Allocations {  // device buffers of the measurement, freed at the end
 public:
  ~Allocations() {
    for (void* p : ptrs_) cudaFree(p);
  }
  template <class T>
  T* take(std::size_t n, bool zero = true) {
    void* p = nullptr;
    PEFT_CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(n, 1) * sizeof(T)));
    if (zero) PEFT_CUDA_CHECK(cudaMemset(p, 0, std::max<std::size_t>(n, 1) * sizeof(T)));
    ptrs_.push_back(p);
    return static_cast<T*>(p);
  }
  bf16* random(std::size_t n, float stddev = 0.02f) {
    bf16* p = take<bf16>(n, false);
    kc::fill_normal(p, static_cast<long long>(n), seed_++, stddev, nullptr);
    return p;
  }

 private:
  std::vector<void*> ptrs_;
  std::uint64_t seed_ = 1;
};

struct Result {
  std::string kernel;
  int blocks_per_sm = 0;  // 0: attention at the default split, -1: a swept variant (not in the sums)
  double us = 0, gb = 0;
};

// Microseconds a launch, launch(i) running copy i % copies.
inline double time_launches(const std::function<void(int)>& launch, int copies, cudaStream_t st) {
  for (int i = 0; i < std::max(copies, 3); ++i) launch(i % copies);
  PEFT_CUDA_CHECK(cudaStreamSynchronize(st));
  const int reps = std::max(30, 3 * copies);
  cudaEvent_t a, b;
  PEFT_CUDA_CHECK(cudaEventCreate(&a));
  PEFT_CUDA_CHECK(cudaEventCreate(&b));
  PEFT_CUDA_CHECK(cudaEventRecord(a, st));
  for (int i = 0; i < reps; ++i) launch(i % copies);
  PEFT_CUDA_CHECK(cudaEventRecord(b, st));
  PEFT_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  PEFT_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return 1e3 * ms / reps;
}

// The step's kernels at cfg's shapes with LoRA rank r; read_bw in bytes/s (the roofline).
inline std::vector<Result> measure(const peft::ModelConfig& cfg, int r, double read_bw) {
  const int H = static_cast<int>(cfg.hidden_size), I = static_cast<int>(cfg.intermediate_size);
  const int hd = static_cast<int>(cfg.head_dim), heads = static_cast<int>(cfg.num_attention_heads);
  const int kvh = static_cast<int>(cfg.num_key_value_heads), V = static_cast<int>(cfg.vocab_size);
  const int Q = heads * hd, KV = kvh * hd;
  int sms = 0, l2 = 0;
  PEFT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  PEFT_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  Allocations mem;
  cudaStream_t st = nullptr;
  PEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  auto copies_for = [&](double bytes) { return std::max(1, static_cast<int>(4.0 * l2 / bytes) + 1); };

  kc::GemvScratch scratch;  // as the KV cache sizes it (kv_cache.cuh)
  scratch.sync = mem.take<unsigned>(kc::kGemvSyncWords);
  scratch.xa_copies = mem.take<float>(kc::kGemvCopies * kc::kGemvXaCopyFloats);
  scratch.partial_floats = 3 * static_cast<std::size_t>(r) * ((std::max(H, I) + 1023) / 1024);
  scratch.partial = mem.take<float>(scratch.partial_floats);
  scratch.best_slots = 8 * sms;
  scratch.best = mem.take<float>(2 * static_cast<std::size_t>(scratch.best_slots));
  bf16* x_h = mem.random(H, 1.0f);  // the inputs: a hidden row, an attention row, an activation row
  bf16* x_i = mem.random(I, 1.0f);
  bf16* norm = mem.random(H, 0.2f);
  bf16* out = mem.take<bf16>(std::max({Q + 2 * KV, I, H}));
  bf16* kv_row = mem.take<bf16>(2 * KV);
  float* xa = mem.take<float>(3 * 32);
  float* logits = mem.take<float>(V);
  float* rope = mem.take<float>(hd);  // cos, sin of the token (zeros: the time does not depend on them)
  auto* past = mem.take<std::int32_t>(1);
  auto* state = mem.take<std::int32_t>(4);
  auto* out_ids = mem.take<std::int32_t>(1);

  // A projection's segment: weights [rows, in], LoRA A [r, in] and B^T [r, rows], optional bias.
  auto segment = [&](int rows, int in, bool lora, bool bias, double& bytes) {
    kc::GemvSegment s;
    s.w = mem.random(static_cast<std::size_t>(rows) * in);
    s.rows = rows;
    bytes += 2.0 * rows * in;
    if (bias) {
      s.bias = mem.random(rows);
      bytes += 2.0 * rows;
    }
    if (lora) {
      s.a = mem.random(static_cast<std::size_t>(r) * in);
      s.bt = mem.random(static_cast<std::size_t>(r) * rows);
      s.rp = r;
      s.scale = 4.0f;
      bytes += 2.0 * r * (in + rows);
    }
    return s;
  };
  struct Shape {
    std::string name;
    bool sweep = true;  // also at the other grids
    std::function<kc::GemvArgs(double&)> make;
  };
  // Without the adapter (merged weights' cost): what the in-launch x A^T hand-off costs.
  auto no_lora = [&](std::function<kc::GemvArgs(double&)> make) {
    return [&, make](double& b) {
      kc::GemvArgs a = make(b);
      for (int s = 0; s < a.count; ++s) {
        b -= 2.0 * a.seg[s].rp * (a.in + a.seg[s].rows);
        a.seg[s].a = nullptr;
        a.seg[s].rp = 0;
      }
      return a;
    };
  };
  std::vector<Shape> shapes = {
      {"qkv (norm, LoRA, RoPE, append)", true,
       [&](double& b) {
         kc::GemvArgs a{x_h, H, norm, 1e-6f};
         b += 2.0 * H;
         a.seg[0] = segment(Q, H, true, true, b);
         a.seg[1] = segment(KV, H, true, true, b);
         a.seg[2] = segment(KV, H, true, true, b);
         for (int s = 0; s < 3; ++s) a.seg[s].xa = xa + 32 * s;
         a.seg[0].y = out;
         a.seg[1].y = kv_row;
         a.seg[2].y = kv_row + KV;
         a.seg[0].rope = a.seg[1].rope = true;
         a.seg[1].at_row = a.seg[2].at_row = true;
         a.count = 3;
         a.rope_cos = rope;
         a.rope_sin = rope + hd / 2;
         a.head_dim = hd;
         a.row_at = past;
         return a;
       }},
      {"o (LoRA, residual)", true,
       [&](double& b) {
         kc::GemvArgs a{x_h, Q};
         a.seg[0] = segment(H, Q, true, false, b);
         a.seg[0].xa = xa;
         a.seg[0].residual = x_h;
         a.seg[0].y = out;
         a.count = 1;
         return a;
       }},
      {"gate/up (norm, LoRA, SwiGLU)", true,
       [&](double& b) {
         kc::GemvArgs a{x_h, H, norm, 1e-6f};
         b += 2.0 * H;
         a.seg[0] = segment(I, H, true, false, b);
         a.seg[1] = segment(I, H, true, false, b);
         a.seg[0].xa = xa;
         a.seg[1].xa = xa + 32;
         a.seg[0].y = out;
         a.count = 2;
         a.swiglu = true;
         return a;
       }},
      {"down (LoRA, residual)", true,
       [&](double& b) {
         kc::GemvArgs a{x_i, I};
         a.seg[0] = segment(H, I, true, false, b);
         a.seg[0].xa = xa;
         a.seg[0].residual = x_h;
         a.seg[0].y = out;
         a.count = 1;
         return a;
       }},
      {"lm_head (norm, argmax)", true,
       [&](double& b) {
         kc::GemvArgs a{x_h, H, norm, 1e-6f};
         b += 2.0 * H;
         a.seg[0] = segment(V, H, false, false, b);
         a.seg[0].y32 = logits;
         a.count = 1;
         a.state = state;
         a.out_ids = out_ids;
         a.out_capacity = 1;
         return a;
       }},
  };
  for (std::size_t i = 0, n = shapes.size() - 1; i < n; ++i)  // the four projections' kernels without LoRA
    shapes.push_back({shapes[i].name.substr(0, shapes[i].name.find(' ')) + " without LoRA", false,
                      no_lora(shapes[i].make)});
  std::vector<Result> results;
  const int default_bps = kc::gemv_blocks_per_sm();
  for (const Shape& shape : shapes) {
    double bytes = 0;
    std::vector<kc::GemvArgs> copies{shape.make(bytes)};
    for (int c = 1, n = copies_for(bytes); c < n; ++c) {
      double more = 0;
      copies.push_back(shape.make(more));
    }
    for (kc::GemvArgs& a : copies) a.scratch = scratch;
    PEFT_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<int> sweep{default_bps};
    for (int bps : {4, 3, 2})
      if (bps != default_bps && shape.sweep) sweep.push_back(bps);
    for (int bps : sweep) {
      kc::gemv_blocks_per_sm() = bps;
      const double us = time_launches([&](int i) { kc::gemv(copies[i], sms, st); }, static_cast<int>(copies.size()), st);
      results.push_back({shape.name, bps, us, bytes / 1e9});
    }
    kc::gemv_blocks_per_sm() = default_bps;
  }

  // Attention over the cache at the mean context of the two benchmark shapes (64 + 256 / 2 and
  // 2048 + 2048 / 2), at the default split length, then at the others of the sweep (named so, and
  // left out of the sums).
  const kc::DecodeAttentionDims d{heads, kvh, hd};
  float* att_scratch = mem.take<float>(kc::decode_attention_scratch_floats(1, d));
  unsigned* counters = mem.take<unsigned>(kc::decode_attention_counters(1, d));
  bf16* q = mem.random(Q, 1.0f);
  const int default_split = kc::decode_attention_split_keys();
  std::vector<int> split_sweep{default_split};
  for (int k : {32, 64, 128, 256})
    if (k != default_split) split_sweep.push_back(k);
  std::vector<Result> swept;
  for (int ctx : {192, 3072}) {
    const double bytes = 2.0 * 2.0 * ctx * KV;
    std::vector<std::pair<bf16*, bf16*>> caches;
    for (int c = 0, n = copies_for(bytes); c < n; ++c)
      caches.emplace_back(mem.random(static_cast<std::size_t>(ctx) * KV, 1.0f), mem.random(static_cast<std::size_t>(ctx) * KV, 1.0f));
    const std::int32_t last = ctx - 1;
    PEFT_CUDA_CHECK(cudaMemcpy(past, &last, 4, cudaMemcpyHostToDevice));
    PEFT_CUDA_CHECK(cudaDeviceSynchronize());
    for (int keys : split_sweep) {
      kc::decode_attention_split_keys() = keys;
      const double us = time_launches(
          [&](int i) {
            kc::decode_attention(out, att_scratch, counters, q, caches[i].first, caches[i].second, past, 1, d, st);
          },
          static_cast<int>(caches.size()), st);
      const std::string name = "attention, " + std::to_string(ctx) + " keys";
      if (keys == default_split)
        results.push_back({name, 0, us, bytes / 1e9});
      else
        swept.push_back({name + ", split " + std::to_string(keys), -1, us, bytes / 1e9});
    }
    kc::decode_attention_split_keys() = default_split;
  }
  results.insert(results.end(), swept.begin(), swept.end());
  PEFT_CUDA_CHECK(cudaStreamSynchronize(st));
  cudaStreamDestroy(st);

  std::printf("%-34s %6s %10s %10s %9s %8s\n", "kernel (7B shape, one token)", "blk/SM", "us/launch", "MB read",
              "GB/s", "of bw");
  for (const Result& x : results) {
    const double gbs = x.gb / (x.us * 1e-6);
    std::printf("%-34s %6s %10.2f %10.2f %9.0f %7.0f%%\n", x.kernel.c_str(),
                x.blocks_per_sm > 0 ? std::to_string(x.blocks_per_sm).c_str() : "-", x.us, x.gb * 1e3, gbs,
                100 * gbs * 1e9 / read_bw);
  }
  for (const Result& x : results)
    std::printf("{\"bench\": \"decode_kernel\", \"kernel\": \"%s\", \"blocks_per_sm\": %d, \"us\": %.2f, \"gb\": %.4f, "
                "\"gb_s\": %.1f, \"frac_bw\": %.3f}\n",
                x.kernel.c_str(), x.blocks_per_sm, x.us, x.gb, x.gb / (x.us * 1e-6), x.gb * 1e9 / (x.us * 1e-6) / read_bw);
  return results;
}

// The step's time predicted from the kernels alone (default grid): layers x (qkv + attention +
// o + gate/up + down) + lm_head, beside the bound of the bytes they read.
inline void print_sum(const std::vector<Result>& rs, int layers, int default_bps, int attention_index,
                      double read_bw) {
  double layer_us = 0, layer_gb = 0, head_us = 0, head_gb = 0;
  for (const Result& x : rs) {
    if (x.blocks_per_sm != default_bps || x.kernel.find("without") != std::string::npos) continue;
    if (x.kernel.rfind("lm_head", 0) == 0) {
      head_us = x.us;
      head_gb = x.gb;
    } else {
      layer_us += x.us;
      layer_gb += x.gb;
    }
  }
  int seen = 0;
  for (const Result& x : rs)
    if (x.blocks_per_sm == 0 && seen++ == attention_index) {
      layer_us += x.us;
      layer_gb += x.gb;
    }
  const double us = layers * layer_us + head_us, gb = layers * layer_gb + head_gb;
  std::printf("sum of kernels, %s context: %.3f ms/token (%.1f tok/s) for %.2f GB; at %.2f TB/s: %.3f ms (%.1f tok/s)\n",
              attention_index == 0 ? "short" : "long", us / 1e3, 1e6 / us, gb, read_bw / 1e12, gb * 1e9 / read_bw * 1e3,
              read_bw / (gb * 1e9));
}

}  // namespace decode_kernels
