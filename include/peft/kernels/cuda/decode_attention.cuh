// Attention of new queries over a KV cache: query t (of n) sits at position past + t and sees the
// cached keys 0 .. past + t (causal with an offset; GQA: query head h reads kv head
// h / (heads / kv_heads)). The varlen kernels of attention.cuh assume every query's keys are in
// the same packed batch starting at position 0; here the keys live in the cache.
//
// One kernel (flash-decoding, with the merge folded in). A block owns one kv head, all the query
// heads that share it (GQA packed: up to 8 per block, so each key and value row is read once for
// the group, not once per query head) and a contiguous range of keys (a split): at n = 1 there
// are only kv_heads groups, far too few blocks to pull a long cache at bandwidth. Each warp walks
// keys with an online softmax per head, the block merges its warps and leaves an unnormalised
// partial (max, sum, output); the last split block of a (query, kv head) to finish merges the
// splits in split order (grid_sync.cuh) and writes the output. The split count follows the
// length (at least 32 keys a split, at most the grid's), so a short cache costs a few blocks and
// no merge, and `past` is read from DEVICE memory: the grid depends only on n, so a captured CUDA
// graph replays unchanged at every position.
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
#include "peft/kernels/cuda/grid_sync.cuh"
#include "peft/kernels/cuda/pdl.cuh"
#include "peft/kernels/cuda/rms_norm.cuh"

