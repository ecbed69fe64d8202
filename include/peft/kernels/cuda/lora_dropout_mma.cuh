// LoRA dropout on tensor cores: lora_dropout.cuh's two passes at padded rank 8 on mma.sync
// (sm_80 instructions), where the FMA kernels are bound by their per-element work (the products,
// the mask, the conversions) rather than by the bytes they move. The mask is the same
// (`detail::dropped` of the row-major index) and the dropped input the same bf16 value as
// dropout_forward's, so either kernel of a pass gives what the other does up to fp32 summation
// order; lora_dropout.cuh chooses (PEFT_LORA_DOWN_MMA / PEFT_LORA_BACK_MMA = 0 for the FMA ones).
#pragma once
#include <cstdint>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/elementwise.cuh"
#include "peft/kernels/cuda/rank8_mma.cuh"

namespace peft::cuda::detail {

// Rank 8 on tensor cores: the products, the bf16 conversions of A and the additions go to
// mma.sync m16n8k16 (16 tokens x 16 columns of the dropped input times 16 x 8 of A^T), leaving a
// thread the mask and rounding of its 8 elements a step (lora_dropout.cuh's FMA kernel is bound
// by its per-element work). A block is 16 tokens; its kLoraMmaWarps warps take every kLoraMmaWarps-th
// 16-column step of the row and their accumulators meet in shared memory, added in warp order.
// Fragments are read straight from global memory (two 4-byte pieces of a row a lane: a row's 32
// bytes a step come from one sector).
// A warp's steps are a chain of dependent round trips, and at 16 tokens a block a short batch is
// a few blocks: down_proj at 64 tokens took 46 us (74 steps a warp), more than dropout + cuBLASLt.
// So the row can be split over gridDim.y blocks (columns [k0, k1) each): each writes its fp32
// partial sums to `part` [split, T, 8] and rank8_add_splits adds them in split order.
constexpr int kLoraMmaWarps = 16;

// A packed pair of x with its two drop decisions applied: 0 or bf16(x / (1 - p)), dropped_input's
// values (lora_dropout.cuh), rounded once by the packing conversion instead of twice.
__device__ inline std::uint32_t pack_dropped(std::uint32_t xv, bool d0, bool d1, float keep) {
  return pack_bf16(d0 ? 0.0f : bf16_lo(xv) * keep, d1 ? 0.0f : bf16_hi(xv) * keep);
}
// Elements idx and idx + 1 of x (packed in xv), dropped by the mask and packed.
__device__ inline std::uint32_t drop_pair(std::uint32_t xv, std::uint64_t idx, std::uint64_t seed, float p, float keep) {
  return pack_dropped(xv, dropped(seed, idx, p), dropped(seed, idx + 1, p), keep);
}

__global__ void __launch_bounds__(kLoraMmaWarps * 32)
    lora_down_dropout_mma_kernel(bf16* __restrict__ xa, float* __restrict__ split_part, const bf16* __restrict__ x,
                                 const bf16* __restrict__ a, int T, int in, int k_chunk,
                                 const std::uint64_t* __restrict__ seed_ptr, float p) {
  __shared__ float part[kLoraMmaWarps][16][8];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, q = lane % 4;  // fragment row (token) and column pair
  const int t_lo = static_cast<int>(blockIdx.x) * 16 + g, t_hi = t_lo + 8;
  const bool ok_lo = t_lo < T, ok_hi = t_hi < T;
  const bf16* x_lo = x + static_cast<std::size_t>(ok_lo ? t_lo : 0) * in;
  const bf16* x_hi = x + static_cast<std::size_t>(ok_hi ? t_hi : 0) * in;
  const bf16* a_row = a + static_cast<std::size_t>(g) * in;  // B fragment column n = g: rank g
  const std::uint64_t seed = *seed_ptr;
  const float keep = 1.0f / (1.0f - p);
  const std::uint64_t row_lo = static_cast<std::uint64_t>(t_lo) * in, row_hi = static_cast<std::uint64_t>(t_hi) * in;
  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  const int k0 = static_cast<int>(blockIdx.y) * k_chunk, k1 = min(in, k0 + k_chunk);  // k_chunk % 16 == 0
#pragma unroll 4
  for (int k = k0 + warp * 16; k < k1; k += kLoraMmaWarps * 16) {
    const int c0 = k + 2 * q, c1 = c0 + 8;  // in is a multiple of 8: a pair is in or out whole
    const bool in0 = c0 < in, in1 = c1 < in;
    const std::uint32_t x00 = ok_lo && in0 ? load_pair(x_lo + c0) : 0u, x10 = ok_hi && in0 ? load_pair(x_hi + c0) : 0u,
                        x01 = ok_lo && in1 ? load_pair(x_lo + c1) : 0u, x11 = ok_hi && in1 ? load_pair(x_hi + c1) : 0u;
    const std::uint32_t b0 = in0 ? load_pair(a_row + c0) : 0u, b1 = in1 ? load_pair(a_row + c1) : 0u;
    const std::uint32_t af[4] = {drop_pair(x00, row_lo + c0, seed, p, keep), drop_pair(x10, row_hi + c0, seed, p, keep),
                                 drop_pair(x01, row_lo + c1, seed, p, keep), drop_pair(x11, row_hi + c1, seed, p, keep)};
    mma16816(c, af, b0, b1);
  }
  part[warp][g][2 * q] = c[0];
  part[warp][g][2 * q + 1] = c[1];
  part[warp][g + 8][2 * q] = c[2];
  part[warp][g + 8][2 * q + 1] = c[3];
  __syncthreads();
  if (threadIdx.x < 16 * 8) {
    const int row = static_cast<int>(threadIdx.x) / 8, col = static_cast<int>(threadIdx.x) % 8;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kLoraMmaWarps; ++w) v += part[w][row][col];
    const int t = static_cast<int>(blockIdx.x) * 16 + row;
    if (t >= T) return;
    if (split_part)
      split_part[(static_cast<std::size_t>(blockIdx.y) * T + t) * 8 + col] = v;
    else
      xa[static_cast<std::size_t>(t) * 8 + col] = to_bf16(v);
  }
}

