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
// its measured layout. The warps' sums meet in shared memory a few groups at a time (at most 5 x 8 KB
// a round: 16 warps x 16 tokens x 8 ranks x 4 bytes a group) to stay within the 48 KB static limit.
template <int G>
__global__ void __launch_bounds__(kLoraMmaWarps * 32)
    lora_down_dropout_mma_kernel(bf16* __restrict__ xa, float* __restrict__ split_part, const bf16* __restrict__ x,
                                 const bf16* __restrict__ a, int T, int in, int k_chunk,
                                 const std::uint64_t* __restrict__ seed_ptr, float p) {
  constexpr int kRp = 8 * G, kRound = G <= 5 ? G : (G + 1) / 2;  // rank groups reduced a round
  constexpr int kUnroll = G <= 4 ? 4 : 2;                        // loads in flight within 128 registers
  __shared__ float part[kLoraMmaWarps][16][8 * kRound];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, q = lane % 4;  // fragment row (token) and column pair
  const int t_lo = static_cast<int>(blockIdx.x) * 16 + g, t_hi = t_lo + 8;
  const bool ok_lo = t_lo < T, ok_hi = t_hi < T;
  const bf16* x_lo = x + static_cast<std::size_t>(ok_lo ? t_lo : 0) * in;
  const bf16* x_hi = x + static_cast<std::size_t>(ok_hi ? t_hi : 0) * in;
  const bf16* a_row = a + static_cast<std::size_t>(g) * in;  // B fragment column n = g: rank 8 m + g of group m
  const std::uint64_t seed = *seed_ptr;
  const float keep = 1.0f / (1.0f - p);
  const std::uint64_t row_lo = static_cast<std::uint64_t>(t_lo) * in, row_hi = static_cast<std::uint64_t>(t_hi) * in;
  float c[G][4];
#pragma unroll
  for (int m = 0; m < G; ++m) c[m][0] = c[m][1] = c[m][2] = c[m][3] = 0.0f;
  const int k0 = static_cast<int>(blockIdx.y) * k_chunk, k1 = min(in, k0 + k_chunk);  // k_chunk % 16 == 0
#pragma unroll kUnroll
  for (int k = k0 + warp * 16; k < k1; k += kLoraMmaWarps * 16) {
    if constexpr (G == 1) {
      const int c0 = k + 2 * q, c1 = c0 + 8;  // in is a multiple of 8: a pair is in or out whole
      const bool in0 = c0 < in, in1 = c1 < in;
      const std::uint32_t x00 = ok_lo && in0 ? load_pair(x_lo + c0) : 0u, x10 = ok_hi && in0 ? load_pair(x_hi + c0) : 0u,
                          x01 = ok_lo && in1 ? load_pair(x_lo + c1) : 0u, x11 = ok_hi && in1 ? load_pair(x_hi + c1) : 0u;
      const std::uint32_t b0 = in0 ? load_pair(a_row + c0) : 0u, b1 = in1 ? load_pair(a_row + c1) : 0u;
      const std::uint32_t af[4] = {drop_pair(x00, row_lo + c0, seed, p, keep), drop_pair(x10, row_hi + c0, seed, p, keep),
                                   drop_pair(x01, row_lo + c1, seed, p, keep), drop_pair(x11, row_hi + c1, seed, p, keep)};
      mma16816(c[0], af, b0, b1);
    } else {
      const int c0 = k + 4 * q;  // in % 8 == 0: the 4 columns are in or out whole
      const bool in0 = c0 < in;
      const uint2 xl = ok_lo && in0 ? load_quad(x_lo + c0) : make_uint2(0u, 0u);
      const uint2 xh = ok_hi && in0 ? load_quad(x_hi + c0) : make_uint2(0u, 0u);
      const std::uint32_t af[4] = {drop_pair(xl.x, row_lo + c0, seed, p, keep), drop_pair(xh.x, row_hi + c0, seed, p, keep),
                                   drop_pair(xl.y, row_lo + c0 + 2, seed, p, keep),
                                   drop_pair(xh.y, row_hi + c0 + 2, seed, p, keep)};
#pragma unroll
      for (int m = 0; m < G; ++m) {
        const uint2 b = in0 ? load_quad(a_row + static_cast<std::size_t>(8 * m) * in + c0) : make_uint2(0u, 0u);
        mma16816(c[m], af, b.x, b.y);
      }
    }
  }
  const int t_base = static_cast<int>(blockIdx.x) * 16;
#pragma unroll
  for (int m0 = 0; m0 < G; m0 += kRound) {
    if (m0 > 0) __syncthreads();  // the last round's readers are done with `part`
#pragma unroll
    for (int h = 0; h < kRound; ++h)
      if (m0 + h < G) {
        part[warp][g][8 * h + 2 * q] = c[m0 + h][0];
        part[warp][g][8 * h + 2 * q + 1] = c[m0 + h][1];
        part[warp][g + 8][8 * h + 2 * q] = c[m0 + h][2];
        part[warp][g + 8][8 * h + 2 * q + 1] = c[m0 + h][3];
      }
    __syncthreads();
    for (int i = static_cast<int>(threadIdx.x); i < 16 * 8 * kRound; i += kLoraMmaWarps * 32) {
      const int row = i / (8 * kRound), col = i % (8 * kRound), r = 8 * m0 + col, t = t_base + row;
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
constexpr int kLoraBackMmaCols = kRank8StripCols;

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
__device__ __forceinline__ void store_dx(bf16* __restrict__ dx, const std::uint32_t (&dw)[4][4], const bool (&ok)[4],
                                         int in, int col, int t0, int q) {
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (ok[k])
      *reinterpret_cast<uint4*>(dx + static_cast<std::size_t>(t0 + 2 * q + (k & 1) + 8 * (k >> 1)) * in + col) =
          make_uint4(dw[k][0], dw[k][1], dw[k][2], dw[k][3]);
}

// The mask of a step's lane (bit 8k + e: element e of token k kept) and the dropped input: 0 or
// bf16(x / (1 - p)) as dropped_input gives it, rounded once by the packing conversion (one
// instruction a pair instead of two conversions an element). idx | e is idx + e: idx = t * in +
// col is a multiple of 8, and the compiler then knows the high word does not change across the 8.
__device__ __forceinline__ std::uint32_t drop_mask(std::uint32_t (&xd)[4][4], const std::uint32_t (&xw)[4][4],
                                                   std::uint64_t seed, float p, float keep, int in, int col, int t0,
                                                   int q) {
  std::uint32_t kept = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int t = t0 + 2 * q + (k & 1) + 8 * (k >> 1);
    const std::uint64_t idx = static_cast<std::uint64_t>(t) * static_cast<std::uint64_t>(in) + col;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
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
__device__ __forceinline__ void add_masked_term(std::uint32_t (&dw)[4][4], std::uint32_t kept, float keep, int h, int j,
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

// Above rank 8 (G rank groups) every product runs once a group on the same registers of x, dx and
// the mask, so the mask and the bytes are paid once whatever G. Ranks are labels too: lane q's k
// pair of group m is ranks 2Gq + 2m and + 1 (2q, 2q + 1 at G = 1), so its dxa words of a token are
// 2G adjacent bf16 (one or two vector loads for all groups, not 2G scalar ones), and dA's operand
// (dxa^T, k = token pair) is that fragment transposed by movmatrix instead of 4 G 2-byte loads.
// dx's term adds two groups a m16n8k16 (k = 16 ranks). What a lane keeps a strip is 16 G registers
// of dA^T sums and 8 G of A's fragments: LoraBackRanks says per G whether A's fragments are held or
// reloaded every step (2 G 16-byte loads, L1 hits: the strip's A is 1 KB a group) and how many
// blocks an SM __launch_bounds__ keeps registers for. ptxas -v (sm_90a, CUDA 13.0), registers and
// spill stores / loads in bytes, plain pass: G 2 168 0/0, 3 168 28/36 (rank 8's own: 128 28/36),
// 4 232 0/0, 5 247 0/0, 6 254 0/0, 7 255 48/64, 8 255 168/224 (A reloaded; held: 220/248).
template <int G>
struct LoraBackRanks {
  static constexpr bool kHoldA = G <= 7;                // at 8 holding spilled more (220 / 248 bytes)
  static constexpr int kMinBlocks = G <= 3 ? 3 : 2;     // 168 / 255 registers a thread
};
template <int G>
constexpr int kLoraBackMinBlocks = G == 1 ? 4 : LoraBackRanks<G>::kMinBlocks;  // rank 8: 128 registers

// One 16-token step from t0 over the lane's 8 columns: dx += its LoRA term, acc (dA^T of group m,
// tile j: [0] dA[r][col+2j], [1] dA[r+1][col+2j], [2]/[3] the same at col+2j+1, r = 2Gq + 2m)
// += drop(x)^T dxa. A's fragments are `held` (LoraBackRanks::kHoldA) or loaded from `a_lane` (rank
// 2Gq at the lane's column). Tokens at or past `end`, and columns past `in` (!live), read as zeros
// and are not written.
template <int G>
__device__ __forceinline__ void lora_back_mma_step_groups(float (&acc)[G][4][4], const std::uint32_t (&held)[G][4][2],
                                                   const bf16* __restrict__ a_lane, bf16* __restrict__ dx,
                                                   const bf16* __restrict__ dxa, const bf16* __restrict__ x, int end,
                                                   int in, int col, bool live, int t0, int g, int q,
                                                   std::uint64_t seed, float p, float keep) {
  // The lane's tokens k = 0..3: t0 + 2q, + 1, + 8, + 9 (the rows of its C fragments).
  std::uint32_t xw[4][4], dw[4][4];
  bool ok[4];
  load_x_dx(xw, dw, ok, dx, x, end, in, col, live, t0, q);
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
  std::uint32_t xd[4][4];
  const std::uint32_t kept = drop_mask(xd, xw, seed, p, keep, in, col, t0, q);
  // dx += (dxa A) * mask / (1 - p), dx's term s summed over the groups: s[0] (col 2j, token 2h),
  // [1] (col 2j, token 2h + 1), [2]/[3] the same at col 2j + 1; half h's sums are tokens 2h, 2h + 1
  // of the lane's four.
  auto add_term = [&](int h, int j, const float (&s)[4]) { add_masked_term(dw, kept, keep, h, j, s); };
  if constexpr (LoraBackRanks<G>::kHoldA) {  // one tile's sums live at a time
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int m = 0; m + 1 < G; m += 2) {
          const std::uint32_t a4[4] = {held[m][j][0], held[m][j][1], held[m + 1][j][0], held[m + 1][j][1]};
          mma16816(s, a4, bx[h][m], bx[h][m + 1]);
        }
        if constexpr (G % 2 == 1) mma1688(s, held[G - 1][j][0], held[G - 1][j][1], bx[h][G - 1]);
        add_term(h, j, s);
      }
  } else {  // a group pair's fragments live at a time, loaded when used, and all tiles' sums
    float s[2][4][4] = {};
#pragma unroll
    for (int m = 0; m < G; m += 2) {
      std::uint32_t af[2][4][2];
#pragma unroll
      for (int u = 0; u < 2; ++u)
        if (m + u < G) rank_pair_fragments(af[u], a_lane + static_cast<std::size_t>(2 * (m + u)) * in, in, live);
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (m + 1 < G) {
            const std::uint32_t a4[4] = {af[0][j][0], af[0][j][1], af[1][j][0], af[1][j][1]};
            mma16816(s[h][j], a4, bx[h][m], bx[h][m + 1 < G ? m + 1 : m]);
          } else {
            mma1688(s[h][j], af[0][j][0], af[0][j][1], bx[h][m]);
          }
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int j = 0; j < 4; ++j) add_term(h, j, s[h][j]);
  }
  store_dx(dx, dw, ok, in, col, t0, q);
  // dA^T += drop(x)^T dxa: the A fragment pairs tokens (2q, 2q + 1) and (2q + 8, 2q + 9) of a column.
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const std::uint32_t xa_frag[4] = {low_halves(xd[0][j], xd[1][j]), high_halves(xd[0][j], xd[1][j]),
                                      low_halves(xd[2][j], xd[3][j]), high_halves(xd[2][j], xd[3][j])};
#pragma unroll
    for (int m = 0; m < G; ++m) mma16816(acc[m][j], xa_frag, bd[0][m], bd[1][m]);
  }
}

// The grid holds as many warps as fit on the GPU at once, and each warp takes an equal share
// (to one step) of the (64-column strip, 16-token step) pairs, strip by strip, token-contiguous,
// so no shape leaves a last wave part-empty. A warp's dA^T sums stay in registers while it stays
// on a strip and go to dA with 16-byte vector reductions (4 a lane and rank pair) when it leaves
// it. Measured at rank 8 against a grid of token slices x strips whose blocks met their warps' sums
// in shared memory (H200, T=2048): q_proj 19.4 / 21.4 us at 8 / 16 blocks an SM against 20.6 here,
// down_proj 88.5 / 82.7 against 82.0; kept for down_proj and for having no blocks-an-SM setting to
// tune. Staging x and dx through shared memory with cp.async (2 or 3 steps in flight a warp) was
// slower than loading them to registers (q_proj 25.3 against 20.5 us): the kernel is not waiting
// on bytes in flight.
template <int G>
__global__ void __launch_bounds__(kLoraBackMmaWarps * 32, kLoraBackMinBlocks<G>)
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
    const bf16* a_lane = a + static_cast<std::size_t>(2 * G * q) * in + col;
    std::uint32_t af[G][4][2];
    if constexpr (G == 1) {
      rank8_column_fragments(af[0], a, in, col, live, q);
    } else {
#pragma unroll
      for (int m = 0; m < G; ++m) {
        if constexpr (LoraBackRanks<G>::kHoldA)
          rank_pair_fragments(af[m], a_lane + static_cast<std::size_t>(2 * m) * in, in, live);
        else  // reloaded every step; never read
          for (int j = 0; j < 4; ++j) af[m][j][0] = af[m][j][1] = 0u;
      }
    }
    float acc[G][4][4] = {};
    for (; s < last; ++s) {
      const int t0 = (s - strip * steps) * 16;
      if constexpr (G == 1)
        lora_back_mma_step(acc[0], af[0], dx, dxa, x, T, in, col, live, t0, g, q, seed, p, keep);
      else
        lora_back_mma_step_groups<G>(acc, af, a_lane, dx, dxa, x, T, in, col, live, t0, g, q, seed, p, keep);
    }
    if (!live) continue;
    if constexpr (G == 1) {  // the lane's dA[2q][col..col+7] and dA[2q+1][col..col+7]
      float* r0 = da + static_cast<std::size_t>(2 * q) * in + col;
      float* r1 = r0 + in;
      red_add4(r0, acc[0][0][0], acc[0][0][2], acc[0][1][0], acc[0][1][2]);
      red_add4(r0 + 4, acc[0][2][0], acc[0][2][2], acc[0][3][0], acc[0][3][2]);
      red_add4(r1, acc[0][0][1], acc[0][0][3], acc[0][1][1], acc[0][1][3]);
      red_add4(r1 + 4, acc[0][2][1], acc[0][2][3], acc[0][3][1], acc[0][3][3]);
    } else {  // the lane's dA[r][col..col+7], r = 2Gq + 2m + e
#pragma unroll
      for (int m = 0; m < G; ++m)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float* r = da + static_cast<std::size_t>(2 * G * q + 2 * m + e) * in + col;
          red_add4(r, acc[m][0][e], acc[m][0][2 + e], acc[m][1][e], acc[m][1][2 + e]);
          red_add4(r + 4, acc[m][2][e], acc[m][2][2 + e], acc[m][3][e], acc[m][3][2 + e]);
        }
    }
  }
}

}  // namespace peft::cuda::detail