namespace peft::cuda {

struct DecodeAttentionDims {
  int heads, kv_heads, head_dim;
};

namespace detail {

constexpr int kDecodeAttnWarps = 8;
constexpr int kDecodeMaxDim = 128;
constexpr int kDecodeDimsPerLane = kDecodeMaxDim / 32;
constexpr int kDecodeMaxGroup = 8;      // query heads a block serves (more: another block reads the kv head)
constexpr int kDecodeMinSplitKeys = 32;  // a split shorter than this costs more in merging than it saves
constexpr int kDecodeMaxSplits = 32;     // decode_attention_splits(n) <= this

inline int decode_group_blocks(DecodeAttentionDims d) {
  return (d.heads / d.kv_heads + kDecodeMaxGroup - 1) / kDecodeMaxGroup;
}

// grid (splits, kv_heads * group_blocks, n). partial_o [n, heads, splits, D], partial_ml
// [n, heads, splits, 2], counters [n, kv_heads * group_blocks] (zero between launches).
__global__ void __launch_bounds__(32 * kDecodeAttnWarps) decode_attention_kernel(
    bf16* __restrict__ out, float* __restrict__ partial_o, float* __restrict__ partial_ml, unsigned* counters,
    const bf16* __restrict__ q, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache,
    const std::int32_t* __restrict__ past_ptr, int heads, int kv_heads, int head_dim, float scale) {
  __shared__ float sm_m[kDecodeAttnWarps][kDecodeMaxGroup], sm_l[kDecodeAttnWarps][kDecodeMaxGroup];
  __shared__ float sm_o[kDecodeAttnWarps][kDecodeMaxGroup][kDecodeMaxDim];
  __shared__ float sm_f[kDecodeMaxGroup][kDecodeMaxSplits];  // the merge: each split's max, then weight
  __shared__ float sm_pl[kDecodeMaxGroup][kDecodeMaxSplits];  // and its sum
  __shared__ float sm_sum[kDecodeMaxGroup];
  __shared__ int sm_last;
  pdl_wait();
  pdl_release();
  const int split = blockIdx.x, splits = gridDim.x, t = blockIdx.z;
  const int group = heads / kv_heads, group_blocks = (group + kDecodeMaxGroup - 1) / kDecodeMaxGroup;
  const int kvh = blockIdx.y / group_blocks, g0 = (blockIdx.y % group_blocks) * kDecodeMaxGroup;
  const int G = min(kDecodeMaxGroup, group - g0);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int len = *past_ptr + t + 1;  // keys this query sees
  const int active = min(splits, (len + kDecodeMinSplitKeys - 1) / kDecodeMinSplitKeys);
  if (split >= active) return;
  const int chunk = (len + active - 1) / active;
  const int k0 = split * chunk, k1 = min(len, k0 + chunk);
  const int kv_dim = kv_heads * head_dim;
  const int h0 = kvh * group + g0;  // first query head of this block

  float qr[kDecodeMaxGroup][kDecodeDimsPerLane], acc[kDecodeMaxGroup][kDecodeDimsPerLane];
  float m[kDecodeMaxGroup], l[kDecodeMaxGroup];
#pragma unroll
  for (int g = 0; g < kDecodeMaxGroup; ++g) {
    const bf16* qrow = q + (static_cast<long long>(t) * heads + h0 + g) * head_dim;
#pragma unroll
    for (int j = 0; j < kDecodeDimsPerLane; ++j) {
      const int d = lane + 32 * j;
      qr[g][j] = g < G && d < head_dim ? to_float(qrow[d]) * scale : 0.0f;
      acc[g][j] = 0.0f;
    }
    m[g] = -INFINITY;
    l[g] = 0.0f;
  }
  float kf[kDecodeDimsPerLane], vf[kDecodeDimsPerLane];
  auto load_kv = [&](int key, float* kd, float* vd) {  // key's row of this kv head (zeros past k1)
    const bf16* kr = k_cache + static_cast<long long>(key) * kv_dim + kvh * head_dim;
    const bf16* vr = v_cache + static_cast<long long>(key) * kv_dim + kvh * head_dim;
#pragma unroll
    for (int j = 0; j < kDecodeDimsPerLane; ++j) {
      const int d = lane + 32 * j;
      kd[j] = key < k1 && d < head_dim ? to_float(kr[d]) : 0.0f;
      vd[j] = key < k1 && d < head_dim ? to_float(vr[d]) : 0.0f;
    }
  };
  load_kv(k0 + warp, kf, vf);
  for (int key = k0 + warp; key < k1; key += kDecodeAttnWarps) {
    float kn[kDecodeDimsPerLane], vn[kDecodeDimsPerLane];  // the next key's rows in flight meanwhile
    load_kv(key + kDecodeAttnWarps, kn, vn);
    // All 8 heads' scores reduced side by side (heads past G have q = 0 and are never written):
    // 8 independent shuffle chains in flight instead of G in sequence, the long context's bound.
#pragma unroll
    for (int g = 0; g < kDecodeMaxGroup; ++g) {
      float s = 0.0f;
#pragma unroll
      for (int j = 0; j < kDecodeDimsPerLane; ++j) s += qr[g][j] * kf[j];
      s = warp_sum(s);
      const float m_new = fmaxf(m[g], s);
      const float corr = expf(m[g] - m_new), p = expf(s - m_new);
      l[g] = l[g] * corr + p;
#pragma unroll
      for (int j = 0; j < kDecodeDimsPerLane; ++j) acc[g][j] = acc[g][j] * corr + p * vf[j];
      m[g] = m_new;
    }
#pragma unroll
    for (int j = 0; j < kDecodeDimsPerLane; ++j) {
      kf[j] = kn[j];
      vf[j] = vn[j];
    }
  }
#pragma unroll
  for (int g = 0; g < kDecodeMaxGroup; ++g) {
    if (lane == 0) {
      sm_m[warp][g] = m[g];
      sm_l[warp][g] = l[g];
    }
#pragma unroll
    for (int j = 0; j < kDecodeDimsPerLane; ++j)
      if (lane + 32 * j < head_dim) sm_o[warp][g][lane + 32 * j] = acc[g][j];
  }
  __syncthreads();
  // This block's (head, feature) values, merged over its warps.
  for (int e = threadIdx.x; e < G * head_dim; e += blockDim.x) {
    const int g = e / head_dim, d = e % head_dim;
    float bm = -INFINITY;
    for (int w = 0; w < kDecodeAttnWarps; ++w)
      if (sm_l[w][g] > 0.0f) bm = fmaxf(bm, sm_m[w][g]);
    float o = 0.0f, bl = 0.0f;
    for (int w = 0; w < kDecodeAttnWarps; ++w)
      if (sm_l[w][g] > 0.0f) {
        const float f = expf(sm_m[w][g] - bm);
        o += sm_o[w][g][d] * f;
        bl += sm_l[w][g] * f;
      }
    const long long head = static_cast<long long>(t) * heads + h0 + g;
    if (active == 1) {  // the only split: the output directly
      out[head * head_dim + d] = to_bf16(o / bl);
      continue;
    }
    const long long slot = head * splits + split;
    partial_o[slot * head_dim + d] = o;
    if (d == 0) {
      partial_ml[2 * slot] = bm;
      partial_ml[2 * slot + 1] = bl;
    }
  }
  if (active == 1) return;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0)
    sm_last = arrive_last(counters + static_cast<long long>(t) * gridDim.y + blockIdx.y, static_cast<unsigned>(active));
  __syncthreads();
  if (!sm_last) return;
  __threadfence();
  // Merge the splits in split order: each split's weight exp(m_s - max) once per (head, split),
  // then every (head, feature) sums its splits' outputs with the loads in flight together.
  for (int e = threadIdx.x; e < G * active; e += blockDim.x) {
    const int g = e / active, sp = e % active;
    const long long slot = (static_cast<long long>(t) * heads + h0 + g) * splits + sp;
    sm_pl[g][sp] = __ldcg(partial_ml + 2 * slot + 1);
    sm_f[g][sp] = sm_pl[g][sp] > 0.0f ? __ldcg(partial_ml + 2 * slot) : -INFINITY;
  }
  __syncthreads();
  if (threadIdx.x < G) {
    const int g = threadIdx.x;
    float mm = -INFINITY;
    for (int sp = 0; sp < active; ++sp) mm = fmaxf(mm, sm_f[g][sp]);
    float ll = 0.0f;
    for (int sp = 0; sp < active; ++sp) {
      const float f = sm_f[g][sp] == -INFINITY ? 0.0f : expf(sm_f[g][sp] - mm);
      ll += sm_pl[g][sp] * f;
      sm_f[g][sp] = f;
    }
    sm_sum[g] = ll;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < G * head_dim; e += blockDim.x) {
    const int g = e / head_dim, d = e % head_dim;
    const long long head = static_cast<long long>(t) * heads + h0 + g, base = head * splits;
    float v[kDecodeMaxSplits];  // every split's partial in flight at once: one round trip, not one per 8
#pragma unroll
    for (int sp = 0; sp < kDecodeMaxSplits; ++sp)
      v[sp] = sp < active ? __ldcg(partial_o + (base + sp) * head_dim + d) : 0.0f;
    float o = 0.0f;
#pragma unroll
    for (int sp = 0; sp < kDecodeMaxSplits; ++sp)
      if (sp < active) o += v[sp] * sm_f[g][sp];
    out[head * head_dim + d] = to_bf16(o / sm_sum[g]);
  }
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// Splits per query: enough blocks to fill the GPU at n = 1 over a long cache, none at n >= 32 (the
// query rows are enough there). decode_attention_scratch_floats sizes the partials for n queries,
// decode_attention_counters the merge counters (zero when first used; the kernel leaves them so).
inline int decode_attention_splits(int n) { return n >= 32 ? 1 : 32 / n; }
inline std::size_t decode_attention_scratch_floats(int n, DecodeAttentionDims d) {
  return static_cast<std::size_t>(n) * decode_attention_splits(n) * d.heads * (d.head_dim + 2);
}
inline std::size_t decode_attention_counters(int n, DecodeAttentionDims d) {
  return static_cast<std::size_t>(n) * d.kv_heads * detail::decode_group_blocks(d);
}

// out [n, heads * D]; scratch: decode_attention_scratch_floats(n, d) floats; counters:
// decode_attention_counters(n, d), zero; past: device int32.
inline void decode_attention(bf16* out, float* scratch, unsigned* counters, const bf16* q, const bf16* k_cache,
                             const bf16* v_cache, const std::int32_t* past, int n, DecodeAttentionDims d,
                             cudaStream_t stream) {
  if (d.head_dim <= 0 || d.head_dim > detail::kDecodeMaxDim || d.head_dim % 2 != 0 || d.kv_heads <= 0 ||
      d.heads % d.kv_heads != 0)
    throw Error("decode_attention: head_dim " + std::to_string(d.head_dim) + " (even, at most 128), heads " +
                std::to_string(d.heads) + ", kv_heads " + std::to_string(d.kv_heads));
  if (n == 0) return;
  const int splits = decode_attention_splits(n);
  const std::size_t partials = static_cast<std::size_t>(n) * splits * d.heads;
  float* partial_o = scratch;
  float* partial_ml = scratch + partials * d.head_dim;
  launch_pdl("decode_attention_kernel", detail::decode_attention_kernel,
             dim3(splits, d.kv_heads * detail::decode_group_blocks(d), n), dim3(32 * detail::kDecodeAttnWarps), 0,
             stream, out, partial_o, partial_ml, counters, q, k_cache, v_cache, past, d.heads, d.kv_heads, d.head_dim,
             1.0f / sqrtf(static_cast<float>(d.head_dim)));
}

}  // namespace peft::cuda
