// LoRA dropout on tensor cores: lora_dropout.cuh's two passes at padded ranks 8 G (G = 1..8 groups
// of 8 ranks; written and measured first at rank 8, G = 1, whose code paths stay as they were) on mma.sync
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
__device__ inline uint2 load_quad(const bf16* p) { return *reinterpret_cast<const uint2*>(p); }

// Ranks 8G (G rank groups of 8, padded ranks 8..64): one mma a group a step on the same dropped
// input, so the mask, the loads of x and the packing (the kernel's cost) are paid once whatever G.
// Above rank 8 a lane reads 4 adjacent columns of x and of each of A's rows (one 8-byte load, 2 G + 2
// a step instead of 4 G + 4): the 16 columns of a step are the mma's k in any order both operands
// agree on, so lane q's k pairs (2q, 2q + 1) and (2q + 8, 2q + 9) are columns 4q..4q+3. Rank 8 keeps
// its measured layout. The warps' sums meet in shared memory a few groups at a time (at most 48 KB
// a round: 16 warps x 16 tokens x 8 ranks x 4 bytes = 8 KB a group and tile) to stay within the
// static limit.
// Every block reads all of A, for its 16 tokens: at rank 64 that is 4 times the x it reads (8
// loads of A a lane a step against 2 of x), and down_proj took 108 us against rank 8's 53. So from
// G = 5 (kLoraDownTiles) a block is TT = 2 tiles of 16 tokens whose mmas share each load of A, and
// the row is split in two (lora_down_splits) to keep the blocks filling the SMs (H200, T=2048):
// rank 64 q_proj 28.6 -> 24.2 us, down_proj 106 -> 79-81; rank 48 95.9 -> 74.2, rank 40 down_proj
// 175 -> 71 (q_proj 28.6 -> 21.6). Not at rank 32 (q_proj 21.6 -> 20.5 us but down_proj 73 -> 82),
// nor more loads in flight at TT = 2 (unrolled 4 / 2 at G = 4 / 5 and up: down_proj rank 64 81 ->
// 90 us).
template <int G>
constexpr int kLoraDownTiles = G >= 5 ? 2 : 1;
template <int G, int TT = 1>
__global__ void __launch_bounds__(kLoraMmaWarps * 32)
    lora_down_dropout_mma_kernel(bf16* __restrict__ xa, float* __restrict__ split_part, const bf16* __restrict__ x,
                                 const bf16* __restrict__ a, int T, int in, int k_chunk,
                                 const std::uint64_t* __restrict__ seed_ptr, float p) {
  static_assert(TT == 1 || G > 1, "rank 8 keeps its one tile a block");
  constexpr int kRp = 8 * G;
  constexpr int kRound = TT == 1 ? (G <= 5 ? G : (G + 1) / 2) : 3;  // groups reduced a round
  constexpr int kUnroll = TT == 1 ? (G <= 4 ? 4 : 2) : 1;           // loads in flight within 128 registers
  __shared__ float part[kLoraMmaWarps][16 * TT][8 * kRound];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, q = lane % 4;  // fragment row (token) and column pair
  const int t_base = static_cast<int>(blockIdx.x) * 16 * TT;
  const bf16 *x_lo[TT], *x_hi[TT];
  bool ok_lo[TT], ok_hi[TT];
  std::uint64_t row_lo[TT], row_hi[TT];
#pragma unroll
  for (int i = 0; i < TT; ++i) {
    const int t_lo = t_base + 16 * i + g, t_hi = t_lo + 8;
    ok_lo[i] = t_lo < T, ok_hi[i] = t_hi < T;
    x_lo[i] = x + static_cast<std::size_t>(ok_lo[i] ? t_lo : 0) * in;
    x_hi[i] = x + static_cast<std::size_t>(ok_hi[i] ? t_hi : 0) * in;
    row_lo[i] = static_cast<std::uint64_t>(t_lo) * in, row_hi[i] = static_cast<std::uint64_t>(t_hi) * in;
  }
  const bf16* a_row = a + static_cast<std::size_t>(g) * in;  // B fragment column n = g: rank 8 m + g of group m
  const std::uint64_t seed = *seed_ptr;
  const float keep = 1.0f / (1.0f - p);
  float c[TT][G][4];
#pragma unroll
  for (int i = 0; i < TT; ++i)
#pragma unroll
    for (int m = 0; m < G; ++m) c[i][m][0] = c[i][m][1] = c[i][m][2] = c[i][m][3] = 0.0f;
  const int k0 = static_cast<int>(blockIdx.y) * k_chunk, k1 = min(in, k0 + k_chunk);  // k_chunk % 16 == 0
#pragma unroll kUnroll
  for (int k = k0 + warp * 16; k < k1; k += kLoraMmaWarps * 16) {
    if constexpr (G == 1) {
      const int c0 = k + 2 * q, c1 = c0 + 8;  // in is a multiple of 8: a pair is in or out whole
      const bool in0 = c0 < in, in1 = c1 < in;
      const std::uint32_t x00 = ok_lo[0] && in0 ? load_pair(x_lo[0] + c0) : 0u,
                          x10 = ok_hi[0] && in0 ? load_pair(x_hi[0] + c0) : 0u,
                          x01 = ok_lo[0] && in1 ? load_pair(x_lo[0] + c1) : 0u,
                          x11 = ok_hi[0] && in1 ? load_pair(x_hi[0] + c1) : 0u;
      const std::uint32_t b0 = in0 ? load_pair(a_row + c0) : 0u, b1 = in1 ? load_pair(a_row + c1) : 0u;
      const std::uint32_t af[4] = {drop_pair(x00, row_lo[0] + c0, seed, p, keep), drop_pair(x10, row_hi[0] + c0, seed, p, keep),
                                   drop_pair(x01, row_lo[0] + c1, seed, p, keep), drop_pair(x11, row_hi[0] + c1, seed, p, keep)};
      mma16816(c[0][0], af, b0, b1);
    } else {
      const int c0 = k + 4 * q;  // in % 8 == 0: the 4 columns are in or out whole
      const bool in0 = c0 < in;
      std::uint32_t af[TT][4];
#pragma unroll
      for (int i = 0; i < TT; ++i) {
        const uint2 xl = ok_lo[i] && in0 ? load_quad(x_lo[i] + c0) : make_uint2(0u, 0u);
        const uint2 xh = ok_hi[i] && in0 ? load_quad(x_hi[i] + c0) : make_uint2(0u, 0u);
        af[i][0] = drop_pair(xl.x, row_lo[i] + c0, seed, p, keep), af[i][1] = drop_pair(xh.x, row_hi[i] + c0, seed, p, keep);
        af[i][2] = drop_pair(xl.y, row_lo[i] + c0 + 2, seed, p, keep);
        af[i][3] = drop_pair(xh.y, row_hi[i] + c0 + 2, seed, p, keep);
      }
#pragma unroll
      for (int m = 0; m < G; ++m) {
        const uint2 b = in0 ? load_quad(a_row + static_cast<std::size_t>(8 * m) * in + c0) : make_uint2(0u, 0u);
#pragma unroll
        for (int i = 0; i < TT; ++i) mma16816(c[i][m], af[i], b.x, b.y);
      }
    }
  }
#pragma unroll
  for (int m0 = 0; m0 < G; m0 += kRound) {
    if (m0 > 0) __syncthreads();  // the last round's readers are done with `part`
#pragma unroll
    for (int i = 0; i < TT; ++i)
#pragma unroll
      for (int h = 0; h < kRound; ++h)
        if (m0 + h < G) {
          part[warp][16 * i + g][8 * h + 2 * q] = c[i][m0 + h][0];
          part[warp][16 * i + g][8 * h + 2 * q + 1] = c[i][m0 + h][1];
          part[warp][16 * i + g + 8][8 * h + 2 * q] = c[i][m0 + h][2];
          part[warp][16 * i + g + 8][8 * h + 2 * q + 1] = c[i][m0 + h][3];
        }
    __syncthreads();
    for (int e = static_cast<int>(threadIdx.x); e < 16 * TT * 8 * kRound; e += kLoraMmaWarps * 32) {
      const int row = e / (8 * kRound), col = e % (8 * kRound), r = 8 * m0 + col, t = t_base + row;
      if (t >= T || r >= kRp) continue;
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kLoraMmaWarps; ++w) v += part[w][row][col];
      if (split_part)
        split_part[(static_cast<std::size_t>(blockIdx.y) * T + t) * kRp + r] = v;
      else
        xa[static_cast<std::size_t>(t) * kRp + r] = to_bf16(v);
    }
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

// A backward step's x and dx at the lane's 4 tokens (t0 + 2q, + 1, + 8, + 9) and 8 columns, one
// 16-byte load each; tokens at or past `end` and columns past `in` (!live) read as zeros.
__device__ __forceinline__ void load_x_dx(std::uint32_t (&xw)[4][4], std::uint32_t (&dw)[4][4], bool (&ok)[4],
                                          const bf16* __restrict__ dx, const bf16* __restrict__ x, int end, int in,
                                          int col, bool live, int t0, int q) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int t = t0 + 2 * q + (k & 1) + 8 * (k >> 1);
    ok[k] = live && t < end;
    const std::size_t off = ok[k] ? static_cast<std::size_t>(t) * in + col : 0;
    const uint4 xv = ok[k] ? __ldcs(reinterpret_cast<const uint4*>(x + off)) : make_uint4(0u, 0u, 0u, 0u);
    const uint4 dv = ok[k] ? *reinterpret_cast<const uint4*>(dx + off) : make_uint4(0u, 0u, 0u, 0u);
    xw[k][0] = xv.x, xw[k][1] = xv.y, xw[k][2] = xv.z, xw[k][3] = xv.w;
    dw[k][0] = dv.x, dw[k][1] = dv.y, dw[k][2] = dv.z, dw[k][3] = dv.w;
  }
}
// dx's words back at the lane's C (8 or 4) columns of its ok tokens.
template <int C = 8>
__device__ __forceinline__ void store_dx(bf16* __restrict__ dx, const std::uint32_t (&dw)[4][C / 2], const bool (&ok)[4],
                                         int in, int col, int t0, int q) {
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (ok[k]) {
      bf16* p = dx + static_cast<std::size_t>(t0 + 2 * q + (k & 1) + 8 * (k >> 1)) * in + col;
      if constexpr (C == 8)
        *reinterpret_cast<uint4*>(p) = make_uint4(dw[k][0], dw[k][1], dw[k][2], dw[k][3]);
      else
        *reinterpret_cast<uint2*>(p) = make_uint2(dw[k][0], dw[k][1]);
    }
}

