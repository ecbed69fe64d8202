// Causal grouped-query attention over packed variable-length sequences, flash-attention style,
// held to kernels/cpu/attention.hpp: sample s occupies tokens [cu_seqlens[s], cu_seqlens[s+1])
// and attends only to itself; query head h reads kv head h / (heads / kv_heads).
//
// No [seq, seq] matrix ever exists in device memory. The forward walks key tiles with an online
// softmax (running max m and sum l per query row; the output rescaled as m grows) and saves only
// the log-sum-exp per (head, token). The backward recomputes P = exp(S - lse) tile by tile on
// FlashAttention-2's schedule: one block per (key tile, query head), looping over the query tiles
// at or after it; dK and dV accumulate in registers and are written per query head (fp32
// partials, summed over the group by a small kernel: no atomics on dK/dV), dQ accumulates with
// fp32 atomics into a scratch buffer. D = rowsum(dO * O) is precomputed per (head, token), the
// FA2 identity for rowsum(dP * P). Scores, statistics and accumulators stay fp32; P and dS are
// rounded to bf16 as the operands of the second products (as FA2 does).
//
// attention_forward / attention_backward run cuDNN's fused attention where the build has it and
// it serves the shape (attention_cudnn.cuh), else the mma.sync kernels of attention_mma.cuh (why
// they are fast is told there). This file keeps the first tensor-core version, on WMMA 16x16x16
// fragments with each score tile staged in fp32 shared memory (4 warps, 16 rows each, 64 x 64
// tiles), as attention_forward_wmma / attention_backward_wmma: ~4x slower, it is the baseline the
// test times the new kernels against and a second implementation it checks against the CPU.
// attention_simt.cuh keeps the plain-FMA version as the readable reference. Layout: q, out, dq
// [tokens, heads * D]; k, v, dk, dv [tokens, kv_heads * D]; lse [heads, tokens] fp32. D = 64 or 128.
#pragma once
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/attention_cudnn.cuh"
#include "peft/kernels/cuda/attention_mma.cuh"
#include "peft/kernels/cuda/attention_small.cuh"
#include "peft/kernels/cuda/attention_varlen.cuh"
#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"

namespace peft::cuda {

namespace detail {

// ---- backward helpers ------------------------------------------------------------------------

// dvec[h, t] = sum_c dO[t, h, c] * O[t, h, c]: one warp per (token, head).
__global__ void attention_backward_dot_kernel(float* __restrict__ dvec, const bf16* __restrict__ dout,
                                              const bf16* __restrict__ out, int tokens, int heads, int head_dim) {
  const long long warp = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= static_cast<long long>(tokens) * heads) return;
  const long long t = warp / heads;
  const int h = static_cast<int>(warp % heads);
  const long long base = t * heads * head_dim + static_cast<long long>(h) * head_dim;
  float acc = 0.0f;
  for (int c = lane; c < head_dim; c += 32) acc += to_float(dout[base + c]) * to_float(out[base + c]);
  for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  if (lane == 0) dvec[static_cast<long long>(h) * tokens + t] = acc;
}


// dkv[t, g, c] = sum over the group's query heads of part[t, h, c], to bf16.
__global__ void attention_group_sum_kernel(bf16* __restrict__ dkv, const float* __restrict__ part, int tokens,
                                           int heads, int kv_heads, int head_dim) {
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const long long n = static_cast<long long>(tokens) * kv_heads * head_dim;
  if (idx >= n) return;
  const int c = static_cast<int>(idx % head_dim);
  const long long tg = idx / head_dim;
  const int g = static_cast<int>(tg % kv_heads);
  const long long t = tg / kv_heads;
  const int group = heads / kv_heads;
  const float* src = part + t * heads * head_dim + static_cast<long long>(g) * group * head_dim + c;
  float acc = 0.0f;
  for (int i = 0; i < group; ++i) acc += src[static_cast<long long>(i) * head_dim];
  dkv[idx] = to_bf16(acc);
}

__global__ void f32_to_bf16_kernel(bf16* __restrict__ dst, const float* __restrict__ src, long long n) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = to_bf16(src[i]);
}

inline void check_attention(AttentionDims d, const char* who) {
  if ((d.head_dim != 64 && d.head_dim != 128) || d.kv_heads <= 0 || d.heads % d.kv_heads != 0)
    throw Error(std::string(who) + ": head_dim " + std::to_string(d.head_dim) + " (64 or 128 supported), heads " +
                std::to_string(d.heads) + ", kv_heads " + std::to_string(d.kv_heads) +
                " (heads must be a multiple of kv_heads)");
}

