// y[T, rows] = x[T, cols] W^T (+ b) with W an NF4 tensor, for a few rows of x (T <= 8): the
// frozen projections of a QLoRA model when it decodes. nf4_dequant.cuh explains why training
// dequantises a projection into a bf16 scratch and runs cuBLASLt on it: at thousands of tokens
// the GEMM's arithmetic hides the extra pass. At one token there is no arithmetic to hide it:
// dequantise-then-GEMM reads 0.52 B, writes 2 B and reads 2 B again per weight, while reading
// the codes once and multiplying as they are decoded reads 0.52 B. This kernel does the latter,
// so an NF4 model decodes from a quarter of the bf16 model's bytes.
//
// The weights it multiplies are bit for bit the dequantisation's (the same nf4::decode_chunk,
// bf16-rounded), and the products accumulate in fp32 as cuBLASLt's do; only the order of the
// sums differs, so the result equals the dequantise-then-GEMM path's up to fp32 summation order
// and the final bf16 rounding. A warp computes one output row at a time (grid-stride over rows):
// each lane decodes 8 weights per step (one 32-bit load) and multiplies them with the matching
// 8 inputs of every row of x (one 16-byte load each, L1-resident), then the warp sums its lanes.
#pragma once
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"
#include "peft/kernels/cuda/nf4_tensor.cuh"
#include "peft/quant/nf4_decode.hpp"

namespace peft::cuda {

inline constexpr int kNf4GemvMaxTokens = 8;

namespace detail {

inline constexpr int kNf4GemvThreads = 256;

__global__ void __launch_bounds__(kNf4GemvThreads)
    nf4_gemv_kernel(bf16* __restrict__ y, const bf16* __restrict__ x, int tokens, nf4::Nf4Data t,
                    nf4::Nf4Tables tables, int rows, int cols, const bf16* __restrict__ bias) {
  __shared__ float map[256];
  __shared__ float code[16];
  load_nf4_tables(map, code, tables);
  const int lane = threadIdx.x & 31;
  const int warps_per_block = blockDim.x / 32;
  const int warps = gridDim.x * warps_per_block;
  for (int row = blockIdx.x * warps_per_block + threadIdx.x / 32; row < rows; row += warps) {
    float acc[kNf4GemvMaxTokens] = {};
    const std::int64_t first = static_cast<std::int64_t>(row) * cols, end = first + cols;
#pragma unroll 4
    for (int c = lane * nf4::kChunk; c < cols; c += 32 * nf4::kChunk) {
      std::uint16_t bits[nf4::kChunk];
      nf4::decode_chunk(t, map, code, first + c, end, bits);
      float w[nf4::kChunk];
#pragma unroll
      for (int j = 0; j < nf4::kChunk; ++j) w[j] = __bfloat162float(__ushort_as_bfloat16(bits[j]));
#pragma unroll
      for (int r = 0; r < kNf4GemvMaxTokens; ++r) {
        if (r >= tokens) break;
        const Bf16x8 xv = load128(x + static_cast<std::int64_t>(r) * cols + c);
#pragma unroll
        for (int j = 0; j < nf4::kChunk; ++j) acc[r] = fmaf(w[j], __bfloat162float(xv[j]), acc[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < kNf4GemvMaxTokens; ++r) {
      if (r >= tokens) break;
      float s = acc[r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (lane == 0) {
        if (bias) s += __bfloat162float(bias[row]);
        y[static_cast<std::int64_t>(r) * rows + row] = __float2bfloat16_rn(s);
      }
    }
  }
}

}  // namespace detail

// Whether nf4_gemv takes this product: a few rows of x, and rows of W that start on whole
// 8-weight chunks (every Qwen2.5 projection: cols is a multiple of 64).
inline bool nf4_gemv_fits(const Nf4DeviceTensor& w, int tokens) {
  return tokens >= 1 && tokens <= kNf4GemvMaxTokens && w.cols % nf4::kChunk == 0;
}

// y[tokens, w.rows] (bf16, row-major) = x[tokens, w.cols] w^T (+ bias[w.rows]); x and y
// 16-byte aligned (the arena's blocks are). Asynchronous on `stream`.
inline void nf4_gemv(bf16* y, const bf16* x, int tokens, const Nf4DeviceTensor& w, const bf16* bias,
                     cudaStream_t stream) {
  if (!nf4_gemv_fits(w, tokens))
    throw Error("nf4_gemv: " + std::to_string(tokens) + " rows of x against a [" + std::to_string(w.rows) + ", " +
                std::to_string(w.cols) + "] weight: at most " + std::to_string(kNf4GemvMaxTokens) +
                " rows and a multiple of 8 columns");
  if (reinterpret_cast<std::uintptr_t>(x) % 16 != 0 || reinterpret_cast<std::uintptr_t>(w.packed) % 4 != 0)
    throw Error("nf4_gemv: x must be 16-byte aligned and the packed codes 4-byte aligned");
  const int warps_per_block = detail::kNf4GemvThreads / 32;
  const std::int64_t wanted = (w.rows + warps_per_block - 1) / warps_per_block;
  const std::int64_t resident = static_cast<std::int64_t>(current_device_kernels().gpu.sms) * 8;
  const auto blocks = static_cast<unsigned>(wanted < resident ? wanted : resident);
  if (blocks == 0) return;
  detail::nf4_gemv_kernel<<<blocks, detail::kNf4GemvThreads, 0, stream>>>(
      y, x, tokens, w.data(), nf4::decode_tables(), static_cast<int>(w.rows), static_cast<int>(w.cols), bias);
  PEFT_CUDA_CHECK_LAUNCH("nf4_gemv_kernel");
}

}  // namespace peft::cuda