// The mask of a step's lane (bit 8k + e: element e of token k kept) and the dropped input: 0 or
// bf16(x / (1 - p)) as dropped_input gives it, rounded once by the packing conversion (one
// instruction a pair instead of two conversions an element). idx | e is idx + e: idx = t * in +
// col is a multiple of C (in % 8 == 0), and the compiler then knows the high word does not change
// across the C.
template <int C = 8>
__device__ __forceinline__ std::uint32_t drop_mask(std::uint32_t (&xd)[4][C / 2], const std::uint32_t (&xw)[4][C / 2],
                                                   std::uint64_t seed, float p, float keep, int in, int col, int t0,
                                                   int q) {
  std::uint32_t kept = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int t = t0 + 2 * q + (k & 1) + 8 * (k >> 1);
    const std::uint64_t idx = static_cast<std::uint64_t>(t) * static_cast<std::uint64_t>(in) + col;
#pragma unroll
    for (int j = 0; j < C / 2; ++j) {
      const bool d0 = dropped(seed, idx | (2 * j), p), d1 = dropped(seed, idx | (2 * j + 1), p);
      kept |= (d0 ? 0u : 1u) << (8 * k + 2 * j);
      kept |= (d1 ? 0u : 1u) << (8 * k + 2 * j + 1);
      xd[k][j] = pack_dropped(xw[k][j], d0, d1, keep);
    }
  }
  return kept;
}

