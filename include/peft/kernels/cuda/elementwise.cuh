// The small element-wise passes the model needs between GEMMs: the residual add (rounded once to
// bf16, as the CPU layer's `h = x + out; store(h)`), fp32 -> bf16 copies of the LoRA masters,
// LoRA dropout, and a device-side random fill for benchmark weights (drawing 7.6B normals on the
// host would take minutes).
//
// Dropout masks are not stored: each element's keep/drop decision is a hash of (seed, element
// index), so the backward regenerates exactly the forward's mask from the same seed. The seed is
// drawn from the trainer's dropout Rng once per projection and micro-batch, so a run is
// reproducible from --seed; the mask itself cannot equal the CPU backend's (which draws every
// element from the Rng stream), only its distribution does. The kernels read the seed from
// device memory, so a captured CUDA graph replays with each step's fresh seeds.
#pragma once
#include <cstdint>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::cuda {
namespace detail {

__device__ inline std::uint64_t mix64(std::uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// Uniform [0, 1) from (seed, index), 24 bits.
__device__ inline float hash_uniform(std::uint64_t seed, std::uint64_t i) {
  return static_cast<float>(mix64(seed + 0x9e3779b97f4a7c15ull * (i + 1)) >> 40) * (1.0f / 16777216.0f);
}
// A 32-bit finaliser (the "lowbias32" constants of Wellons' hash-prospector): two multiplies, a
// bijection on 32 bits with near-ideal avalanche.
__device__ inline std::uint32_t mix32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  return x ^ (x >> 16);
}
// LoRA dropout's decision for element i of a [T, in] input (row-major index): every kernel that
// applies the mask (here and kernels/cuda/lora_dropout.cuh) asks this, so their masks agree.
// 32-bit arithmetic only, because the fused LoRA kernels stream their input at the rate they can
// decide the mask: a 64-bit multiply is several 32-bit ones on the GPU, and mix64 per element was
// ~40% of the fused forward's instructions. The seed's share (`key`) is the same for every
// element, so the compiler hoists it out of the kernels' loops; the index enters through an odd
// multiplier (distinct indices below 2^32 stay distinct) and its high word through another.
// k / 2^24 < p for a 24-bit k, compared as integers: k < ceil(p 2^24) is the same test (p 2^24 is
// exact in fp32, and an integer is below a real q exactly when it is below ceil(q)), without the
// per-element int-to-float conversion, which runs at a quarter of the FMA rate on the GPU. The
// threshold depends on p alone, so the compiler hoists it out of the kernels' loops.
__device__ inline bool below_probability(std::uint32_t k, float p) {
  return k < static_cast<std::uint32_t>(ceilf(p * 16777216.0f));
}
__device__ inline bool dropped(std::uint64_t seed, std::uint64_t i, float p) {
  const std::uint32_t key = static_cast<std::uint32_t>(seed) ^ mix32(static_cast<std::uint32_t>(seed >> 32));
  const std::uint32_t h = mix32((static_cast<std::uint32_t>(i) * 0x9e3779b9u) ^
                                (static_cast<std::uint32_t>(i >> 32) * 0x85ebca6bu) ^ key);
  return below_probability(h >> 8, p);
}

__global__ void residual_add_kernel(bf16* __restrict__ out, const bf16* __restrict__ a, const bf16* __restrict__ b,
                                    long long packs) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= packs) return;
  const Bf16x8 x = load128(a + i * 8), y = load128(b + i * 8);
  Bf16x8 o;
  for (int j = 0; j < 8; ++j) o[j] = to_bf16(to_float(x[j]) + to_float(y[j]));
  store128(out + i * 8, o);
}

__global__ void to_bf16_kernel(bf16* __restrict__ dst, const float* __restrict__ src, long long n) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = to_bf16(src[i]);
}

