// The lm_head projection fused with cross entropy, in row chunks, as kernels/cpu/cross_entropy.hpp:
// at most `chunk_rows` rows of vocabulary-wide logits exist at once (bf16, [chunk_rows, vocab]:
// 152k columns make a whole sequence's fp32 logits 1.2 GB per 2048 tokens; a 512-row chunk is
// 156 MB). Per chunk: one GEMM writes the bf16 logits (the lm_head output dtype, as HF); one
// block per row computes max and sum with an online softmax, the row's loss, and writes the
// gradient (softmax - onehot) * grad_scale over the logits in place (as llm.c's fused
// classifier); then dh = dlogits W and, for a trained (tied) head, dW += dlogits^T h.
//
// Rows whose target is negative (-100) get loss 0 and a zero gradient, but they still cost GEMM
// work: callers project only the labelled rows, gathering them with gather_rows and scattering
// dh back with scatter_rows, which is exact (an ignored position has no gradient).
// Per-row losses go to a device array; ce_loss_sum reduces them in double on the device.
#pragma once
#include <cub/block/block_reduce.cuh>
#include <algorithm>
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/gemm.cuh"

namespace peft::cuda {
namespace detail {

constexpr int kCeThreads = 1024;

struct MaxSum {
  float max, sum;  // sum of exp(x - max)
};

__device__ inline MaxSum combine(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.0f};
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

__device__ inline MaxSum block_max_sum(MaxSum v) {
  __shared__ MaxSum warp_results[kCeThreads / 32];
  __shared__ MaxSum result;
  for (int offset = 16; offset > 0; offset >>= 1) {
    MaxSum o{__shfl_xor_sync(0xffffffffu, v.max, offset), __shfl_xor_sync(0xffffffffu, v.sum, offset)};
    v = combine(v, o);
  }
  if (threadIdx.x % 32 == 0) warp_results[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < blockDim.x / 32 ? warp_results[threadIdx.x] : MaxSum{-INFINITY, 0.0f};
    for (int offset = 16; offset > 0; offset >>= 1) {
      MaxSum o{__shfl_xor_sync(0xffffffffu, v.max, offset), __shfl_xor_sync(0xffffffffu, v.sum, offset)};
      v = combine(v, o);
    }
    if (threadIdx.x == 0) result = v;
  }
  __syncthreads();
  return result;
}

// One block per row of logits [rows, ld] (vocab <= ld, ld % 8 == 0). Overwrites the row with
// its gradient when grad_scale != 0.
__global__ void __launch_bounds__(kCeThreads) cross_entropy_rows_kernel(bf16* __restrict__ logits,
                                                                        float* __restrict__ row_loss,
                                                                        const std::int32_t* __restrict__ targets,
                                                                        int vocab, int ld, float grad_scale) {
  bf16* row = logits + static_cast<long long>(blockIdx.x) * ld;
  const std::int32_t target = targets[blockIdx.x];
  if (target < 0) {  // ignored position: no loss, no gradient
    if (grad_scale != 0.0f)
      for (int c = threadIdx.x * 8; c < ld; c += kCeThreads * 8) store128(row + c, Bf16x8{});
    if (threadIdx.x == 0) row_loss[blockIdx.x] = 0.0f;
    return;
  }
  MaxSum acc{-INFINITY, 0.0f};
  for (int c = threadIdx.x * 8; c < ld; c += kCeThreads * 8) {
    const Bf16x8 p = load128(row + c);
    float m = -INFINITY;
    for (int i = 0; i < 8; ++i)
      if (c + i < vocab) m = fmaxf(m, to_float(p[i]));
    float s = 0.0f;
    for (int i = 0; i < 8; ++i)
      if (c + i < vocab) s += expf(to_float(p[i]) - m);
    acc = combine(acc, MaxSum{m, s});
  }
  const MaxSum total = block_max_sum(acc);
  if (threadIdx.x == 0) {
    const float logit_t = target < vocab ? to_float(row[target]) : __int_as_float(0x7fc00000);
    row_loss[blockIdx.x] = logf(total.sum) + total.max - logit_t;
  }
  if (grad_scale == 0.0f) return;
  __syncthreads();  // thread 0 read row[target] above; the row is overwritten below
  const float inv_sum = 1.0f / total.sum;
  for (int c = threadIdx.x * 8; c < ld; c += kCeThreads * 8) {
    const Bf16x8 p = load128(row + c);
    Bf16x8 out;
    for (int i = 0; i < 8; ++i) {
      float g = 0.0f;
      if (c + i < vocab) {
        g = expf(to_float(p[i]) - total.max) * inv_sum * grad_scale;
        if (c + i == target) g -= grad_scale;
      }
      out[i] = to_bf16(g);
    }
    store128(row + c, out);
  }
}

__global__ void ce_loss_sum_kernel(double* __restrict__ out, const float* __restrict__ row_loss, int rows) {
  using BlockReduce = cub::BlockReduce<double, 256>;
  __shared__ typename BlockReduce::TempStorage temp;
  double s = 0.0;
  for (int i = threadIdx.x; i < rows; i += 256) s += static_cast<double>(row_loss[i]);
  const double total = BlockReduce(temp).Sum(s);
  if (threadIdx.x == 0) *out = total;
}

__global__ void gather_rows_kernel(bf16* __restrict__ dst, const bf16* __restrict__ src,
                                   const std::int32_t* __restrict__ rows, int count, int cols) {
  const int packs = cols / 8;
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<long long>(count) * packs) return;
  const long long r = idx / packs;
  const int c = static_cast<int>(idx % packs) * 8;
  store128(dst + r * cols + c, load128(src + static_cast<long long>(rows[r]) * cols + c));
}

__global__ void scatter_rows_kernel(bf16* __restrict__ dst, const bf16* __restrict__ src,
                                    const std::int32_t* __restrict__ rows, int count, int cols) {
  const int packs = cols / 8;
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<long long>(count) * packs) return;
  const long long r = idx / packs;
  const int c = static_cast<int>(idx % packs) * 8;
  store128(dst + static_cast<long long>(rows[r]) * cols + c, load128(src + r * cols + c));
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// Scratch for the chunked logits: [chunk_rows, ld] bf16 with ld = vocab rounded up to 8.
struct LogitsChunk {
  bf16* data = nullptr;
  int rows = 0, ld = 0;

