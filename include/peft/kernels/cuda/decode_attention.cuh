// Attention of new queries over a KV cache: query t (of n) sits at position past + t and sees the
// cached keys 0 .. past + t (causal with an offset; GQA: query head h reads kv head
// h / (heads / kv_heads)). The varlen kernels of attention.cuh assume every query's keys are in
// the same packed batch starting at position 0; here the keys live in the cache.
//
// One kernel (flash-decoding, with the merge folded in). A block owns one kv head, all the query
// heads that share it (GQA packed: up to 8 per block, so each key and value row is read once for
// the group, not once per query head) and a contiguous range of keys (a split): at n = 1 there
// are only kv_heads groups, far too few blocks to pull a long cache at bandwidth. The last split
// block of a (query, kv head) to finish merges the splits in split order (grid_sync.cuh) and
// writes the output. The split count follows the length (one split up to twice
// decode_attention_split_keys(), else at least that many keys a split, at most the grid's), so a
// short cache costs a block per kv head and no merge, and `past` is read from DEVICE memory: the
// grid depends only on n, so a captured CUDA graph replays unchanged.
//
// Why this shape: at one token the kernel moves well under a megabyte, so its time is latency:
// the round trips to memory, and the dependent steps of the arithmetic. A block walks its keys
// in tiles of 64, and for a tile every thread issues all its K and V loads at once (one round
// trip a tile; the first tiles were prefetched into L2 before the wait on the previous kernel,
// which wrote only the newest row). A half-warp owns a key (a lane holds 8 of its features and q
// of all 8 heads in registers), and the 8 heads' partial dot products are reduced across the 16
// lanes in one butterfly that halves the values at each step (8 shuffles a key for all heads,
// where a warp-wide reduction per head took 40), leaving head c / 2 on lane c. The softmax of a
// tile is a warp per head over the tile's scores in shared memory; P V is again a half-warp per
// key, each lane accumulating its 8 features for the 8 heads in registers, rescaled per tile
// (online softmax), and reduced across the block once at the end.
//
// Layout: q, out [n, heads * D] bf16; k_cache, v_cache [capacity, kv_heads * D] bf16 (keys after
// RoPE); D a multiple of 8, at most 128. Scores, statistics and accumulators are fp32; the output
// is rounded to bf16 once.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"
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
constexpr int kDecodeMaxGroup = 8;       // query heads a block serves (more: another block reads the kv head)
constexpr int kDecodeKeysPerPass = 2 * kDecodeAttnWarps;  // a half-warp a key
constexpr int kDecodeTile = 64;          // keys a block holds at once (scores in shared memory)
constexpr int kDecodeTileLoads = kDecodeTile / kDecodeKeysPerPass;  // K and V rows a thread loads a tile
constexpr int kDecodeMaxSplits = 32;     // decode_attention_splits(n) <= this

inline int decode_group_blocks(DecodeAttentionDims d) {
  return (d.heads / d.kv_heads + kDecodeMaxGroup - 1) / kDecodeMaxGroup;
}

__device__ inline float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// The 8 heads' partial dot products s[] of a half-warp summed over its 16 lanes: the lane with
// feature chunk c returns head c / 2's score. Each step sends half of what is left to the partner
// and keeps the half its bit selects (4 + 2 + 1 + 1 shuffles).
__device__ __forceinline__ float butterfly_heads(const float (&s)[kDecodeMaxGroup], int c) {
  float r4[4], r2[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const bool hi = c & 8;
    const float send = hi ? s[i] : s[i + 4], keep = hi ? s[i + 4] : s[i];
    r4[i] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const bool hi = c & 4;
    const float send = hi ? r4[i] : r4[i + 2], keep = hi ? r4[i + 2] : r4[i];
    r2[i] = keep + __shfl_xor_sync(0xffffffffu, send, 4);
  }
  const bool hi = c & 2;
  float r = (hi ? r2[1] : r2[0]) + __shfl_xor_sync(0xffffffffu, hi ? r2[0] : r2[1], 2);
  return r + __shfl_xor_sync(0xffffffffu, r, 1);
}