// Rank 8 backward on tensor cores; lora_dropout.cuh's FMA kernel is bound by its per-element work
// (16 FMAs, the mask, the conversions), as the forward was. Both products go to mma.sync, on one
// register layout: a lane owns 8 adjacent columns (one 16-byte load of x and of dx a token) of 4
// tokens of a 16-token step, and a warp's 64 columns are 4 m16 tiles whose row g is column
// 8g + 2j and row g + 8 column 8g + 2j + 1 (the rows of an mma are labels: any mapping works if
// every operand and result agrees on it). With that mapping
//   dx's term (dxa A)^T [64 cols, 16 tokens] = A^T [cols, 8 ranks] x dxa^T, m16n8k8 per tile and
//     8-token half, returns its sums in the lane's own elements of x (its C fragment is the A
//     fragment of the next mma), so the mask and 1/(1-p) apply without leaving registers;
//   dA^T [64 cols, 8 ranks] += drop(x)^T [cols, 16 tokens] x dxa, m16n8k16 per tile, takes the
//     dropped x as its A fragment after one byte permute a pair (token pairs, not column pairs).
constexpr int kLoraBackMmaWarps = 4;
constexpr int kLoraBackMmaCols = kRank8StripCols;

// One 16-token step from t0 over the lane's 8 columns: dx += its LoRA term, acc (dA^T, tile j:
// [0] dA[2q][col+2j], [1] dA[2q+1][col+2j], [2]/[3] the same at col+2j+1) += drop(x)^T dxa.
// Tokens at or past `end`, and columns past `in` (!live), read as zeros and are not written.
__device__ __forceinline__ void lora_back_mma_step(float (&acc)[4][4], const std::uint32_t (&af)[4][2],
                                                   bf16* __restrict__ dx, const bf16* __restrict__ dxa,
                                                   const bf16* __restrict__ x, int end, int in, int col, bool live,
                                                   int t0, int g, int q, std::uint64_t seed, float p, float keep) {
  // The lane's tokens k = 0..3: t0 + 2q, + 1, + 8, + 9 (the rows of its C fragments).
  auto token = [&](int k) { return t0 + 2 * q + (k & 1) + 8 * (k >> 1); };
  std::uint32_t xw[4][4], dw[4][4];
  bool ok[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    ok[k] = live && token(k) < end;
    const std::size_t off = ok[k] ? static_cast<std::size_t>(token(k)) * in + col : 0;
    const uint4 xv = ok[k] ? __ldcs(reinterpret_cast<const uint4*>(x + off)) : make_uint4(0u, 0u, 0u, 0u);
    const uint4 dv = ok[k] ? *reinterpret_cast<const uint4*>(dx + off) : make_uint4(0u, 0u, 0u, 0u);
    xw[k][0] = xv.x, xw[k][1] = xv.y, xw[k][2] = xv.z, xw[k][3] = xv.w;
    dw[k][0] = dv.x, dw[k][1] = dv.y, dw[k][2] = dv.z, dw[k][3] = dv.w;
  }
  // dxa's fragments; tokens past `end` are zero, so they add nothing to dA.
  std::uint32_t bx[2], bd[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int tr = t0 + 8 * h + g, tk = t0 + 8 * h + 2 * q;  // dx's n = token; dA's k = token pair
    bx[h] = tr < end ? load_pair(dxa + static_cast<std::size_t>(tr) * 8 + 2 * q) : 0u;
    const std::uint32_t lo = tk < end ? load_u16(dxa + static_cast<std::size_t>(tk) * 8 + g) : 0u;
    const std::uint32_t hi = tk + 1 < end ? load_u16(dxa + static_cast<std::size_t>(tk + 1) * 8 + g) : 0u;
    bd[h] = lo | (hi << 16);
  }
  // The mask (bit 8k + e: element e of token k kept) and the dropped input: 0 or bf16(x / (1 - p))
  // as dropped_input gives it, rounded once by the packing conversion (one instruction a pair
  // instead of two conversions an element). idx | e is idx + e: idx = t * in + col is a multiple
  // of 8, and the compiler then knows the high word does not change across the 8.
  std::uint32_t kept = 0, xd[4][4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const std::uint64_t idx = static_cast<std::uint64_t>(token(k)) * static_cast<std::uint64_t>(in) + col;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const bool d0 = dropped(seed, idx | (2 * j), p), d1 = dropped(seed, idx | (2 * j + 1), p);
      kept |= (d0 ? 0u : 1u) << (8 * k + 2 * j);
      kept |= (d1 ? 0u : 1u) << (8 * k + 2 * j + 1);
      xd[k][j] = pack_dropped(xw[k][j], d0, d1, keep);
    }
  }
  // dx += (dxa A) * mask / (1 - p): half h's sums are tokens 2h, 2h + 1 of the lane's four.
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      mma1688(s, af[j][0], af[j][1], bx[h]);
      // s: [0] (col 2j, token 2h), [1] (col 2j, token 2h + 1), [2]/[3] the same at col 2j + 1.
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const int k = 2 * h + u;
        const float m0 = (kept >> (8 * k + 2 * j)) & 1u ? keep : 0.0f;
        const float m1 = (kept >> (8 * k + 2 * j + 1)) & 1u ? keep : 0.0f;
        dw[k][j] = pack_bf16(bf16_lo(dw[k][j]) + m0 * s[u], bf16_hi(dw[k][j]) + m1 * s[2 + u]);
      }
    }
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (ok[k])
      *reinterpret_cast<uint4*>(dx + static_cast<std::size_t>(token(k)) * in + col) =
          make_uint4(dw[k][0], dw[k][1], dw[k][2], dw[k][3]);
  // dA^T += drop(x)^T dxa: the A fragment pairs tokens (2q, 2q + 1) and (2q + 8, 2q + 9) of a column.
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const std::uint32_t xa_frag[4] = {low_halves(xd[0][j], xd[1][j]), high_halves(xd[0][j], xd[1][j]),
                                      low_halves(xd[2][j], xd[3][j]), high_halves(xd[2][j], xd[3][j])};
    mma16816(acc[j], xa_frag, bd[0], bd[1]);
  }
}

