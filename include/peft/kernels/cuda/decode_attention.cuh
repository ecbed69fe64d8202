// Attention of new queries over a KV cache: query t (of n) sits at position past + t and sees the
// cached keys 0 .. past + t (causal with an offset; GQA: query head h reads kv head
// h / (heads / kv_heads)). The varlen kernels of attention.cuh assume every query's keys are in
// the same packed batch starting at position 0; here the keys live in the cache.
//
// Why split over keys (flash-decoding): at n = 1 there are only `heads` query rows, far too few
// blocks to pull the cache at bandwidth. Each (split, head, query) block walks a contiguous range
// of keys with an online softmax (per warp, then merged across the block) and leaves an
// unnormalised partial (max, sum, output); a second small kernel merges the splits. `past` is read
// from DEVICE memory, and the key ranges are derived from it inside the kernel: the grid depends
// only on n and the split count, so a captured CUDA graph replays unchanged at every position.
//
// Layout: q, out [n, heads * D] bf16; k_cache, v_cache [capacity, kv_heads * D] bf16 (keys after
// RoPE); D even, at most 128. Scores, statistics and accumulators are fp32; the output is rounded
// to bf16 once.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/pdl.cuh"
#include "peft/kernels/cuda/rms_norm.cuh"

namespace peft::cuda {

struct DecodeAttentionDims {
  int heads, kv_heads, head_dim;
};

namespace detail {

constexpr int kDecodeAttnWarps = 4;
constexpr int kDecodeMaxDim = 128;
constexpr int kDecodeDimsPerLane = kDecodeMaxDim / 32;

// grid (splits, heads, n); partial_o [n, heads, splits, D], partial_ml [n, heads, splits, 2].
__global__ void __launch_bounds__(32 * kDecodeAttnWarps) decode_attention_partial_kernel(
    float* __restrict__ partial_o, float* __restrict__ partial_ml, const bf16* __restrict__ q,
    const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache, const std::int32_t* __restrict__ past_ptr,
    int heads, int kv_heads, int head_dim, float scale) {
  __shared__ float sm_m[kDecodeAttnWarps], sm_l[kDecodeAttnWarps];
  __shared__ float sm_o[kDecodeAttnWarps][kDecodeMaxDim];
  pdl_wait();
  pdl_release();
  const int split = blockIdx.x, h = blockIdx.y, t = blockIdx.z, splits = gridDim.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int len = *past_ptr + t + 1;  // keys this query sees
  const int chunk = (len + splits - 1) / splits;
  const int k0 = split * chunk, k1 = min(len, k0 + chunk);
  const int kv_dim = kv_heads * head_dim;
  const int kvh = h / (heads / kv_heads);

  float qr[kDecodeDimsPerLane], acc[kDecodeDimsPerLane];
  const bf16* qrow = q + (static_cast<long long>(t) * heads + h) * head_dim;
#pragma unroll
  for (int j = 0; j < kDecodeDimsPerLane; ++j) {
    const int d = lane + 32 * j;
    qr[j] = d < head_dim ? to_float(qrow[d]) * scale : 0.0f;
    acc[j] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int key = k0 + warp; key < k1; key += kDecodeAttnWarps) {
    const bf16* kr = k_cache + static_cast<long long>(key) * kv_dim + kvh * head_dim;
    const bf16* vr = v_cache + static_cast<long long>(key) * kv_dim + kvh * head_dim;
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < kDecodeDimsPerLane; ++j) {
      const int d = lane + 32 * j;
      if (d < head_dim) s += qr[j] * to_float(kr[d]);
    }
    s = warp_sum(s);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new), p = expf(s - m_new);
    l = l * corr + p;
#pragma unroll
    for (int j = 0; j < kDecodeDimsPerLane; ++j) {
      const int d = lane + 32 * j;
      acc[j] = acc[j] * corr + (d < head_dim ? p * to_float(vr[d]) : 0.0f);
    }
    m = m_new;
  }
  if (lane == 0) {
    sm_m[warp] = m;
    sm_l[warp] = l;
  }
#pragma unroll
  for (int j = 0; j < kDecodeDimsPerLane; ++j)
    if (lane + 32 * j < head_dim) sm_o[warp][lane + 32 * j] = acc[j];
  __syncthreads();
  float bm = -INFINITY;
  for (int w = 0; w < kDecodeAttnWarps; ++w) bm = fmaxf(bm, sm_m[w]);
  const long long slot = (static_cast<long long>(t) * heads + h) * splits + split;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kDecodeAttnWarps; ++w)
      if (sm_l[w] > 0.0f) o += sm_o[w][d] * expf(sm_m[w] - bm);
    partial_o[slot * head_dim + d] = o;
  }
  if (threadIdx.x == 0) {
    float bl = 0.0f;
    for (int w = 0; w < kDecodeAttnWarps; ++w)
      if (sm_l[w] > 0.0f) bl += sm_l[w] * expf(sm_m[w] - bm);
    partial_ml[2 * slot] = bm;
    partial_ml[2 * slot + 1] = bl;
  }
}

