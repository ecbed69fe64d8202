// What the LoRA branch's rank-8 tensor-core kernels share (lora_dropout_mma.cuh: the down
// projection and its backward; lora_up_mma.cuh: the up projection and its backward): bf16 pair
// handling, the m16n8k8 / transpose instructions, vector reductions, the fragments of a rank-major
// [8, n] matrix (A or B^T), and the split of (64-column strip, 16-token step) pairs over warps.
// All of it is sm_80 PTX (sm_75 for movmatrix) except red_add4's vector form, which is sm_90's.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "peft/kernels/cuda/attention_mma.cuh"
#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"

namespace peft::cuda::detail {

__device__ inline std::uint32_t load_pair(const bf16* p) { return *reinterpret_cast<const std::uint32_t*>(p); }
__device__ inline std::uint32_t load_u16(const bf16* p) { return *reinterpret_cast<const unsigned short*>(p); }
// The two bf16 of a packed pair as floats (exact: a bf16 is a float's high half).
__device__ inline float bf16_lo(std::uint32_t v) { return __uint_as_float(v << 16); }
__device__ inline float bf16_hi(std::uint32_t v) { return __uint_as_float(v & 0xffff0000u); }
__device__ inline std::uint32_t low_halves(std::uint32_t lo, std::uint32_t hi) { return __byte_perm(lo, hi, 0x5410); }
__device__ inline std::uint32_t high_halves(std::uint32_t lo, std::uint32_t hi) { return __byte_perm(lo, hi, 0x7632); }
__device__ inline uint4 load16(const bf16* p, bool ok) {
  return ok ? *reinterpret_cast<const uint4*>(p) : make_uint4(0u, 0u, 0u, 0u);
}

// c += a (16x8, row) * b (8x8, col), bf16 in, fp32 accumulate.
__device__ inline void mma1688(float (&c)[4], std::uint32_t a0, std::uint32_t a1, std::uint32_t b) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(b));
}

// The warp's 8 x 8 bf16 matrix transposed: a lane holding (row g, columns 2q, 2q + 1) gets
// (row g, columns 2q, 2q + 1) of the transpose, i.e. (column g of rows 2q, 2q + 1).
__device__ inline std::uint32_t transpose8x8(std::uint32_t v) {
  std::uint32_t r;
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(r) : "r"(v));
  return r;
}

// p[0..3] += v (fp32): one vector reduction on sm_90, four atomics before it.
__device__ inline void red_add4(float* p, float v0, float v1, float v2, float v3) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v4.f32 [%0], {%1,%2,%3,%4};\n" ::"l"(p), "f"(v0), "f"(v1), "f"(v2), "f"(v3)
               : "memory");
#else
  atomicAdd(p, v0);
  atomicAdd(p + 1, v1);
  atomicAdd(p + 2, v2);
  atomicAdd(p + 3, v3);
#endif
}

// N 32-bit words (2N bf16: a lane's run of ranks in a [T, rp] matrix, or of columns) at p in the widest loads its
// alignment allows (the callers' offsets are 16-byte multiples when N % 4 == 0, 8-byte when
// N % 2 == 0); zero when !ok.
template <int N>
__device__ __forceinline__ void load_words(std::uint32_t (&w)[N], const bf16* p, bool ok) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const uint4 v = ok ? reinterpret_cast<const uint4*>(p)[i] : make_uint4(0u, 0u, 0u, 0u);
      w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
    }
  } else if constexpr (N % 2 == 0) {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
      const uint2 v = ok ? reinterpret_cast<const uint2*>(p)[i] : make_uint2(0u, 0u);
      w[2 * i] = v.x, w[2 * i + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) w[i] = ok ? reinterpret_cast<const std::uint32_t*>(p)[i] : 0u;
  }
}

// A^T's m16n8k8 fragments at the lane's C (8 or 4) columns for ranks r and r + 1 (rows r0 and
// r0 + n of a rank-major [*, n] matrix at the lane's column): the layout below for any rank pair,
// C / 2 tiles.
template <int C = 8>
__device__ __forceinline__ void rank_pair_fragments(std::uint32_t (&af)[C / 2][2], const bf16* __restrict__ r0, int n,
                                                    bool live) {
  static_assert(C == 8 || C == 4, "a lane owns 8 or 4 columns");
  std::uint32_t w0[C / 2], w1[C / 2];
  load_words<C / 2>(w0, r0, live);  // one 16- or 8-byte load a row
  load_words<C / 2>(w1, r0 + n, live);
#pragma unroll
  for (int j = 0; j < C / 2; ++j) {
    af[j][0] = low_halves(w0[j], w1[j]);
    af[j][1] = high_halves(w0[j], w1[j]);
  }
}
// M^T's m16n8k8 A fragments for a rank-major M [8, n] (LoRA's A [8, in] or B^T [8, out]) at the
// lane's 8 columns col..col+7: tile j's row g is column col + 2j, row g + 8 column col + 2j + 1,
// k = ranks 2q, 2q + 1. Zero when !live.
__device__ __forceinline__ void rank8_column_fragments(std::uint32_t (&af)[4][2], const bf16* __restrict__ m, int n,
                                                       int col, bool live, int q) {
  rank_pair_fragments(af, m + static_cast<std::size_t>(2 * q) * n + col, n, live);
}

