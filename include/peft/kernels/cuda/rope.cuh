// Rotary position embedding in HF's rotate_half layout, as kernels/cpu/rope.hpp: feature i of a
// head pairs with feature i + d/2, rotated by angle pos * inv_freq[i], all in fp32, and the
// result is rounded to bf16 once. Positions come per token, so packed samples restart at 0.
//
// The cos/sin table ([tokens, d/2] fp32 each) is built once per micro-batch from the device
// positions and shared by q and k of every layer; inv_freq is computed on the host with the same
// fp32 std::pow as the CPU backend, so both backends rotate by the same angles. The backward is
// the same kernel with the rotation transposed (a rotation's inverse), applied to the gradient.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::cuda {

struct RopeTable {
  float* cos = nullptr;  // [tokens, half]
  float* sin = nullptr;
  int tokens = 0, half = 0;
};

namespace detail {

__global__ void rope_table_kernel(float* __restrict__ cos_out, float* __restrict__ sin_out,
                                  const std::int32_t* __restrict__ positions, const float* __restrict__ inv_freq,
                                  int tokens, int half) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= tokens * half) return;
  const int t = idx / half, i = idx % half;
  const float angle = static_cast<float>(positions[t]) * inv_freq[i];
  cos_out[idx] = cosf(angle);
  sin_out[idx] = sinf(angle);
}

// Two tensors rotated by one launch (q and k of a layer: one launch and one wave tail instead of
// two): item idx < n1 is x1's, the rest x2's.
struct RopePair {
  bf16* x1;
  int heads1;
  bf16* x2;  // or null
  int heads2;
  __device__ bf16* pick(long long& idx, long long n1, int& heads) const {
    if (idx < n1) {
      heads = heads1;
      return x1;
    }
    idx -= n1;
    heads = heads2;
    return x2;
  }
};

// One thread per (token, head, 8 pairs): reads 8 features of each half, writes both back.
__global__ void rope_kernel(RopePair xs, const float* __restrict__ cos_t, const float* __restrict__ sin_t, int tokens,
                            int head_dim, float sign) {
  const int half = head_dim / 2, packs = half / 8;
  long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const long long n1 = static_cast<long long>(tokens) * xs.heads1 * packs;
  if (idx >= n1 + static_cast<long long>(tokens) * xs.heads2 * packs) return;
  int heads = 0;
  bf16* x = xs.pick(idx, n1, heads);
  const int p = static_cast<int>(idx % packs);
  const long long th = idx / packs;  // token * heads + head
  const int t = static_cast<int>(th / heads);
  bf16* v = x + th * head_dim + p * 8;
  const Bf16x8 a = load128(v), b = load128(v + half);
  const float* c = cos_t + static_cast<long long>(t) * half + p * 8;
  const float* s = sin_t + static_cast<long long>(t) * half + p * 8;
  Bf16x8 ra, rb;
  for (int i = 0; i < 8; ++i) {
    const float ci = c[i], si = sign * s[i], ai = to_float(a[i]), bi = to_float(b[i]);
    ra[i] = to_bf16(ai * ci - bi * si);
    rb[i] = to_bf16(bi * ci + ai * si);
  }
  store128(v, ra);
  store128(v + half, rb);
}

// One thread per (token, head, pair i < d/2): any even head_dim.
__global__ void small_rope_kernel(RopePair xs, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                  int tokens, int head_dim, float sign) {
  const int half = head_dim / 2;
  long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const long long n1 = static_cast<long long>(tokens) * xs.heads1 * half;
  if (idx >= n1 + static_cast<long long>(tokens) * xs.heads2 * half) return;
  int heads = 0;
  bf16* x = xs.pick(idx, n1, heads);
  const int i = static_cast<int>(idx % half);
  const long long th = idx / half;
  const int t = static_cast<int>(th / heads);
  bf16* p = x + th * head_dim;
  const float c = cos_t[static_cast<long long>(t) * half + i], s = sign * sin_t[static_cast<long long>(t) * half + i];
  const float a = to_float(p[i]), b = to_float(p[i + half]);
  p[i] = to_bf16(a * c - b * s);
  p[i + half] = to_bf16(b * c + a * s);
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// theta^(-2i/d) for i < d/2, in fp32 exactly as kernels/cpu/rope.hpp computes it.
inline std::vector<float> rope_inv_freq(int head_dim, double theta) {
  std::vector<float> f(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i)
    f[i] = 1.0f / std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / static_cast<float>(head_dim));
  return f;
}

// table.cos / table.sin must hold tokens * half floats; inv_freq: [half] on the device.
inline void rope_build_table(RopeTable& table, const std::int32_t* positions, const float* inv_freq, int tokens,
                             int head_dim, cudaStream_t stream) {
  table.tokens = tokens;
  table.half = head_dim / 2;
  const int n = tokens * table.half;
  if (n == 0) return;
  detail::rope_table_kernel<<<(n + 255) / 256, 256, 0, stream>>>(table.cos, table.sin, positions, inv_freq, tokens,
                                                                  table.half);
  PEFT_CUDA_CHECK_LAUNCH("rope_table_kernel");
}

// In place on x [tokens, heads * head_dim] bf16, and (when x2 is given) on x2 [tokens, heads2 *
// head_dim] in the same launch (a layer's q and k). inverse = true applies the transposed
// rotation: the backward, on the gradient of the rotated tensor. A head_dim that is not a multiple
// of 16 (only tiny test models have one) takes the one-pair-per-thread kernel.
inline void rope_apply(bf16* x, const RopeTable& table, int heads, int head_dim, cudaStream_t stream,
                       bool inverse = false, bf16* x2 = nullptr, int heads2 = 0) {
  if (head_dim % 2 != 0 || head_dim / 2 != table.half)
    throw Error("rope_apply: head_dim " + std::to_string(head_dim) + " must be even and match the table (" +
                std::to_string(2 * table.half) + ")");
  if (x2 && heads2 <= 0) throw Error("rope_apply: a second tensor needs its head count (got " + std::to_string(heads2) + ")");
  const float sign = inverse ? -1.0f : 1.0f;
  const detail::RopePair xs{x, heads, x2, x2 ? heads2 : 0};
  const int per_head = head_dim % 16 != 0 ? head_dim / 2 : head_dim / 16;  // threads a (token, head)
  const long long n = static_cast<long long>(table.tokens) * (xs.heads1 + xs.heads2) * per_head;
  if (n == 0) return;
  const auto blocks = static_cast<unsigned>((n + 255) / 256);
  if (head_dim % 16 != 0) {
    detail::small_rope_kernel<<<blocks, 256, 0, stream>>>(xs, table.cos, table.sin, table.tokens, head_dim, sign);
    PEFT_CUDA_CHECK_LAUNCH("small_rope_kernel");
  } else {
    detail::rope_kernel<<<blocks, 256, 0, stream>>>(xs, table.cos, table.sin, table.tokens, head_dim, sign);
    PEFT_CUDA_CHECK_LAUNCH("rope_kernel");
  }
}

}  // namespace peft::cuda