// grid (heads, n), one thread per feature: merges the splits of one (query, head).
__global__ void decode_attention_merge_kernel(bf16* __restrict__ out, const float* __restrict__ partial_o,
                                              const float* __restrict__ partial_ml, int heads, int head_dim,
                                              int splits) {
  pdl_wait();
  pdl_release();
  const int h = blockIdx.x, t = blockIdx.y, d = threadIdx.x;
  if (d >= head_dim) return;
  const long long base = (static_cast<long long>(t) * heads + h) * splits;
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s)
    if (partial_ml[2 * (base + s) + 1] > 0.0f) m = fmaxf(m, partial_ml[2 * (base + s)]);
  float l = 0.0f, o = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ls = partial_ml[2 * (base + s) + 1];
    if (ls <= 0.0f) continue;
    const float f = expf(partial_ml[2 * (base + s)] - m);
    l += ls * f;
    o += partial_o[(base + s) * head_dim + d] * f;
  }
  out[(static_cast<long long>(t) * heads + h) * head_dim + d] = to_bf16(o / l);
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// Splits per query: enough blocks to fill the GPU at n = 1, none at n >= 32 (the query rows are
// enough there). decode_attention_scratch_floats sizes the partials for n queries.
inline int decode_attention_splits(int n) { return n >= 32 ? 1 : 32 / n; }
inline std::size_t decode_attention_scratch_floats(int n, DecodeAttentionDims d) {
  return static_cast<std::size_t>(n) * decode_attention_splits(n) * d.heads * (d.head_dim + 2);
}

// out [n, heads * D]; scratch: decode_attention_scratch_floats(n, d) floats; past: device int32.
inline void decode_attention(bf16* out, float* scratch, const bf16* q, const bf16* k_cache, const bf16* v_cache,
                             const std::int32_t* past, int n, DecodeAttentionDims d, cudaStream_t stream) {
  if (d.head_dim <= 0 || d.head_dim > detail::kDecodeMaxDim || d.head_dim % 2 != 0 || d.kv_heads <= 0 ||
      d.heads % d.kv_heads != 0)
    throw Error("decode_attention: head_dim " + std::to_string(d.head_dim) + " (even, at most 128), heads " +
                std::to_string(d.heads) + ", kv_heads " + std::to_string(d.kv_heads));
  if (n == 0) return;
  const int splits = decode_attention_splits(n);
  float* partial_o = scratch;
  float* partial_ml = scratch + static_cast<std::size_t>(n) * splits * d.heads * d.head_dim;
  launch_pdl("decode_attention_partial_kernel", detail::decode_attention_partial_kernel, dim3(splits, d.heads, n),
             dim3(32 * detail::kDecodeAttnWarps), 0, stream, partial_o, partial_ml, q, k_cache, v_cache, past, d.heads,
             d.kv_heads, d.head_dim, 1.0f / sqrtf(static_cast<float>(d.head_dim)));
  launch_pdl("decode_attention_merge_kernel", detail::decode_attention_merge_kernel, dim3(d.heads, n),
             dim3(detail::kDecodeMaxDim), 0, stream, out, static_cast<const float*>(partial_o),
             static_cast<const float*>(partial_ml), d.heads, d.head_dim, splits);
}

}  // namespace peft::cuda
