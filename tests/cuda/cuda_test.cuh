// What every CUDA kernel test shares: fresh random inputs (seed printed, PEFT_TEST_SEED to
// replay), bf16 upload/download through the arena, NaN poisoning of outputs before a run (0xFF
// bytes are NaN in both bf16 and fp32) with a check that every element was then written, and the
// relative error ||gpu - cpu|| / ||cpu|| against a stated tolerance. A test binary prints one
// line per check and exits non-zero if any failed; `--small` selects the sizes used under
// compute-sanitizer.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu_reference.hpp"
#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_arena.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"
#include "peft/core/dtype.hpp"

namespace peft::cuda_test {

using cuda::bf16;

struct TestContext {
  std::mt19937 rng;
  bool small = false;
  int failures = 0, checks = 0;

  TestContext(int argc, char** argv, const char* name) {
    for (int i = 1; i < argc; ++i)
      if (std::strcmp(argv[i], "--small") == 0) small = true;
    unsigned seed = std::random_device{}();
    if (const char* s = std::getenv("PEFT_TEST_SEED")) seed = static_cast<unsigned>(std::strtoul(s, nullptr, 10));
    rng.seed(seed);
    std::printf("== %s (seed %u%s)\n", name, seed, small ? ", small" : "");
  }

  Floats normal(std::size_t n, float stddev = 1.0f) {
    std::normal_distribution<float> d(0.0f, stddev);
    Floats v(n);
    for (auto& x : v) x = round_to_bf16(d(rng));  // the values a bf16 tensor can hold
    return v;
  }
  Floats normal_f32(std::size_t n, float stddev = 1.0f) {
    std::normal_distribution<float> d(0.0f, stddev);
    Floats v(n);
    for (auto& x : v) x = d(rng);
    return v;
  }
  int uniform_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

  // Relative L2 error; NaN or an unwritten (still-poisoned) element fails the check.
  void close(const std::string& what, const Floats& gpu, const Floats& cpu, double tol) {
    ++checks;
    bool finite = gpu.size() == cpu.size();
    double diff = 0.0, ref = 0.0;
    std::size_t bad = 0;
    for (std::size_t i = 0; finite && i < gpu.size(); ++i) {
      if (!std::isfinite(gpu[i])) {
        ++bad;
        continue;
      }
      const double d = static_cast<double>(gpu[i]) - cpu[i];
      diff += d * d;
      ref += static_cast<double>(cpu[i]) * cpu[i];
    }
    const double rel = ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
    const bool ok = finite && bad == 0 && rel <= tol;
    if (!ok) ++failures;
    std::printf("  %-46s rel_err %.3e  tol %.0e  %s", what.c_str(), rel, tol, ok ? "PASS" : "FAIL");
    if (bad) std::printf("  (%zu non-finite / unwritten of %zu)", bad, gpu.size());
    if (gpu.size() != cpu.size()) std::printf("  (size %zu vs %zu)", gpu.size(), cpu.size());
    std::printf("\n");
  }
  void expect(bool ok, const std::string& what) {
    ++checks;
    if (!ok) ++failures;
    std::printf("  %-46s %s\n", what.c_str(), ok ? "PASS" : "FAIL");
  }
  int finish() {
    std::printf("== %d of %d checks passed\n", checks - failures, checks);
    return failures == 0 ? 0 : 1;
  }
};

// ---- device transfers (setup-time copies; the arena supplies the memory) ----------------------

inline bf16* upload_bf16(cuda::DeviceArena& arena, const Floats& v) {
  std::vector<std::uint16_t> h(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) h[i] = float_to_bf16(v[i]);
  auto* d = arena.alloc<bf16>(v.size(), "test bf16 tensor");
  PEFT_CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  return d;
}
inline float* upload_f32(cuda::DeviceArena& arena, const Floats& v) {
  auto* d = arena.alloc<float>(v.size(), "test fp32 tensor");
  PEFT_CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
  return d;
}
template <class T>
T* upload(cuda::DeviceArena& arena, const std::vector<T>& v) {
  auto* d = arena.alloc<T>(v.size(), "test tensor");
  PEFT_CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
inline Floats download_bf16(const bf16* d, std::size_t n) {
  std::vector<std::uint16_t> h(n);
  PEFT_CUDA_CHECK(cudaDeviceSynchronize());
  PEFT_CUDA_CHECK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost));
  Floats v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = bf16_to_float(h[i]);
  return v;
}
inline Floats download_f32(const float* d, std::size_t n) {
  Floats v(n);
  PEFT_CUDA_CHECK(cudaDeviceSynchronize());
  PEFT_CUDA_CHECK(cudaMemcpy(v.data(), d, n * 4, cudaMemcpyDeviceToHost));
  return v;
}
template <class T>
T* alloc_poisoned(cuda::DeviceArena& arena, std::size_t n) {
  auto* d = arena.alloc<T>(n, "test output");
  PEFT_CUDA_CHECK(cudaMemset(d, 0xFF, n * sizeof(T)));
  return d;
}
template <class T>
void poison(T* d, std::size_t n) {
  PEFT_CUDA_CHECK(cudaMemset(d, 0xFF, n * sizeof(T)));
}