// dx's words += the LoRA term s (masked, times 1 / (1 - p)) of tile j and 8-token half h: s[0]
// (col 2j, token 2h), [1] (col 2j, token 2h + 1), [2]/[3] the same at col 2j + 1, tokens 2h and
// 2h + 1 being the lane's k = 2h, 2h + 1.
template <int C = 8>
__device__ __forceinline__ void add_masked_term(std::uint32_t (&dw)[4][C / 2], std::uint32_t kept, float keep, int h, int j,
                                                const float (&s)[4]) {
#pragma unroll
  for (int u = 0; u < 2; ++u) {
    const int k = 2 * h + u;
    const float m0 = (kept >> (8 * k + 2 * j)) & 1u ? keep : 0.0f;
    const float m1 = (kept >> (8 * k + 2 * j + 1)) & 1u ? keep : 0.0f;
    dw[k][j] = pack_bf16(bf16_lo(dw[k][j]) + m0 * s[u], bf16_hi(dw[k][j]) + m1 * s[2 + u]);
  }
}

// One 16-token step from t0 over the lane's 8 columns: dx += its LoRA term, acc (dA^T, tile j:
// [0] dA[2q][col+2j], [1] dA[2q+1][col+2j], [2]/[3] the same at col+2j+1) += drop(x)^T dxa.
// Tokens at or past `end`, and columns past `in` (!live), read as zeros and are not written.
__device__ __forceinline__ void lora_back_mma_step(float (&acc)[4][4], const std::uint32_t (&af)[4][2],
                                                   bf16* __restrict__ dx, const bf16* __restrict__ dxa,
                                                   const bf16* __restrict__ x, int end, int in, int col, bool live,
                                                   int t0, int g, int q, std::uint64_t seed, float p, float keep) {
  // The lane's tokens k = 0..3: t0 + 2q, + 1, + 8, + 9 (the rows of its C fragments).
  std::uint32_t xw[4][4], dw[4][4];
  bool ok[4];
  load_x_dx(xw, dw, ok, dx, x, end, in, col, live, t0, q);
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
  std::uint32_t xd[4][4];
  const std::uint32_t kept = drop_mask(xd, xw, seed, p, keep, in, col, t0, q);
  // dx += (dxa A) * mask / (1 - p): half h's sums are tokens 2h, 2h + 1 of the lane's four.
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      mma1688(s, af[j][0], af[j][1], bx[h]);
      add_masked_term(dw, kept, keep, h, j, s);
    }
  store_dx(dx, dw, ok, in, col, t0, q);
  // dA^T += drop(x)^T dxa: the A fragment pairs tokens (2q, 2q + 1) and (2q + 8, 2q + 9) of a column.
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const std::uint32_t xa_frag[4] = {low_halves(xd[0][j], xd[1][j]), high_halves(xd[0][j], xd[1][j]),
                                      low_halves(xd[2][j], xd[3][j]), high_halves(xd[2][j], xd[3][j])};
    mma16816(acc[j], xa_frag, bd[0], bd[1]);
  }
}

