// RMSNorm with HF Qwen2RMSNorm's arithmetic, as kernels/cpu/rms_norm.hpp and layers/rms_norm.hpp:
// xhat = bf16(x * rstd), rstd = 1 / sqrt(mean(x^2) + eps) in fp32, then y = bf16(xhat * w).
// The forward saves only rstd (one float per token); the backward recomputes xhat from x, which
// is bit-identical to what the forward stored, instead of keeping a second [tokens, hidden] copy.
//
// Gradients: the input gradient ADDS into dx (the norm sits on a residual branch, so dx already
// holds the skip path's gradient), computed in fp32 and rounded once; pass accumulate = false to
// overwrite instead. The weight gradient (only when norms train) accumulates into an fp32 master
// gradient across micro-batches: per-block partial sums in shared memory, then one atomicAdd per
// column per block.
//
// One warp per token row, 16-byte packs: hidden must be a multiple of 8 (896 and 3584 are).
//
// add_rms_norm_forward is the decoder layer's h = x + o_proj(...) followed by norm2(h) in one
// pass: the sum is rounded to bf16 and stored as residual_add would, and the norm reads those
// rounded values back from the lane's own stores (no second launch, no second read of h from HBM).
#pragma once
#include <algorithm>
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::cuda {
namespace detail {

__device__ inline float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

constexpr int kRmsWarpsPerBlock = 8;

// With `b`: x = bf16(a + b) is written to `sum` (the residual stream) and normalised; else x = a.
__global__ void rms_norm_forward_kernel(bf16* __restrict__ y, float* __restrict__ rstd_out, const bf16* a,
                                        const bf16* __restrict__ b, bf16* sum, const bf16* __restrict__ w, int rows,
                                        int cols, float eps) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * kRmsWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const long long off = static_cast<long long>(row) * cols;
  float sq = 0.0f;
  for (int c = lane * 8; c < cols; c += 32 * 8) {
    Bf16x8 p = load128(a + off + c);
    if (b) {
      const Bf16x8 q = load128(b + off + c);
      for (int i = 0; i < 8; ++i) p[i] = to_bf16(to_float(p[i]) + to_float(q[i]));
      store128(sum + off + c, p);
    }
    for (int i = 0; i < 8; ++i) {
      const float v = to_float(p[i]);
      sq += v * v;
    }
  }
  const bf16* xr = (b ? sum : a) + off;  // the second pass reads what this lane stored (or a)
  const float rstd = rsqrtf(warp_sum(sq) / static_cast<float>(cols) + eps);
  bf16* yr = y + static_cast<long long>(row) * cols;
  for (int c = lane * 8; c < cols; c += 32 * 8) {
    const Bf16x8 p = load128(xr + c);
    const Bf16x8 wp = load128(w + c);
    Bf16x8 out;
    for (int i = 0; i < 8; ++i) {
      const float xhat = to_float(to_bf16(to_float(p[i]) * rstd));
      out[i] = to_bf16(xhat * to_float(wp[i]));
    }
    store128(yr + c, out);
  }
  if (lane == 0 && rstd_out) rstd_out[row] = rstd;
}

// dynamic shared memory: cols floats for the block's dw partial sums (only when dw != nullptr).
__global__ void rms_norm_backward_kernel(bf16* __restrict__ dx, float* __restrict__ dw, const bf16* __restrict__ dy,
                                         const bf16* __restrict__ x, const bf16* __restrict__ w,
                                         const float* __restrict__ rstd, int rows, int cols, bool accumulate) {
  extern __shared__ float dw_partial[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (dw)
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dw_partial[c] = 0.0f;
  __syncthreads();
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (int row = blockIdx.x * kRmsWarpsPerBlock + warp; row < rows; row += gridDim.x * kRmsWarpsPerBlock) {
    const long long base = static_cast<long long>(row) * cols;
    const float r = rstd[row];
    // dot = mean(dxhat . xhat), dxhat = dy * w
    float dot = 0.0f;
    for (int c = lane * 8; c < cols; c += 32 * 8) {
      const Bf16x8 xp = load128(x + base + c), dyp = load128(dy + base + c), wp = load128(w + c);
      for (int i = 0; i < 8; ++i) {
        const float xhat = to_float(to_bf16(to_float(xp[i]) * r));
        dot += to_float(dyp[i]) * to_float(wp[i]) * xhat;
      }
    }
    dot = warp_sum(dot) * inv_cols;
    for (int c = lane * 8; c < cols; c += 32 * 8) {
      const Bf16x8 xp = load128(x + base + c), dyp = load128(dy + base + c), wp = load128(w + c);
      Bf16x8 old;
      if (accumulate) old = load128(dx + base + c);
      Bf16x8 out;
      for (int i = 0; i < 8; ++i) {
        const float xhat = to_float(to_bf16(to_float(xp[i]) * r));
        const float g = to_float(dyp[i]);
        const float d = r * (g * to_float(wp[i]) - dot * xhat);
        out[i] = to_bf16(accumulate ? to_float(old[i]) + d : d);
        if (dw) atomicAdd(&dw_partial[c + i], g * xhat);
      }
      store128(dx + base + c, out);
    }
  }
  if (dw) {
    __syncthreads();
    for (int c = threadIdx.x; c < cols; c += blockDim.x) atomicAdd(&dw[c], dw_partial[c]);
  }
}

inline void check_rms_shape(int cols, const char* who) {
  if (cols % 8 != 0)
    throw Error(std::string(who) + ": hidden size " + std::to_string(cols) + " is not a multiple of 8");
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// y, x: [rows, cols] bf16; w: [cols] bf16; rstd: [rows] fp32 (may be null when no backward follows).
inline void rms_norm_forward(bf16* y, float* rstd, const bf16* x, const bf16* w, int rows, int cols, float eps,
                             cudaStream_t stream) {
  detail::check_rms_shape(cols, "rms_norm_forward");
  if (rows == 0) return;
  const int blocks = (rows + detail::kRmsWarpsPerBlock - 1) / detail::kRmsWarpsPerBlock;
  detail::rms_norm_forward_kernel<<<blocks, 32 * detail::kRmsWarpsPerBlock, 0, stream>>>(y, rstd, x, nullptr, nullptr,
                                                                                        w, rows, cols, eps);
  PEFT_CUDA_CHECK_LAUNCH("rms_norm_forward_kernel");
}

// sum = bf16(a + b) (residual_add's values) and y = rms_norm(sum) in one launch; sum may not alias
// a or b.
inline void add_rms_norm_forward(bf16* sum, bf16* y, float* rstd, const bf16* a, const bf16* b, const bf16* w, int rows,
                                 int cols, float eps, cudaStream_t stream) {
  detail::check_rms_shape(cols, "add_rms_norm_forward");
  if (rows == 0) return;
  const int blocks = (rows + detail::kRmsWarpsPerBlock - 1) / detail::kRmsWarpsPerBlock;
  detail::rms_norm_forward_kernel<<<blocks, 32 * detail::kRmsWarpsPerBlock, 0, stream>>>(y, rstd, a, b, sum, w, rows,
                                                                                        cols, eps);
  PEFT_CUDA_CHECK_LAUNCH("rms_norm_forward_kernel (add)");
}

// dx (+)= d(norm)/dx applied to dy; dw (fp32, may be null) += sum over rows of dy * xhat.
// `num_sms` bounds the grid when dw is accumulated (one atomicAdd per column per block).
inline void rms_norm_backward(bf16* dx, float* dw, const bf16* dy, const bf16* x, const bf16* w, const float* rstd,
                              int rows, int cols, cudaStream_t stream, bool accumulate = true, int num_sms = 132) {
  detail::check_rms_shape(cols, "rms_norm_backward");
  if (rows == 0) return;
  int blocks = (rows + detail::kRmsWarpsPerBlock - 1) / detail::kRmsWarpsPerBlock;
  std::size_t smem = 0;
  if (dw) {
    blocks = std::min(blocks, 2 * num_sms);
    smem = static_cast<std::size_t>(cols) * sizeof(float);
    if (smem > 48 * 1024)
      PEFT_CUDA_CHECK(cudaFuncSetAttribute(detail::rms_norm_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  }
  detail::rms_norm_backward_kernel<<<blocks, 32 * detail::kRmsWarpsPerBlock, smem, stream>>>(dx, dw, dy, x, w, rstd, rows,
                                                                                            cols, accumulate);
  PEFT_CUDA_CHECK_LAUNCH("rms_norm_backward_kernel");
}

}  // namespace peft::cuda