// grid (splits, kv_heads * group_blocks, n). partial_o [n, heads, splits, D], partial_ml
// [n, heads, splits, 2], counters [n, kv_heads * group_blocks] (zero between launches).
__global__ void __launch_bounds__(32 * kDecodeAttnWarps, 1) decode_attention_kernel(
    bf16* __restrict__ out, float* __restrict__ partial_o, float* __restrict__ partial_ml, unsigned* counters,
    const bf16* __restrict__ q, const bf16* __restrict__ k_cache, const bf16* __restrict__ v_cache,
    const std::int32_t* __restrict__ past_ptr, int heads, int kv_heads, int head_dim, float scale, int split_keys) {
  __shared__ __align__(16) float sc[kDecodeTile][kDecodeMaxGroup];  // a tile's scores, then probabilities
  __shared__ __align__(16) float red[kDecodeAttnWarps][kDecodeMaxGroup][kDecodeMaxDim];  // the warps' P V
  __shared__ float sm_m[kDecodeMaxGroup], sm_l[kDecodeMaxGroup], sm_corr[kDecodeMaxGroup];
  __shared__ float sm_f[kDecodeMaxGroup][kDecodeMaxSplits];   // the merge: each split's max, then weight
  __shared__ float sm_pl[kDecodeMaxGroup][kDecodeMaxSplits];  // and its sum
  __shared__ float sm_sum[kDecodeMaxGroup];
  __shared__ int sm_last;
  const int split = blockIdx.x, splits = gridDim.x, t = blockIdx.z;
  const int group = heads / kv_heads, group_blocks = (group + kDecodeMaxGroup - 1) / kDecodeMaxGroup;
  const int kvh = blockIdx.y / group_blocks, g0 = (blockIdx.y % group_blocks) * kDecodeMaxGroup;
  const int G = min(kDecodeMaxGroup, group - g0);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, half = lane / 16, c = lane % 16;
  const int d0 = c * 8;  // this lane's 8 features of a row
  const bool has_d = d0 < head_dim;
  // The length comes from the decode state, written by an earlier step (every kernel before the
  // previous one has finished once this one runs: pdl.cuh), so it is read before the wait.
  const int len = *past_ptr + t + 1;  // keys this query sees
  const int active = len <= 2 * split_keys ? 1 : min(splits, (len + split_keys - 1) / split_keys);
  if (split >= active) return;
  const int chunk = (len + active - 1) / active;
  const int k0 = split * chunk, k1 = min(len, k0 + chunk);
  const int kv_dim = kv_heads * head_dim;
  const int h0 = kvh * group + g0;  // first query head of this block
  const long long head_off = static_cast<long long>(kvh) * head_dim;
  auto prefetch_rows = [&](int from, int to) {  // K and V rows [from, to) of this kv head into L2
    const int lines = (head_dim * 2 + 127) / 128;
    for (int i = threadIdx.x; i < (to - from) * lines * 2; i += blockDim.x) {
      const int row = from + i / (2 * lines), line = (i / 2) % lines;
      const bf16* base = (i & 1) ? v_cache : k_cache;
      asm volatile("prefetch.global.L2 [%0];" ::"l"(base + static_cast<long long>(row) * kv_dim + head_off + line * 64));
    }
  };
  prefetch_rows(k0, min(k1, k0 + 2 * kDecodeTile));  // L2 is coherent: the newest row's write lands there too
  pdl_wait();
  pdl_release();

  float qr[kDecodeMaxGroup][8], acc[kDecodeMaxGroup][8];
#pragma unroll
  for (int g = 0; g < kDecodeMaxGroup; ++g) {
    Bf16x8 p{};
    if (g < G && has_d) p = load128(q + (static_cast<long long>(t) * heads + h0 + g) * head_dim + d0);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      qr[g][e] = to_float(p[e]) * scale;
      acc[g][e] = 0.0f;
    }
  }
  float m_run = -INFINITY, l_run = 0.0f;  // head `warp`'s running max and sum (warps < G)
  for (int base = k0; base < k1; base += kDecodeTile) {
    Bf16x8 kk[kDecodeTileLoads], vv[kDecodeTileLoads];
#pragma unroll
    for (int it = 0; it < kDecodeTileLoads; ++it) {
      const int key = base + it * kDecodeKeysPerPass + warp * 2 + half;
      const bool ok = key < k1 && has_d;
      const long long at = static_cast<long long>(key) * kv_dim + head_off + d0;
      kk[it] = ok ? load128(k_cache + at) : Bf16x8{};
      vv[it] = ok ? load128(v_cache + at) : Bf16x8{};
    }
    if (base + 2 * kDecodeTile < k1) prefetch_rows(base + 2 * kDecodeTile, min(k1, base + 3 * kDecodeTile));
#pragma unroll
    for (int it = 0; it < kDecodeTileLoads; ++it) {
      float s[kDecodeMaxGroup];
#pragma unroll
      for (int g = 0; g < kDecodeMaxGroup; ++g) {
        float a = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) a += qr[g][e] * to_float(kk[it][e]);
        s[g] = a;
      }
      const float v = butterfly_heads(s, c);
      const int kl = it * kDecodeKeysPerPass + warp * 2 + half;
      if ((c & 1) == 0) sc[kl][c / 2] = base + kl < k1 ? v : -INFINITY;
    }
    __syncthreads();
    if (warp < G) {  // warp g: head g's softmax over the tile, the running statistics rescaled
      static_assert(kDecodeTile == 64, "two scores a lane");
      const float s0 = sc[lane][warp], s1 = sc[lane + 32][warp];
      const float m_new = fmaxf(m_run, warp_max(fmaxf(s0, s1)));  // finite: a tile holds a key
      const float corr = expf(m_run - m_new), p0 = expf(s0 - m_new), p1 = expf(s1 - m_new);
      sc[lane][warp] = p0;
      sc[lane + 32][warp] = p1;
      l_run = l_run * corr + warp_sum(p0 + p1);
      m_run = m_new;
      if (lane == 0) sm_corr[warp] = corr;
    } else if (lane == 0) {
      sm_corr[warp] = 0.0f;
    }
    __syncthreads();
    float corr[kDecodeMaxGroup];