inline unsigned blocks_for(long long n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }


template <int D>
void attention_forward_mma(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, AttentionDims d,
                           VarlenBatch b, cudaStream_t stream) {
  constexpr int smem = static_cast<int>(mma_forward_smem<D>);
  PEFT_CUDA_CHECK(
      cudaFuncSetAttribute(attention_forward_mma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid((b.max_seqlen + kFwdM - 1) / kFwdM, d.heads, b.num_seqs);
  attention_forward_mma_kernel<D><<<grid, kFwdThreads, smem, stream>>>(out, lse, q, k, v, b.cu_seqlens, d.heads,
                                                                      d.kv_heads, b.tokens,
                                                                      1.0f / sqrtf(static_cast<float>(D)));
  PEFT_CUDA_CHECK_LAUNCH("attention_forward_mma_kernel");
}

// Two query-tile stages where the device gives a block that much shared memory (sm_80, sm_90),
// one where it does not (sm_86, sm_89 at D = 128, or PEFT_CUDA_PORTABLE=1: device_kernels.cuh).
template <int D, int Stages>
void attention_backward_mma_staged(float* dk_part, float* dv_part, float* dq_accum, const bf16* dout, const bf16* q,
                                   const bf16* k, const bf16* v, const float* lse, const float* dvec, AttentionDims d,
                                   VarlenBatch b, cudaStream_t stream) {
  constexpr int smem = static_cast<int>(mma_backward_smem<D, Stages>);
  PEFT_CUDA_CHECK(cudaFuncSetAttribute(attention_backward_mma_kernel<D, Stages>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid((b.max_seqlen + kBwdTile - 1) / kBwdTile, d.heads, b.num_seqs);
  attention_backward_mma_kernel<D, Stages><<<grid, kBwdThreads, smem, stream>>>(
      dk_part, dv_part, dq_accum, dout, q, k, v, lse, dvec, b.cu_seqlens, d.heads, d.kv_heads, b.tokens,
      1.0f / sqrtf(static_cast<float>(D)), hopper_kernels());
  PEFT_CUDA_CHECK_LAUNCH("attention_backward_mma_kernel");
}
template <int D>
void attention_backward_mma(float* dk_part, float* dv_part, float* dq_accum, const bf16* dout, const bf16* q,
                            const bf16* k, const bf16* v, const float* lse, const float* dvec, AttentionDims d,
                            VarlenBatch b, cudaStream_t stream) {
  if (smem_optin() >= mma_backward_smem<D, 2>)
    attention_backward_mma_staged<D, 2>(dk_part, dv_part, dq_accum, dout, q, k, v, lse, dvec, d, b, stream);
  else
    attention_backward_mma_staged<D, 1>(dk_part, dv_part, dq_accum, dout, q, k, v, lse, dvec, d, b, stream);
}

// The backward around its core kernel: D = rowsum(dO * O), dQ accumulator zeroed, then the core
// (core<64> or core<128>), then dQ to bf16 and the dK / dV partials summed over each group.
template <template <int> class Core>
void attention_backward_with(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out,
                             const bf16* q, const bf16* k, const bf16* v, const float* lse, AttentionDims d,
                             VarlenBatch b, cudaStream_t stream) {
  const long long nq = static_cast<long long>(b.tokens) * d.heads * d.head_dim;
  const long long nk = static_cast<long long>(b.tokens) * d.kv_heads * d.head_dim;
  float *dq_accum = scratch, *dk_part = scratch + nq, *dv_part = scratch + 2 * nq, *dvec = scratch + 3 * nq;
  PEFT_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, nq * sizeof(float), stream));
  attention_backward_dot_kernel<<<blocks_for(static_cast<long long>(b.tokens) * d.heads * 32, 256), 256, 0, stream>>>(
      dvec, dout, out, b.tokens, d.heads, d.head_dim);
  PEFT_CUDA_CHECK_LAUNCH("attention_backward_dot_kernel");
  if (d.head_dim == 64) Core<64>::run(dk_part, dv_part, dq_accum, dout, q, k, v, lse, dvec, d, b, stream);
  else Core<128>::run(dk_part, dv_part, dq_accum, dout, q, k, v, lse, dvec, d, b, stream);
  f32_to_bf16_kernel<<<blocks_for(nq, 256), 256, 0, stream>>>(dq, dq_accum, nq);
  PEFT_CUDA_CHECK_LAUNCH("f32_to_bf16_kernel");
  attention_group_sum_kernel<<<blocks_for(nk, 256), 256, 0, stream>>>(dk, dk_part, b.tokens, d.heads, d.kv_heads,
                                                                     d.head_dim);
  PEFT_CUDA_CHECK_LAUNCH("attention_group_sum_kernel");
  attention_group_sum_kernel<<<blocks_for(nk, 256), 256, 0, stream>>>(dv, dv_part, b.tokens, d.heads, d.kv_heads,
                                                                     d.head_dim);
  PEFT_CUDA_CHECK_LAUNCH("attention_group_sum_kernel");
}
template <int D>
struct MmaBackwardCore {
  static constexpr auto run = attention_backward_mma<D>;
};

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// The fast kernels take head_dim 64 and 128 (every Qwen2.5 size); other head dims (tiny test
// models) run the small-shape kernels of attention_small.cuh under the same contract.
inline bool attention_has_fast_path(int head_dim) { return head_dim == 64 || head_dim == 128; }

// Our kernels alone (the A/B and the test compare them with cuDNN's).
// out: [tokens, heads * D] bf16; lse: [heads, tokens] fp32, kept for the backward.
inline void attention_forward_own(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, AttentionDims d,
                                  VarlenBatch b, cudaStream_t stream) {
  if (!attention_has_fast_path(d.head_dim)) return small_attention_forward(out, lse, q, k, v, d, b, stream);
  detail::check_attention(d, "attention_forward");
  if (b.tokens == 0 || b.num_seqs == 0) return;
  if (d.head_dim == 64) detail::attention_forward_mma<64>(out, lse, q, k, v, d, b, stream);
  else detail::attention_forward_mma<128>(out, lse, q, k, v, d, b, stream);
}

// dq, dk, dv overwritten (bf16); out and lse are the forward's; scratch holds
// attention_backward_scratch_floats(tokens, d) floats from the arena.
inline void attention_backward_own(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out,
                                   const bf16* q, const bf16* k, const bf16* v, const float* lse, AttentionDims d,
                                   VarlenBatch b, cudaStream_t stream) {
  if (!attention_has_fast_path(d.head_dim))
    return small_attention_backward(dq, dk, dv, scratch, dout, out, q, k, v, lse, d, b, stream);
  detail::check_attention(d, "attention_backward");
  if (b.tokens == 0 || b.num_seqs == 0) return;
  detail::attention_backward_with<detail::MmaBackwardCore>(dq, dk, dv, scratch, dout, out, q, k, v, lse, d, b, stream);
}

// The programs' "[cuda] attention: ..." line: which implementation long samples get.
inline std::string describe_attention() {
#ifdef PEFT_WITH_CUDNN
  if (attention_impl_requested() == AttentionImpl::own) return "[cuda] attention: peft's kernels (PEFT_ATTENTION=own)";
  return "[cuda] attention: cuDNN's fused attention for samples of " + std::to_string(cudnn_attention_min_seq()) +
         " tokens and more, peft's kernels below";
#else
  return "[cuda] attention: peft's kernels (built without cuDNN)";
#endif
}

// What the model calls: cuDNN's fused attention where built in and serving the shape, else ours.
inline void attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, AttentionDims d,
                              VarlenBatch b, cudaStream_t stream) {
#ifdef PEFT_WITH_CUDNN
  if (attention_has_fast_path(d.head_dim) && b.tokens > 0 && cudnn_attention_forward(out, lse, q, k, v, d, b, stream))
    return;
#endif
  attention_forward_own(out, lse, q, k, v, d, b, stream);
}

inline void attention_backward(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out,
                               const bf16* q, const bf16* k, const bf16* v, const float* lse, AttentionDims d,
                               VarlenBatch b, cudaStream_t stream) {
#ifdef PEFT_WITH_CUDNN
  if (attention_has_fast_path(d.head_dim) && b.tokens > 0 &&
      cudnn_attention_backward(dq, dk, dv, scratch, dout, out, q, k, v, lse, d, b, stream))
    return;
#endif
  attention_backward_own(dq, dk, dv, scratch, dout, out, q, k, v, lse, d, b, stream);
}

}  // namespace peft::cuda
