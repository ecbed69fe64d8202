// NF4 -> bf16 dequantisation on the GPU, bit for bit as peft::nf4::dequantize (and so as
// bitsandbytes' dequantize_4bit): QLoRA's training matmuls dequantise a frozen projection to a
// bf16 temporary and run the ordinary bf16 GEMM on it, as bitsandbytes' MatMul4Bit does for the
// forward and the input gradient.
//
// Why dequantise-then-GEMM rather than a fused 4-bit GEMM: at training shapes the dequantisation
// is a small fraction of the GEMM it feeds. The 7B's largest projection (gate/up 18944 x 3584,
// down 3584 x 18944) has n = 67.9 M weights; dequantising it reads 0.516 B and writes 2 B per
// weight, 171 MB, 36 us at an H200's ~4.8 TB/s. The GEMM it feeds for M tokens is 2 M n FLOP:
// at M = 2048 (one 2048-token sequence) 278 GFLOP, 348 us at ~800 TFLOP/s bf16, so the
// dequantisation adds ~10% to that matmul, ~5% at M = 4096; it breaks even only near M = 210
// tokens (2.516 B x 800 TFLOP/s / (2 FLOP x 4.8 TB/s)), far below a training batch. A fused
// kernel would win back that 5-10% but would have to match cuBLASLt's GEMM to be worth it; the
// one there is (nf4_gemm.cuh) does not, and is used only up to 64 tokens, where it wins.
// The cost in memory is one scratch, not a bf16 copy of the model: the model (not part of this
// header; docs/qlora.md) is to dequantise one projection at a time into a buffer reused across
// layers, so the peak extra memory is the largest projection in bf16, 136 MB at 7B.
//
// The kernel is written for bandwidth: each thread decodes 8 codes (one 32-bit load of 4 packed
// bytes, one absmax decode, one 16-byte store; a warp moves 128 contiguous bytes in and 512
// out), a grid-stride loop over a grid of a few blocks per SM so that each block copies the
// lookup tables into shared memory once. The per-thread arithmetic is quant/nf4_decode.hpp's
// decode_chunk, shared with the CPU test that checks it. A range of elements [first, end) can be
// dequantised on its own, so a caller can dequantise rows [row0, row1) of a [rows, cols] weight
// into a small scratch (kernels/cuda/nf4_tensor.cuh has the row form).
#pragma once
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"
#include "peft/quant/nf4_decode.hpp"

namespace peft::cuda {
namespace detail {

inline constexpr int kNf4Threads = 256;
inline constexpr int kNf4BlocksPerSm = 8;  // 2048 resident threads per SM on sm_80 / sm_90

// The block's copy of the decode tables in shared memory (every NF4 kernel's first step).
__device__ inline void load_nf4_tables(float* map, float* code, const nf4::Nf4Tables& tables) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) map[i] = tables.map[i];
  if (threadIdx.x < 16) code[threadIdx.x] = tables.code[threadIdx.x];
  __syncthreads();
}

// dst[o] = element first + o, for o < count.
__global__ void __launch_bounds__(kNf4Threads)
    nf4_dequant_kernel(bf16* __restrict__ dst, nf4::Nf4Data t, nf4::Nf4Tables tables, std::int64_t first,
                       std::int64_t count) {
  __shared__ float map[256];
  __shared__ float code[16];
  load_nf4_tables(map, code, tables);
  const std::int64_t chunks = (count + nf4::kChunk - 1) / nf4::kChunk;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks; c += stride) {
    std::uint16_t bits[nf4::kChunk];
    const int n = nf4::decode_chunk(t, map, code, first + c * nf4::kChunk, first + count, bits);
    bf16* out = dst + c * nf4::kChunk;
    if (n == nf4::kChunk) {
      Bf16x8 pack;
#pragma unroll
      for (int j = 0; j < nf4::kChunk; ++j) pack[j] = __ushort_as_bfloat16(bits[j]);
      store128(out, pack);
    } else {
#pragma unroll
      for (int j = 0; j < nf4::kChunk; ++j)
        if (j < n) out[j] = __ushort_as_bfloat16(bits[j]);
    }
  }
}

}  // namespace detail

// Dequantises elements [first, end) of the NF4 tensor `t` (numel elements; device arrays as
// quant/nf4.hpp lays them out) into dst[0, end - first) as bf16. dst must be 16-byte aligned and
// t.packed 4-byte aligned (the arena aligns every block to 256). Asynchronous on `stream`.
inline void nf4_dequantize_range(bf16* dst, const nf4::Nf4Data& t, std::int64_t numel, std::int64_t first,
                                 std::int64_t end, cudaStream_t stream) {
  if (first < 0 || end < first || end > numel)
    throw Error("nf4_dequantize_range: element range [" + std::to_string(first) + ", " + std::to_string(end) +
                ") is not inside the tensor's " + std::to_string(numel) + " elements");
  if (end == first) return;
  if (!dst || !t.packed || !t.absmax_code || !t.absmax_scale)
    throw Error("nf4_dequantize_range: null device pointer (was the tensor's memory planned but not allocated?)");
  if (reinterpret_cast<std::uintptr_t>(dst) % 16 != 0 || reinterpret_cast<std::uintptr_t>(t.packed) % 4 != 0)
    throw Error("nf4_dequantize_range: the output must be 16-byte aligned and the packed codes 4-byte aligned");
  const std::int64_t count = end - first;
  const std::int64_t chunks = (count + nf4::kChunk - 1) / nf4::kChunk;
  const std::int64_t wanted = (chunks + detail::kNf4Threads - 1) / detail::kNf4Threads;
  const std::int64_t resident = static_cast<std::int64_t>(current_device_kernels().gpu.sms) * detail::kNf4BlocksPerSm;
  const auto blocks = static_cast<unsigned>(wanted < resident ? wanted : resident);
  detail::nf4_dequant_kernel<<<blocks, detail::kNf4Threads, 0, stream>>>(dst, t, nf4::decode_tables(), first, count);
  PEFT_CUDA_CHECK_LAUNCH("nf4_dequant_kernel");
}

}  // namespace peft::cuda