// The grid holds as many warps as fit on the GPU at once, and each warp takes an equal share
// (to one step) of the (64-column strip, 16-token step) pairs, strip by strip, token-contiguous,
// so no shape leaves a last wave part-empty. A warp's dA^T sums stay in registers while it stays
// on a strip and go to dA with 16-byte vector reductions (4 a lane) when it leaves it. Measured
// against a grid of token slices x strips whose blocks met their warps' sums in shared memory
// (H200, T=2048): q_proj 19.4 / 21.4 us at 8 / 16 blocks an SM against 20.6 here, down_proj
// 88.5 / 82.7 against 82.0; kept for down_proj and for having no blocks-an-SM setting to tune.
// Staging x and dx through shared memory with cp.async (2 or 3 steps in flight a warp) was
// slower than loading them to registers (q_proj 25.3 against 20.5 us): the kernel is not waiting
// on bytes in flight.
__global__ void __launch_bounds__(kLoraBackMmaWarps * 32, 4)
    lora_dropout_backward_mma_kernel(bf16* __restrict__ dx, float* __restrict__ da, const bf16* __restrict__ dxa,
                                     const bf16* __restrict__ x, const bf16* __restrict__ a, int T, int in,
                                     const std::uint64_t* __restrict__ seed_ptr, float p) {
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, q = lane % 4;
  const WarpShare share = rank8_warp_share(T, in, kLoraBackMmaWarps);
  const int steps = share.steps, stop = share.end;
  int s = share.begin;
  const std::uint64_t seed = *seed_ptr;
  const float keep = 1.0f / (1.0f - p);
  while (s < stop) {
    const int strip = s / steps, last = min(stop, (strip + 1) * steps);
    const int col = strip * kLoraBackMmaCols + 8 * g;
    const bool live = col < in;  // in % 8 == 0: the lane's 8 columns are in or out whole
    std::uint32_t af[4][2];
    rank8_column_fragments(af, a, in, col, live, q);
    float acc[4][4] = {};
    for (; s < last; ++s)
      lora_back_mma_step(acc, af, dx, dxa, x, T, in, col, live, (s - strip * steps) * 16, g, q, seed, p, keep);
    if (live) {  // the lane's dA[2q][col..col+7] and dA[2q+1][col..col+7]
      float* r0 = da + static_cast<std::size_t>(2 * q) * in + col;
      float* r1 = r0 + in;
      red_add4(r0, acc[0][0], acc[0][2], acc[1][0], acc[1][2]);
      red_add4(r0 + 4, acc[2][0], acc[2][2], acc[3][0], acc[3][2]);
      red_add4(r1, acc[0][1], acc[0][3], acc[1][1], acc[1][3]);
      red_add4(r1 + 4, acc[2][1], acc[2][3], acc[3][1], acc[3][3]);
    }
  }
}

}  // namespace peft::cuda::detail
