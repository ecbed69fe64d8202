// Writing new tokens into a KV cache: positions from the cache's device length, RoPE on q (in
// place) and k, and the rotated k plus v stored at cache rows past .. past + n - 1.
//
// Why one kernel for rope(q), rope(k) and the append: for a few tokens each is a few hundred bytes
// of work, so three launches per layer would cost more than the data. The prefill uses it; the
// one-token decode step goes further and does the same rotation in the q/k/v projection's
// epilogue (gemv.cuh's rope / at_row segments). The rotation is rope.cuh's
// (the same cos/sin table, built from device positions, and the same fp32 formula rounded once to
// bf16), so cached keys are bit-identical to the training forward's rotated keys. `past` is read
// from device memory so a captured decode graph appends at the right row on every replay.
#pragma once
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/pdl.cuh"
#include "peft/kernels/cuda/rope.cuh"

namespace peft::cuda {
namespace detail {

__global__ void positions_after_kernel(std::int32_t* __restrict__ positions, const std::int32_t* __restrict__ past,
                                       int n) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < n) positions[t] = *past + t;
}

// One thread per (token, rotated pair of a q or k head) or (token, v feature).
__global__ void rope_append_kernel(bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                                   bf16* __restrict__ k_cache, bf16* __restrict__ v_cache,
                                   const std::int32_t* __restrict__ past, const float* __restrict__ cos_t,
                                   const float* __restrict__ sin_t, int n, int heads, int kv_heads, int head_dim) {
  pdl_wait();
  pdl_release();
  const int half = head_dim / 2, kv_dim = kv_heads * head_dim;
  const int per = (heads + kv_heads) * half + kv_dim;
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<long long>(n) * per) return;
  const int t = static_cast<int>(idx / per), j = static_cast<int>(idx % per);
  const long long row = *past + t;
  if (j >= (heads + kv_heads) * half) {
    const int f = j - (heads + kv_heads) * half;
    v_cache[row * kv_dim + f] = v[static_cast<long long>(t) * kv_dim + f];
    return;
  }
  const bool is_q = j < heads * half;
  const int jj = is_q ? j : j - heads * half;
  const int h = jj / half, i = jj % half;
  const float c = cos_t[static_cast<long long>(t) * half + i], s = sin_t[static_cast<long long>(t) * half + i];
  const bf16* src = is_q ? q + (static_cast<long long>(t) * heads + h) * head_dim
                         : k + static_cast<long long>(t) * kv_dim + h * head_dim;
  const float a = to_float(src[i]), b = to_float(src[i + half]);
  bf16* dst = is_q ? q + (static_cast<long long>(t) * heads + h) * head_dim : k_cache + row * kv_dim + h * head_dim;
  dst[i] = to_bf16(a * c - b * s);
  dst[i + half] = to_bf16(b * c + a * s);
}

}  // namespace detail

// positions[t] = *past + t, then the cos/sin table for them (rope.cuh), for n new tokens.
inline void rope_table_after(RopeTable& table, std::int32_t* positions, const std::int32_t* past,
                             const float* inv_freq, int n, int head_dim, cudaStream_t stream) {
  if (n == 0) return;
  detail::positions_after_kernel<<<(n + 255) / 256, 256, 0, stream>>>(positions, past, n);
  PEFT_CUDA_CHECK_LAUNCH("positions_after_kernel");
  rope_build_table(table, positions, inv_freq, n, head_dim, stream);
}

// q [n, heads * D] rotated in place; k, v [n, kv_heads * D] (k unrotated) go to cache rows
// *past .. *past + n - 1 (k rotated). table: rope_table_after's for the same n.
inline void rope_append_kv(bf16* q, const bf16* k, const bf16* v, bf16* k_cache, bf16* v_cache,
                           const std::int32_t* past, const RopeTable& table, int n, int heads, int kv_heads,
                           int head_dim, cudaStream_t stream) {
  if (head_dim % 2 != 0 || head_dim / 2 != table.half || table.tokens < n)
    throw Error("rope_append_kv: head_dim " + std::to_string(head_dim) + " must be even and match the table");
  const long long total = static_cast<long long>(n) * ((heads + kv_heads) * (head_dim / 2) + kv_heads * head_dim);
  if (total == 0) return;
  launch_pdl("rope_append_kernel", detail::rope_append_kernel, dim3(static_cast<unsigned>((total + 255) / 256)),
             dim3(256), 0, stream, q, k, v, k_cache, v_cache, past, static_cast<const float*>(table.cos),
             static_cast<const float*>(table.sin), n, heads, kv_heads, head_dim);
}

}  // namespace peft::cuda