__global__ void fill_random_bf16_kernel(bf16* x, std::size_t n, unsigned seed, float scale) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed * 2246822519u;
  h ^= h >> 15;
  h *= 2246822519u;
  h ^= h >> 13;
  x[i] = __float2bfloat16_rn(scale * (static_cast<float>(h & 0xffffff) / 8388608.0f - 1.0f));
}
__global__ void fill_random_f32_kernel(float* x, std::size_t n, unsigned seed, float scale) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed * 2246822519u;
  h ^= h >> 15;
  h *= 2246822519u;
  h ^= h >> 13;
  x[i] = scale * (static_cast<float>(h & 0xffffff) / 8388608.0f - 1.0f);
}
// Uniform(-scale, scale) values for timing-only tensors too large to draw on the host.
inline void fill_random_bf16(bf16* x, std::size_t n, unsigned seed, float scale) {
  fill_random_bf16_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(x, n, seed, scale);
  PEFT_CUDA_CHECK_LAUNCH("fill_random_bf16_kernel");
}
inline void fill_random_f32(float* x, std::size_t n, unsigned seed, float scale) {
  fill_random_f32_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(x, n, seed, scale);
  PEFT_CUDA_CHECK_LAUNCH("fill_random_f32_kernel");
}

// The trainable tensors of LoRA r=8 on all seven projections of the 7B: 28 layers x 14 tensors.
inline std::vector<std::int64_t> lora_7b_tensor_sizes() {
  const std::int64_t hidden = 3584, kv = 512, inter = 18944, r = 8;
  const std::int64_t in_out[7][2] = {{hidden, hidden}, {hidden, kv}, {hidden, kv}, {hidden, hidden},
                                     {hidden, inter}, {hidden, inter}, {inter, hidden}};
  std::vector<std::int64_t> sizes;
  for (int layer = 0; layer < 28; ++layer)
    for (const auto& io : in_out) {
      sizes.push_back(r * io[0]);  // lora_A [r, in]
      sizes.push_back(io[1] * r);  // lora_B [out, r]
    }
  return sizes;
}

inline Floats rounded(const Floats& v) {
  Floats r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = round_to_bf16(v[i]);
  return r;
}

// Times `fn` with events: median of `repeats` after `warmup` runs, in milliseconds.
template <class Fn>
float median_ms(Fn&& fn, int warmup = 3, int repeats = 20) {
  cudaEvent_t a, b;
  PEFT_CUDA_CHECK(cudaEventCreate(&a));
  PEFT_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<float> t(repeats);
  for (int i = 0; i < repeats; ++i) {
    PEFT_CUDA_CHECK(cudaEventRecord(a));
    fn();
    PEFT_CUDA_CHECK(cudaEventRecord(b));
    PEFT_CUDA_CHECK(cudaEventSynchronize(b));
    PEFT_CUDA_CHECK(cudaEventElapsedTime(&t[i], a, b));
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[repeats / 2];
}

// Runs a test body, turning a thrown peft::Error (a failed CUDA call) into a failed test.
template <class Body>
int run_test(int argc, char** argv, const char* name, Body&& body) {
  TestContext ctx(argc, argv, name);
  try {
    std::printf("  %s\n", peft::cuda::describe_device(0).c_str());  // which kernel family these checks ran
    body(ctx);
  } catch (const std::exception& e) {
    std::printf("  ERROR: %s\n", e.what());
    ++ctx.failures;
  }
  return ctx.finish();
}

}  // namespace peft::cuda_test