// From rank 32 (LoraBackRanks) a lane owns 4 columns and its x and dx come through shared memory:
// each lane copies its own 4 tokens x 4 columns of a step with cp.async kLoraBackStages - 1 steps
// ahead and reads them back itself (no barrier, no bank conflicts), so the bytes in flight do not
// cost registers. A warp's ring: [stages][x, dx][4 tokens][32 lanes] of 8 bytes, 2 KB a stage.
constexpr int kLoraBackStages = 4;
constexpr int kLoraBackStageBytes = 2 * 4 * 32 * 8;
// The x and dx of pair `pair` (when pair < stop; zeros past T or `in`) into stage `st` of the ring,
// one commit group whether or not.
__device__ __forceinline__ void stage_pair(std::uint8_t* ring, int st, int pair, int stop, int steps,
                                           const bf16* __restrict__ dx, const bf16* __restrict__ x, int T, int in,
                                           int lane, int lane_col) {
  if (pair < stop) {
    const int strip = pair / steps, t0 = (pair - strip * steps) * 16, col = strip * kRank8StripCols + lane_col;
    const bool live = col < in;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int t = t0 + 2 * (lane % 4) + (k & 1) + 8 * (k >> 1);
      const bool ok = live && t < T;
      const std::size_t off = ok ? static_cast<std::size_t>(t) * in + col : 0;
      std::uint8_t* dst = ring + st * kLoraBackStageBytes + (k * 32 + lane) * 8;
      asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr(dst)), "l"(x + off), "r"(ok ? 8 : 0));
      asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr(dst + 4 * 32 * 8)), "l"(dx + off),
                   "r"(ok ? 8 : 0));
    }
  }
  cp_async_commit();
}