  static int ld_for(int vocab) { return (vocab + 7) / 8 * 8; }
};

// h: [n, hidden] bf16 rows that carry a target (targets [n] on the device, -100 = ignored);
// w: lm_head [vocab, hidden] bf16. Writes row_loss [n]. With grad_scale != 0 also writes
// dh [n, hidden] (when non-null) and adds dlogits^T h into dw [vocab, hidden] fp32 (when non-null).
inline void lm_head_cross_entropy(Gemm& gemm, float* row_loss, bf16* dh, float* dw, const bf16* h, const bf16* w,
                                  const std::int32_t* targets, int n, int hidden, int vocab, float grad_scale,
                                  const LogitsChunk& chunk, cudaStream_t stream) {
  if (chunk.rows <= 0 || chunk.ld < vocab || chunk.ld % 8 != 0)
    throw Error("lm_head_cross_entropy: logits chunk of " + std::to_string(chunk.rows) + " rows x " +
                std::to_string(chunk.ld) + " cannot hold vocab " + std::to_string(vocab));
  if (hidden % 8 != 0) throw Error("lm_head_cross_entropy: hidden " + std::to_string(hidden) + " is not a multiple of 8");
  for (int r0 = 0; r0 < n; r0 += chunk.rows) {
    const int rows = std::min(chunk.rows, n - r0);
    const bf16* hr = h + static_cast<long long>(r0) * hidden;
    gemm.matmul(chunk.data, chunk.ld, hr, hidden, false, w, hidden, true, rows, vocab, hidden, 1.0f, 0.0f, nullptr, stream);
    detail::cross_entropy_rows_kernel<<<rows, detail::kCeThreads, 0, stream>>>(chunk.data, row_loss + r0, targets + r0,
                                                                               vocab, chunk.ld, grad_scale);
    PEFT_CUDA_CHECK_LAUNCH("cross_entropy_rows_kernel");
    if (grad_scale == 0.0f) continue;
    if (dh)  // dh[rows, hidden] = dlogits[rows, vocab] W[vocab, hidden]
      gemm.matmul(dh + static_cast<long long>(r0) * hidden, hidden, chunk.data, chunk.ld, false, w, hidden, false, rows,
                  hidden, vocab, 1.0f, 0.0f, nullptr, stream);
    if (dw)  // dW[vocab, hidden] += dlogits^T h
      gemm.matmul(dw, hidden, chunk.data, chunk.ld, true, hr, hidden, false, vocab, hidden, rows, 1.0f, 1.0f, nullptr,
                  stream);
  }
}

// *loss_sum = sum of row_loss[0, n), in double, on the device.
inline void ce_loss_sum(double* loss_sum, const float* row_loss, int n, cudaStream_t stream) {
  detail::ce_loss_sum_kernel<<<1, 256, 0, stream>>>(loss_sum, row_loss, n);
  PEFT_CUDA_CHECK_LAUNCH("ce_loss_sum_kernel");
}

// dst[i] = src[rows[i]] and its transpose, for [*, cols] bf16 (cols % 8 == 0).
inline void gather_rows(bf16* dst, const bf16* src, const std::int32_t* rows, int count, int cols, cudaStream_t stream) {
  const long long n = static_cast<long long>(count) * (cols / 8);
  if (n == 0) return;
  detail::gather_rows_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(dst, src, rows, count, cols);
  PEFT_CUDA_CHECK_LAUNCH("gather_rows_kernel");
}
inline void scatter_rows(bf16* dst, const bf16* src, const std::int32_t* rows, int count, int cols, cudaStream_t stream) {
  const long long n = static_cast<long long>(count) * (cols / 8);
  if (n == 0) return;
  detail::scatter_rows_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(dst, src, rows, count, cols);
  PEFT_CUDA_CHECK_LAUNCH("scatter_rows_kernel");
}

}  // namespace peft::cuda