__global__ void dropout_kernel(bf16* __restrict__ out, const bf16* __restrict__ x, long long n,
                               const std::uint64_t* __restrict__ seed_ptr, float p) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const std::uint64_t seed = *seed_ptr;
  const float keep = 1.0f / (1.0f - p);
  out[i] = dropped(seed, i, p) ? to_bf16(0.0f) : to_bf16(to_float(x[i]) * keep);
}

__global__ void add_dropout_kernel(bf16* __restrict__ dx, const bf16* __restrict__ g, long long n,
                                   const std::uint64_t* __restrict__ seed_ptr, float p) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const std::uint64_t seed = *seed_ptr;
  const float keep = 1.0f / (1.0f - p);
  const float m = dropped(seed, i, p) ? 0.0f : keep;
  dx[i] = to_bf16(to_float(dx[i]) + to_float(g[i]) * m);
}

__global__ void fill_normal_bf16_kernel(bf16* __restrict__ x, long long n, std::uint64_t seed, float stddev) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float u1 = fmaxf(hash_uniform(seed, 2 * i), 1e-7f), u2 = hash_uniform(seed, 2 * i + 1);
  x[i] = to_bf16(stddev * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
}

__global__ void fill_value_bf16_kernel(bf16* __restrict__ x, long long n, float value) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = to_bf16(value);
}

inline unsigned grid_for(long long n, int threads = 256) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// out = bf16(a + b), n elements, n % 8 == 0 (out may alias a or b).
inline void residual_add(bf16* out, const bf16* a, const bf16* b, long long n, cudaStream_t stream) {
  if (n % 8 != 0) throw Error("residual_add: " + std::to_string(n) + " elements is not a multiple of 8");
  if (n == 0) return;
  detail::residual_add_kernel<<<detail::grid_for(n / 8), 256, 0, stream>>>(out, a, b, n / 8);
  PEFT_CUDA_CHECK_LAUNCH("residual_add_kernel");
}

inline void copy_to_bf16(bf16* dst, const float* src, long long n, cudaStream_t stream) {
  if (n == 0) return;
  detail::to_bf16_kernel<<<detail::grid_for(n), 256, 0, stream>>>(dst, src, n);
  PEFT_CUDA_CHECK_LAUNCH("to_bf16_kernel");
}

// out = x * mask / (1 - p): the adapter's input under nn.Dropout(p) in train mode; *seed (device).
inline void dropout_forward(bf16* out, const bf16* x, long long n, const std::uint64_t* seed, float p,
                            cudaStream_t stream) {
  if (n == 0) return;
  detail::dropout_kernel<<<detail::grid_for(n), 256, 0, stream>>>(out, x, n, seed, p);
  PEFT_CUDA_CHECK_LAUNCH("dropout_kernel");
}

// dx += g * mask / (1 - p), the same mask as dropout_forward with the same seed.
inline void dropout_backward_add(bf16* dx, const bf16* g, long long n, const std::uint64_t* seed, float p,
                                 cudaStream_t stream) {
  if (n == 0) return;
  detail::add_dropout_kernel<<<detail::grid_for(n), 256, 0, stream>>>(dx, g, n, seed, p);
  PEFT_CUDA_CHECK_LAUNCH("add_dropout_kernel");
}

// N(0, stddev^2) from (seed, index): benchmark weights only.
inline void fill_normal(bf16* x, long long n, std::uint64_t seed, float stddev, cudaStream_t stream) {
  if (n == 0) return;
  detail::fill_normal_bf16_kernel<<<detail::grid_for(n), 256, 0, stream>>>(x, n, seed, stddev);
  PEFT_CUDA_CHECK_LAUNCH("fill_normal_bf16_kernel");
}
inline void fill_value(bf16* x, long long n, float value, cudaStream_t stream) {
  if (n == 0) return;
  detail::fill_value_bf16_kernel<<<detail::grid_for(n), 256, 0, stream>>>(x, n, value);
  PEFT_CUDA_CHECK_LAUNCH("fill_value_bf16_kernel");
}

}  // namespace peft::cuda