// Above rank 8 (G rank groups) every product runs once a group on the same registers of x, dx and
// the mask, so the mask and the bytes are paid once whatever G. Ranks are labels too: lane q's k
// pair of group m is ranks 2Gq + 2m and + 1 (2q, 2q + 1 at G = 1), so its dxa words of a token are
// 2G adjacent bf16 (one or two vector loads for all groups, not 2G scalar ones), and dA's operand
// (dxa^T, k = token pair) is that fragment transposed by movmatrix instead of 4 G 2-byte loads.
// dx's term adds two groups a m16n8k16 (k = 16 ranks). What a lane keeps a strip is 2 C G registers
// of dA^T sums and C G of A's fragments (C columns a lane).
// At 8 columns a lane that outgrew the registers from G = 4 (ptxas -v, sm_90a, CUDA 13.0, registers
// and spill stores / loads in bytes: G 4 232 0/0, 6 254 0/0, 8 255 168/224 with A reloaded every
// step from L1 instead of held), 2 blocks of 4 warps an SM, so few bytes in flight: H200, T=2048,
// rank 64 q_proj 42.3 us, down_proj 164.8 (rank 8: 21.3, 82.8). So from G = 4 a lane owns 4
// columns (a warp 32, two warps of a block take a 64-column strip's steps together, so a row's
// 128 bytes are read at about the same time) with x and dx staged (stage_pair): rank 64 q_proj
// 42.3 -> 30.0 us, down_proj 164.8 -> 127.4, rank 32 23.4 -> 21.9 and 101.4 -> 94.6. Tried: 4
// columns without staging (down_proj rank 32 133.5 us, 160.9 with the warp pairs), 8 columns
// staged (4 stages: rank 64 168.7, rank 32 107.0; the spills grew), 8 stages at 4 columns
// (down_proj rank 64 135.5), 4 columns at G = 2 (down_proj rank 16 95 -> 118 us).
// ptxas -v now: G 2 168 0/0, 3 168 0/0 (rank 8's own: 128 24/40); staged 4 156 0/0, 5 163 0/0,
// 6 168 12/24, 7 168 28/28, 8 168 44/68.
template <int G>
struct LoraBackRanks {
  static constexpr int kCols = G >= 4 ? 4 : 8;                // columns a lane
  static constexpr int kTeam = 8 / kCols;                     // warps sharing a 64-column strip
  static constexpr int kStages = G >= 4 ? kLoraBackStages : 0;  // x and dx staged in shared memory
  static constexpr int kMinBlocks = G == 1 ? 4 : 3;           // 128 / 168 registers a thread
  static constexpr int kSmemBytes = kStages * kLoraBackStageBytes * kLoraBackMmaWarps;
  static_assert(kSmemBytes <= 48 * 1024, "no opt-in shared memory");
};

// One 16-token step from t0 over the lane's C columns: dx += its LoRA term, acc (dA^T of group m,
// tile j: [0] dA[r][col+2j], [1] dA[r+1][col+2j], [2]/[3] the same at col+2j+1, r = 2Gq + 2m)
// += drop(x)^T dxa, af A^T's fragments. x and dx come from `stage` (the lane's stage of the ring)
// when staged. Tokens at or past `end`, and columns past `in` (!live), read as zeros and are not
// written.
template <int G>
__device__ __forceinline__ void lora_back_mma_step_groups(float (&acc)[G][LoraBackRanks<G>::kCols / 2][4],
                                                          const std::uint32_t (&af)[G][LoraBackRanks<G>::kCols / 2][2],
                                                          const std::uint8_t* stage, bf16* __restrict__ dx,
                                                          const bf16* __restrict__ dxa, const bf16* __restrict__ x,
                                                          int end, int in, int col, bool live, int t0, int g, int q,
                                                          std::uint64_t seed, float p, float keep) {
  constexpr int C = LoraBackRanks<G>::kCols, kTiles = C / 2;
  // The lane's tokens k = 0..3: t0 + 2q, + 1, + 8, + 9 (the rows of its C fragments).
  std::uint32_t xw[4][kTiles], dw[4][kTiles];
  bool ok[4];
  if constexpr (LoraBackRanks<G>::kStages > 0) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      ok[k] = live && t0 + 2 * q + (k & 1) + 8 * (k >> 1) < end;
      const uint2 xv = *reinterpret_cast<const uint2*>(stage + (k * 32 + 4 * g + q) * 8);
      const uint2 dv = *reinterpret_cast<const uint2*>(stage + ((4 + k) * 32 + 4 * g + q) * 8);
      xw[k][0] = xv.x, xw[k][1] = xv.y, dw[k][0] = dv.x, dw[k][1] = dv.y;
    }
  } else {
    load_x_dx(xw, dw, ok, dx, x, end, in, col, live, t0, q);
  }
  // dxa's fragments, bx[h][m] for dx's term (n = token) and bd[h][m] for dA's (k = token pair);
  // tokens past `end` are zero, so they add nothing to dA.
  std::uint32_t bx[2][G], bd[2][G];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int tr = t0 + 8 * h + g;
    load_words<G>(bx[h], dxa + static_cast<std::size_t>(tr) * (8 * G) + 2 * G * q, tr < end);
