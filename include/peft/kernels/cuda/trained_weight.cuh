// The two passes a fully trained projection (layers/cuda/full_linear.cuh) needs besides its
// GEMMs: the bias gradient, db += column sums of dy (fp32), and the widening of bf16 weights
// that the loader wrote straight from a checkpoint into the fp32 masters the optimizer updates.
//
// The bias gradient splits the rows into chunks (one block row each) and adds the chunk sums
// with atomics: a 7B q_proj bias over 4096 tokens is 3584 columns, too few threads to keep the
// device's bandwidth busy with one thread per column walking every row.
#pragma once
#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::cuda {
namespace detail {

__global__ void bias_grad_kernel(float* __restrict__ db, const bf16* __restrict__ dy, int rows, int cols,
                                 int rows_per_chunk) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  const int r0 = blockIdx.y * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
  float s = 0.0f;
  for (int r = r0; r < r1; ++r) s += to_float(dy[static_cast<long long>(r) * cols + j]);
  atomicAdd(db + j, s);
}

__global__ void to_f32_kernel(float* __restrict__ dst, const bf16* __restrict__ src, long long n) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = to_float(src[i]);
}

}  // namespace detail

// db[cols] += sum over rows of dy[rows, cols] (bf16 in, fp32 accumulation).
inline void bias_grad_accumulate(float* db, const bf16* dy, int rows, int cols, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  constexpr int kRowsPerChunk = 128;
  const dim3 grid(static_cast<unsigned>((cols + 255) / 256),
                  static_cast<unsigned>((rows + kRowsPerChunk - 1) / kRowsPerChunk));
  detail::bias_grad_kernel<<<grid, 256, 0, stream>>>(db, dy, rows, cols, kRowsPerChunk);
  PEFT_CUDA_CHECK_LAUNCH("bias_grad_kernel");
}

// dst = float(src), n elements.
inline void copy_to_f32(float* dst, const bf16* src, long long n, cudaStream_t stream) {
  if (n == 0) return;
  detail::to_f32_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(dst, src, n);
  PEFT_CUDA_CHECK_LAUNCH("to_f32_kernel");
}

}  // namespace peft::cuda