#pragma unroll
    for (int g = 0; g < kDecodeMaxGroup; ++g) corr[g] = sm_corr[g];
#pragma unroll
    for (int g = 0; g < kDecodeMaxGroup; ++g)
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] *= corr[g];
#pragma unroll
    for (int it = 0; it < kDecodeTileLoads; ++it) {
      const int kl = it * kDecodeKeysPerPass + warp * 2 + half;
      const Floatx4 pa = load128(&sc[kl][0]), pb = load128(&sc[kl][4]);
      const float p[kDecodeMaxGroup] = {pa[0], pa[1], pa[2], pa[3], pb[0], pb[1], pb[2], pb[3]};
#pragma unroll
      for (int g = 0; g < kDecodeMaxGroup; ++g)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] += p[g] * to_float(vv[it][e]);
    }
    __syncthreads();  // the next tile overwrites sc
  }
  if (warp < G && lane == 0) {
    sm_m[warp] = m_run;
    sm_l[warp] = l_run;
  }
  // P V of the block: the two half-warps, then the warps through shared memory.
#pragma unroll
  for (int g = 0; g < kDecodeMaxGroup; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], 16);
  if (half == 0 && has_d)
#pragma unroll
    for (int g = 0; g < kDecodeMaxGroup; ++g) {
      store128(&red[warp][g][d0], Floatx4{{acc[g][0], acc[g][1], acc[g][2], acc[g][3]}});
      store128(&red[warp][g][d0 + 4], Floatx4{{acc[g][4], acc[g][5], acc[g][6], acc[g][7]}});
    }
  __syncthreads();
  for (int e = threadIdx.x; e < G * head_dim; e += blockDim.x) {
    const int g = e / head_dim, d = e % head_dim;
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecodeAttnWarps; ++w) o += red[w][g][d];
    const long long head = static_cast<long long>(t) * heads + h0 + g;
    if (active == 1) {  // the only split: the output directly
      out[head * head_dim + d] = to_bf16(o / sm_l[g]);
      continue;
    }
    const long long slot = head * splits + split;
    partial_o[slot * head_dim + d] = o;
    if (d == 0) {
      partial_ml[2 * slot] = sm_m[g];
      partial_ml[2 * slot + 1] = sm_l[g];
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
inline int decode_attention_splits(int n) { return n >= 32 ? 1 : detail::kDecodeMaxSplits / n; }
inline std::size_t decode_attention_scratch_floats(int n, DecodeAttentionDims d) {
  return static_cast<std::size_t>(n) * decode_attention_splits(n) * d.heads * (d.head_dim + 2);
}
inline std::size_t decode_attention_counters(int n, DecodeAttentionDims d) {
  return static_cast<std::size_t>(n) * d.kv_heads * detail::decode_group_blocks(d);
}

// The fewest keys a split is given, and half the length up to which a query's keys are one split:
// 128 (two tiles), unless PEFT_DECODE_SPLIT_KEYS says otherwise; a tuning knob that decode_bench
// --kernels also sets between measurements. Read at launch (a captured graph keeps its value).
// Why 128, on an H200 at the 7B's heads (bench/RESULTS.md): 192 keys took 9.6 us as one split and
// 11.5-13.2 us as 2-6 split blocks and their merge; 3072 keys 18.0 us in 24 splits of 128 keys,
// 19.4 in 32 of 96 and 20.3 in 12 of 256.
inline int& decode_attention_split_keys() {
  static int keys = env_tuning_knob("PEFT_DECODE_SPLIT_KEYS", 2 * detail::kDecodeTile);
  return keys;
}

// out [n, heads * D]; scratch: decode_attention_scratch_floats(n, d) floats; counters:
// decode_attention_counters(n, d), zero; past: device int32.
inline void decode_attention(bf16* out, float* scratch, unsigned* counters, const bf16* q, const bf16* k_cache,
                             const bf16* v_cache, const std::int32_t* past, int n, DecodeAttentionDims d,
                             cudaStream_t stream) {
  if (d.head_dim <= 0 || d.head_dim > detail::kDecodeMaxDim || d.head_dim % 8 != 0 || d.kv_heads <= 0 ||
      d.heads % d.kv_heads != 0)
    throw Error("decode_attention: head_dim " + std::to_string(d.head_dim) + " (a multiple of 8, at most 128), heads " +
                std::to_string(d.heads) + ", kv_heads " + std::to_string(d.kv_heads));
  if (n == 0) return;
  const int splits = decode_attention_splits(n);
  const std::size_t partials = static_cast<std::size_t>(n) * splits * d.heads;
  float* partial_o = scratch;
  float* partial_ml = scratch + partials * d.head_dim;
  launch_pdl("decode_attention_kernel", detail::decode_attention_kernel,
             dim3(splits, d.kv_heads * detail::decode_group_blocks(d), n), dim3(32 * detail::kDecodeAttnWarps), 0,
             stream, out, partial_o, partial_ml, counters, q, k_cache, v_cache, past, d.heads, d.kv_heads, d.head_dim,
             1.0f / sqrtf(static_cast<float>(d.head_dim)), decode_attention_split_keys());
}

}  // namespace peft::cuda