// The padded ranks the tensor-core kernels take (8 G, G = 1..8 rank groups), and
// f(std::integral_constant<int, G>) for one of them.
inline bool lora_mma_rank(int rp) { return rp >= 8 && rp % 8 == 0 && rp <= 64; }
template <class F>
void with_mma_groups(int rp, F&& f) {
  switch (rp / 8) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    case 8: return f(std::integral_constant<int, 8>{});
    default: throw Error("padded LoRA rank " + std::to_string(rp) + " has no tensor-core kernel");
  }
}

// The (64-column strip, 16-token step) pairs of a [T, n] pass, strip-major (a strip's steps
// token-contiguous), split evenly over every warp of the grid: this warp's pairs [begin, end).
// A warp walking its share stays on a strip for many steps, so what it keeps per strip (fragments
// of A or B^T, dA's sums) is loaded or flushed once a strip. A team of `team` adjacent warps of a
// block takes one share (each warp its part of the strip's columns, the same steps at about the same time).
constexpr int kRank8StripCols = 64;  // 8 lanes x 8 columns
struct WarpShare {
  int steps, begin, end;
};
__device__ inline WarpShare rank8_warp_share(int T, int n, int warps_per_block, int team = 1) {
  const int steps = (T + 15) / 16, total = (n + kRank8StripCols - 1) / kRank8StripCols * steps;
  const long long warps = static_cast<long long>(gridDim.x) * warps_per_block / team;
  const long long w = (static_cast<long long>(blockIdx.x) * warps_per_block + static_cast<int>(threadIdx.x) / 32) / team;
  return {steps, static_cast<int>(total * w / warps), static_cast<int>(total * (w + 1) / warps)};
}
// The rank-8 kernels move 16 bytes an access: pointers that are not 16-byte aligned take another path.
inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Blocks of `threads` of `kernel` an SM holds at once (by its registers and shared memory, static
// and `dynamic_smem` bytes), having allowed the kernel that much dynamic shared memory.
template <class Kernel>
int blocks_that_fit(Kernel kernel, int threads, std::size_t dynamic_smem = 0) {
  if (dynamic_smem > 0)  // the launch's allowance too (past 48 KB it must be asked for)
    PEFT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(dynamic_smem)));
  int n = 0;
  PEFT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, dynamic_smem));
  return std::max(n, 1);
}
// Blocks for such a grid: `per_sm` an SM, no more than the pairs need.
inline unsigned rank8_share_blocks(int warps_per_block, int T, int n, int per_sm) {
  const long long work = static_cast<long long>((n + kRank8StripCols - 1) / kRank8StripCols) * ((T + 15) / 16);
  return static_cast<unsigned>(std::min<long long>(static_cast<long long>(per_sm) * current_device_kernels().gpu.sms,
                                                   (work + warps_per_block - 1) / warps_per_block));
}

// out [T, width] = bf16 of `splits` fp32 partial sums part [splits, T, width], added in split order
// (so the result does not depend on which block finished first); width is the padded rank.
__global__ void rank8_add_splits_kernel(bf16* __restrict__ out, const float* __restrict__ part, int T, int splits,
                                        int width) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= T * width) return;
  float v = 0.0f;
  for (int s = 0; s < splits; ++s) v += part[static_cast<std::size_t>(s) * T * width + i];
  out[i] = to_bf16(v);
}
inline void rank8_add_splits(bf16* out, const float* part, int T, int splits, cudaStream_t stream, int width = 8) {
  rank8_add_splits_kernel<<<static_cast<unsigned>((T * width + 255) / 256), 256, 0, stream>>>(out, part, T, splits,
                                                                                             width);
  PEFT_CUDA_CHECK_LAUNCH("rank8_add_splits_kernel");
}

}  // namespace peft::cuda::detail