#pragma unroll
    for (int m = 0; m < G; ++m) bd[h][m] = transpose8x8(bx[h][m]);  // n = g: rank 2G (g / 2) + 2m + g % 2
  }
  std::uint32_t xd[4][kTiles];
  const std::uint32_t kept = drop_mask<C>(xd, xw, seed, p, keep, in, col, t0, q);
  // dx += (dxa A) * mask / (1 - p), dx's term s summed over the groups, one tile's sums at a time:
  // s[0] (col 2j, token 2h), [1] (col 2j, token 2h + 1), [2]/[3] the same at col 2j + 1; half h's
  // sums are tokens 2h, 2h + 1 of the lane's four.
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int j = 0; j < kTiles; ++j) {
      float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int m = 0; m + 1 < G; m += 2) {
        const std::uint32_t a4[4] = {af[m][j][0], af[m][j][1], af[m + 1][j][0], af[m + 1][j][1]};
        mma16816(s, a4, bx[h][m], bx[h][m + 1]);
      }
      if constexpr (G % 2 == 1) mma1688(s, af[G - 1][j][0], af[G - 1][j][1], bx[h][G - 1]);
      add_masked_term<C>(dw, kept, keep, h, j, s);
    }
  store_dx<C>(dx, dw, ok, in, col, t0, q);
  // dA^T += drop(x)^T dxa: the A fragment pairs tokens (2q, 2q + 1) and (2q + 8, 2q + 9) of a column.
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
    const std::uint32_t xa_frag[4] = {low_halves(xd[0][j], xd[1][j]), high_halves(xd[0][j], xd[1][j]),
                                      low_halves(xd[2][j], xd[3][j]), high_halves(xd[2][j], xd[3][j])};
#pragma unroll
    for (int m = 0; m < G; ++m) mma16816(acc[m][j], xa_frag, bd[0][m], bd[1][m]);
  }
}

// The grid holds as many warps as fit on the GPU at once, and each warp (or team of warps) takes
// an equal share (to one step) of the (64-column strip, 16-token step) pairs, strip by strip,
// token-contiguous, so no shape leaves a last wave part-empty. A warp's dA^T sums stay in registers
// while it stays on a strip and go to dA with 16-byte vector reductions (4 a lane and rank pair)
// when it leaves it. Measured at rank 8 against a grid of token slices x strips whose blocks met
// their warps' sums in shared memory (H200, T=2048): q_proj 19.4 / 21.4 us at 8 / 16 blocks an SM
// against 20.6 here, down_proj 88.5 / 82.7 against 82.0; kept for down_proj and for having no
// blocks-an-SM setting to tune. At rank 8, staging x and dx through shared memory with cp.async
// (2 or 3 steps in flight a warp) was slower than loading them to registers (q_proj 25.3 against
// 20.5 us): the kernel is not waiting on bytes in flight there (from rank 32 it is: LoraBackRanks).
// Launched with LoraBackRanks<G>::kSmemBytes of dynamic shared memory.
template <int G>
__global__ void __launch_bounds__(kLoraBackMmaWarps * 32, LoraBackRanks<G>::kMinBlocks)
    lora_dropout_backward_mma_kernel(bf16* __restrict__ dx, float* __restrict__ da, const bf16* __restrict__ dxa,
                                     const bf16* __restrict__ x, const bf16* __restrict__ a, int T, int in,
                                     const std::uint64_t* __restrict__ seed_ptr, float p) {
  using R = LoraBackRanks<G>;
  constexpr int C = R::kCols, kTiles = C / 2, S = R::kStages;
  extern __shared__ __align__(16) std::uint8_t staged_x_dx[];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4,
            q = lane % 4;
  const int lane_col = warp % R::kTeam * 8 * C + C * g;  // the lane's columns within a strip
  const WarpShare share = rank8_warp_share(T, in, kLoraBackMmaWarps, R::kTeam);
  const int steps = share.steps, stop = share.end;
  int s = share.begin;
  const std::uint64_t seed = *seed_ptr;
  const float keep = 1.0f / (1.0f - p);
  std::uint8_t* ring = staged_x_dx + warp * S * kLoraBackStageBytes;
  if constexpr (S > 0) {
#pragma unroll
    for (int i = 0; i + 1 < S; ++i) stage_pair(ring, i, share.begin + i, stop, steps, dx, x, T, in, lane, lane_col);
  }
  while (s < stop) {
    const int strip = s / steps, last = min(stop, (strip + 1) * steps);
    const int col = strip * kRank8StripCols + lane_col;
    const bool live = col < in;  // in % 8 == 0: the lane's C columns are in or out whole
    std::uint32_t af[G][kTiles][2];
    if constexpr (G == 1) {
      rank8_column_fragments(af[0], a, in, col, live, q);
    } else {
      const bf16* a_lane = a + static_cast<std::size_t>(2 * G * q) * in + col;  // rank 2Gq at the lane's column
#pragma unroll
      for (int m = 0; m < G; ++m) rank_pair_fragments<C>(af[m], a_lane + static_cast<std::size_t>(2 * m) * in, in, live);
    }
    float acc[G][kTiles][4] = {};
    for (; s < last; ++s) {
      const int t0 = (s - strip * steps) * 16;
      if constexpr (G == 1) {
        lora_back_mma_step(acc[0], af[0], dx, dxa, x, T, in, col, live, t0, g, q, seed, p, keep);
      } else if constexpr (S == 0) {
        lora_back_mma_step_groups<G>(acc, af, nullptr, dx, dxa, x, T, in, col, live, t0, g, q, seed, p, keep);
      } else {
        stage_pair(ring, (s + S - 1 - share.begin) % S, s + S - 1, stop, steps, dx, x, T, in, lane, lane_col);
        cp_async_wait<S - 1>();  // pair s's copies (this lane's own) have landed
        lora_back_mma_step_groups<G>(acc, af, ring + (s - share.begin) % S * kLoraBackStageBytes, dx, dxa, x, T, in,
                                     col, live, t0, g, q, seed, p, keep);
      }
    }
    if (!live) continue;
    if constexpr (G == 1) {  // the lane's dA[2q][col..col+7] and dA[2q+1][col..col+7]
      float* r0 = da + static_cast<std::size_t>(2 * q) * in + col;
      float* r1 = r0 + in;
      red_add4(r0, acc[0][0][0], acc[0][0][2], acc[0][1][0], acc[0][1][2]);
      red_add4(r0 + 4, acc[0][2][0], acc[0][2][2], acc[0][3][0], acc[0][3][2]);
      red_add4(r1, acc[0][0][1], acc[0][0][3], acc[0][1][1], acc[0][1][3]);
      red_add4(r1 + 4, acc[0][2][1], acc[0][2][3], acc[0][3][1], acc[0][3][3]);
    } else {  // the lane's dA[r][col..col+C-1], r = 2Gq + 2m + e
#pragma unroll
      for (int m = 0; m < G; ++m)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float* r = da + static_cast<std::size_t>(2 * G * q + 2 * m + e) * in + col;
#pragma unroll
          for (int j = 0; j < kTiles; j += 2)
            red_add4(r + 2 * j, acc[m][j][e], acc[m][j][2 + e], acc[m][j + 1][e], acc[m][j + 1][2 + e]);
        }
    }
  }
}

}  // namespace peft::cuda::detail
