// The LoRA branch's up projection at padded rank rp = 8G (G = 1..8 rank groups of 8: rp 8..64) on
// tensor cores, forward and backward:
//   lora_up_forward    y [T, out] = s xa B^T (+ y)                      (K = rp)
//   lora_up_backward   dB^T [rp, out] += s xa^T dy,  dxa [T, rp] = s dy B (one pass over dy)
// Both are bound by the [T, out] matrix they stream (y written, dy read). cuBLASLt ran these
// skinny products well below the card's bandwidth and read dy twice; H200, T = 2048, rank 8, us a
// call in a stream of them: forward 12.4 -> 7.5 at q_proj's 3584 columns, 32.1 -> 27.0 at
// gate/up's 18944; backward 28.9 -> 11.9 and 45.0 -> 31.6 (bench/RESULTS.md). In the step the gain
// is smaller (7B seq 2048 ~1%, seq 64 ~3-4%): there the operand was just written and is mostly
// read from L2. Above rank 8 the per-token work grows with G while the bytes do not, so G is a
// template parameter: fragments, sums and loops are sized at compile time, and G = 1 is the rank-8
// kernel as it was. Sums are fp32; outputs are rounded once, as cuBLASLt's (alpha acc + beta C).
//
// The forward uses lora_dropout_mma.cuh's backward layout (rank8_mma.cuh): a lane owns 8 adjacent
// columns of 4 tokens of a 16-token step, y^T's tile is B [cols, rp] x xa^T (m16n8k16 per two rank
// groups, m16n8k8 for an odd one), whose sums land in the lane's own elements, so a lane writes 16
// bytes a token.
// The backward reads dy as m16n8k16 A fragments (a lane: 8 columns of tokens g and g + 8, one
// 16-byte load each), which is what dxa = dy B wants (k = columns); dB^T = dy^T xa wants k =
// tokens, and movmatrix transposes each 8 x 8 piece in registers for it. A block is 8 warps on 8
// adjacent 64-column strips (512 columns) walking the same run of 16-token steps: its warps' dxa
// sums meet in shared memory each step, and a grid of more than one column group writes fp32
// partials [groups, T, rp] that rank8_add_splits adds in group order (deterministic); dB^T's sums
// stay in registers for the block's run and go out with 16-byte reductions at its end (so, as
// the dropout backward's dA, their fp32 order varies between runs; dxa's does not).
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "peft/core/error.hpp"
#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/elementwise.cuh"
#include "peft/kernels/cuda/rank8_mma.cuh"

namespace peft::cuda {
namespace detail {

constexpr int kLoraUpWarps = 4;
constexpr int kLoraUpBackWarps = 8;
constexpr int kLoraUpBackCols = kLoraUpBackWarps * kRank8StripCols;  // a block's column group

// The forward's K = 8G ranks in G m16n8k8 slices, laid out so that a lane's xa fragments are one
// run of 2G adjacent ranks (a wide load, not G narrow ones): slice k's k-slots 2q, 2q + 1 are
// ranks 2Gq + 2k, + 1. B^T's fragments follow: rank8_column_fragments reads rows 2q, 2q + 1 of
// the matrix it is given, so it is given B^T from row 2(G - 1)q + 2k. At G = 1: as at rank 8.
template <int G>
__device__ __forceinline__ void up_column_fragments(std::uint32_t (&bf)[G][4][2], const bf16* __restrict__ bt, int out,
                                                    int col, bool live, int q) {
#pragma unroll
  for (int k = 0; k < G; ++k)
    rank8_column_fragments(bf[k], bt + static_cast<std::size_t>(2 * (G - 1) * q + 2 * k) * out, out, col, live, q);
}

template <int G>
__global__ void __launch_bounds__(kLoraUpWarps * 32)
    lora_up_forward_kernel(bf16* __restrict__ y, const bf16* __restrict__ xa, const bf16* __restrict__ bt, int T,
                           int out, float scale, bool accumulate) {
  constexpr int rp = 8 * G;
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, q = lane % 4;
  const WarpShare share = rank8_warp_share(T, out, kLoraUpWarps);
  for (int s = share.begin; s < share.end;) {
    const int strip = s / share.steps, last = min(share.end, (strip + 1) * share.steps);
    const int col = strip * kRank8StripCols + 8 * g;
    const bool live = col < out;  // out % 8 == 0: the lane's 8 columns are in or out whole
    std::uint32_t bf[G][4][2];
    up_column_fragments<G>(bf, bt, out, col, live, q);
    for (; s < last; ++s) {
      const int t0 = (s - strip * share.steps) * 16;
      // The lane's tokens k = 0..3: t0 + 2q, + 1, + 8, + 9 (the columns n of its C fragments).
      auto token = [&](int k) { return t0 + 2 * q + (k & 1) + 8 * (k >> 1); };
      uint4 old[4];
#pragma unroll
      for (int k = 0; k < 4; ++k)
        old[k] = load16(y + static_cast<std::size_t>(live && token(k) < T ? token(k) : 0) * out + col,
                        accumulate && live && token(k) < T);
      std::uint32_t yw[4][4] = {{old[0].x, old[0].y, old[0].z, old[0].w}, {old[1].x, old[1].y, old[1].z, old[1].w},
                                {old[2].x, old[2].y, old[2].z, old[2].w}, {old[3].x, old[3].y, old[3].z, old[3].w}};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int tr = t0 + 8 * h + g;  // xa^T's fragments: n = token g of half h, slice k's ranks (above)
        std::uint32_t xf[G];
        load_words<G>(xf, xa + static_cast<std::size_t>(tr) * rp + 2 * G * q, tr < T);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          // Two slices a k16 instruction (its k-slots 8..15 are the second slice's 0..7).
#pragma unroll
          for (int p = 0; p + 1 < G; p += 2) {
            const std::uint32_t a[4] = {bf[p][j][0], bf[p][j][1], bf[p + 1][j][0], bf[p + 1][j][1]};
            mma16816(c, a, xf[p], xf[p + 1]);
          }
          if constexpr (G % 2 == 1) mma1688(c, bf[G - 1][j][0], bf[G - 1][j][1], xf[G - 1]);
          // c: [0] (col 2j, token 2h), [1] (col 2j, token 2h + 1), [2]/[3] the same at col 2j + 1.
          // The term is rounded to bf16 before y's value is added: cuBLASLt's beta = 1 adds the
          // product rounded to the output type (cuda_test_gemm counts it), and HF PEFT adds its
          // bf16 LoRA output to the base layer's; so the forward's orders (adapter first, base
          // first here) give the same bits. Added unrounded, the base-first order's step was
          // ~1.8e-2 (relative L2 of the LoRA gradients) from the others at rank 8 (RESULTS).
#pragma unroll
          for (int u = 0; u < 2; ++u) {
            const int k = 2 * h + u;
            const float lo = accumulate ? bf16_lo(yw[k][j]) : 0.0f, hi = accumulate ? bf16_hi(yw[k][j]) : 0.0f;
            yw[k][j] = pack_bf16(to_float(to_bf16(scale * c[u])) + lo, to_float(to_bf16(scale * c[2 + u])) + hi);
          }
        }
      }
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (live && token(k) < T)
          *reinterpret_cast<uint4*>(y + static_cast<std::size_t>(token(k)) * out + col) =
              make_uint4(yw[k][0], yw[k][1], yw[k][2], yw[k][3]);
    }
  }
}

// One 16-token step's dy at the lane's columns: [chunk] of 32 columns, tokens g (lo) and g + 8 (hi).
struct DyTile {
  uint4 lo[2], hi[2];
};
__device__ __forceinline__ DyTile load_dy_tile(const bf16* __restrict__ dy, int T, int out, int t0, int g,
                                               const int (&col)[2], const bool (&live)[2]) {
  DyTile d;
  const int tl = t0 + g, th = tl + 8;
#pragma unroll
  for (int ch = 0; ch < 2; ++ch) {
    d.lo[ch] = load16(dy + static_cast<std::size_t>(tl < T ? tl : 0) * out + col[ch], live[ch] && tl < T);
    d.hi[ch] = load16(dy + static_cast<std::size_t>(th < T ? th : 0) * out + col[ch], live[ch] && th < T);
  }
  return d;
}

// xa's B fragments for dB^T's G products: k = tokens tk, tk + 1 ([0]) and tk + 8, tk + 9 ([1]), n =
// g. Product k's n = g is rank Gg + k, so a lane reads G adjacent ranks a token: one load of G / 2
// words for even G, G 2-byte loads for odd G (G = 1: as at rank 8).
template <int G>
__device__ __forceinline__ void xa_fragments(std::uint32_t (&xb)[G][2], const bf16* __restrict__ xa, int T, int tk,
                                             int g) {
  constexpr int rp = 8 * G;
  if constexpr (G % 2 == 1) {
    auto at = [&](int t, int k) { return t < T ? load_u16(xa + static_cast<std::size_t>(t) * rp + G * g + k) : 0u; };
#pragma unroll
    for (int k = 0; k < G; ++k) {
      xb[k][0] = at(tk, k) | (at(tk + 1, k) << 16);
      xb[k][1] = at(tk + 8, k) | (at(tk + 9, k) << 16);
    }
  } else {
    std::uint32_t w[4][G / 2];  // tokens tk, tk + 1, tk + 8, tk + 9; word m: ranks Gg + 2m, + 1
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int t = tk + (i & 1) + 8 * (i >> 1);
      load_words<G / 2>(w[i], xa + static_cast<std::size_t>(t < T ? t : 0) * rp + G * g, t < T);
    }
#pragma unroll
    for (int m = 0; m < G / 2; ++m) {
      xb[2 * m][0] = low_halves(w[0][m], w[1][m]), xb[2 * m + 1][0] = high_halves(w[0][m], w[1][m]);
      xb[2 * m][1] = low_halves(w[2][m], w[3][m]), xb[2 * m + 1][1] = high_halves(w[2][m], w[3][m]);
    }
  }
}

// The backward's per-rank choices (ptxas -v, sm_90a: registers, no spills). dB^T's sums (16G
// registers) live through a block's run, and so, while they fit, do B's fragments (8G) and a
// second dy tile (16). G = 1: 76 registers (72 before G), 3 blocks an SM either way. G = 2: all held,
// 118, 2 blocks. G = 3, 4: B's fragments read each step (L1: a block's 8G rows x 512 columns are
// 8G KB) and one dy tile, its next load issued as the last mma is, to stay at 128 for 2 blocks an
// SM. G >= 5: one block an SM of up to 255 (227..252), double-buffered again. dxa's shared sums
// are 8G KB and more (padded); past 48 KB they are dynamic.
template <int G>
struct UpBackConfig {
  static constexpr bool hold_b = G <= 2;
  static constexpr bool double_buffer = G <= 2 || G >= 5;
  static constexpr int min_blocks = G == 1 ? 0 : G <= 4 ? 2 : 1;  // 0: unsaid (rank 8's bound)
  // dxa's sums rows padded to a stride of 8 or 24 (mod 32) floats: a half-warp's float2 stores
  // (rows g = 0..3, columns 2q) then cover the 32 banks once.
  static constexpr int sums_stride = 8 * G + (G % 2 == 0 ? 8 : 0);
  static constexpr int sums_floats = 2 * kLoraUpBackWarps * 16 * sums_stride;
  static constexpr bool dynamic_sums = sums_floats * 4 > 48 * 1024;
};

// Grid: (column groups, token runs of `run` steps). part: null with one column group (dxa written
// directly), else [groups, T, 8G] fp32.
template <int G>
__global__ void __launch_bounds__(kLoraUpBackWarps * 32, UpBackConfig<G>::min_blocks)
    lora_up_backward_kernel(float* __restrict__ dbt, bf16* __restrict__ dxa, float* __restrict__ part,
                            const bf16* __restrict__ dy, const bf16* __restrict__ xa, const bf16* __restrict__ bt,
                            int T, int out, int run, float scale) {
  using Config = UpBackConfig<G>;
  constexpr int rp = 8 * G;
  __shared__ __align__(16) float static_sums[Config::dynamic_sums ? 1 : Config::sums_floats];
  extern __shared__ float4 dynamic_sums[];
  // [2][warps][16][rp, padded]: double-buffered, one barrier a step
  float* sums = Config::dynamic_sums ? reinterpret_cast<float*>(dynamic_sums) : static_sums;
  auto at = [&](int buf, int warp, int row, int r) {
    return sums + ((buf * kLoraUpBackWarps + warp) * 16 + row) * Config::sums_stride + r;
  };
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, q = lane % 4;
  const int strip = static_cast<int>(blockIdx.x) * kLoraUpBackCols + warp * kRank8StripCols;
  const int steps = (T + 15) / 16, st0 = static_cast<int>(blockIdx.y) * run, st1 = min(steps, st0 + run);
  // The lane's columns for dxa's A fragments: chunk ch's col[ch]..+7; k = 2q + e is column
  // col[ch] + 4u + e and k = 2q + 8 + e column col[ch] + 4u + 2 + e in the chunk's mma u.
  int col[2];
  bool live[2];
#pragma unroll
  for (int ch = 0; ch < 2; ++ch) {
    col[ch] = strip + 32 * ch + 8 * q;
    live[ch] = col[ch] < out;  // out % 8 == 0: 8 columns in or out whole
  }
  // B's B fragments for rank group k: B^T [8k + g, col[ch]..+7].
  auto b_fragment = [&](int k, int ch) {
    return load16(bt + static_cast<std::size_t>(8 * k + g) * out + col[ch], live[ch]);
  };
  uint4 bfrag[Config::hold_b ? G : 1][2];
  if constexpr (Config::hold_b)
#pragma unroll
    for (int k = 0; k < G; ++k)
#pragma unroll
      for (int ch = 0; ch < 2; ++ch) bfrag[k][ch] = b_fragment(k, ch);
  float acc[G][4][4] = {};  // dB^T, product k's chunk ch's mma p at acc[k][2 ch + p] (see the flush)
  DyTile cur = load_dy_tile(dy, T, out, st0 * 16, g, col, live);
  int buf = 0;
  for (int st = st0; st < st1; ++st, buf ^= 1) {
    const int t0 = st * 16;
    const int t1 = st + 1 < st1 ? t0 + 16 : T;
    DyTile next;
    if constexpr (Config::double_buffer) next = load_dy_tile(dy, T, out, t1, g, col, live);  // in flight meanwhile
    std::uint32_t xb[G][2];
    xa_fragments<G>(xb, xa, T, t0 + 2 * q, g);
    float d[G][4] = {};  // dxa, rank group k: (token g, ranks 8k + 2q, + 1), (token g + 8, the same)
#pragma unroll
    for (int ch = 0; ch < 2; ++ch) {
      const std::uint32_t lw[4] = {cur.lo[ch].x, cur.lo[ch].y, cur.lo[ch].z, cur.lo[ch].w};
      const std::uint32_t hw[4] = {cur.hi[ch].x, cur.hi[ch].y, cur.hi[ch].z, cur.hi[ch].w};
#pragma unroll
      for (int k = 0; k < G; ++k) {
        const uint4 b = Config::hold_b ? bfrag[Config::hold_b ? k : 0][ch] : b_fragment(k, ch);
        const std::uint32_t bw[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const std::uint32_t a[4] = {lw[2 * u], hw[2 * u], lw[2 * u + 1], hw[2 * u + 1]};
          mma16816(d[k], a, bw[2 * u], bw[2 * u + 1]);
        }
      }
      // dy^T's A fragments: word w transposed holds tokens (2q, 2q + 1) of column
      // col_w(g) = strip + 32 ch + 8 (g / 2) + 2 w + (g & 1); rows g / g + 8 are words 2p / 2p + 1.
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        const std::uint32_t a[4] = {transpose8x8(lw[2 * p]), transpose8x8(lw[2 * p + 1]), transpose8x8(hw[2 * p]),
                                    transpose8x8(hw[2 * p + 1])};
#pragma unroll
        for (int k = 0; k < G; ++k) mma16816(acc[k][2 * ch + p], a, xb[k][0], xb[k][1]);
      }
    }
#pragma unroll
    for (int k = 0; k < G; ++k) {
      *reinterpret_cast<float2*>(at(buf, warp, g, 8 * k + 2 * q)) = make_float2(d[k][0], d[k][1]);
      *reinterpret_cast<float2*>(at(buf, warp, g + 8, 8 * k + 2 * q)) = make_float2(d[k][2], d[k][3]);
    }
    if constexpr (!Config::double_buffer) cur = load_dy_tile(dy, T, out, t1, g, col, live);  // over the barrier
    // The block's 8 strips' dxa sums for these 16 tokens.
    __syncthreads();
    constexpr int kThreads = kLoraUpBackWarps * 32, kSums = 16 * rp;
#pragma unroll
    for (int i0 = 0; i0 < kSums; i0 += kThreads) {
      const int i = i0 + static_cast<int>(threadIdx.x);
      if (kSums % kThreads == 0 || i < kSums) {
        const int row = i / rp, r = i % rp, t = t0 + row;
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < kLoraUpBackWarps; ++w) v += *at(buf, w, row, r);
        if (t < T) {
          if (part)
            part[(static_cast<std::size_t>(blockIdx.x) * T + t) * rp + r] = scale * v;
          else
            dxa[static_cast<std::size_t>(t) * rp + r] = to_bf16(scale * v);
        }
      }
    }
    if constexpr (Config::double_buffer) cur = next;
  }
  // dB^T [rank, col] += s * acc. acc[k][2 ch + p] holds (col_{2p}(g), n = 2q, 2q + 1) and
  // (col_{2p+1}(g), the same): columns 8 (g / 2) + {0, 2, 4, 6} + (g & 1) of the chunk; n is rank
  // Gn + k (xa_fragments). Lanes g and g ^ 1 trade an n (the even one keeps 2q, the odd one
  // 2q + 1), so each holds 8 adjacent columns of one rank: two 16-byte reductions instead of 16
  // scalar atomics.
  const bool odd = g & 1;
#pragma unroll
  for (int k = 0; k < G; ++k)
#pragma unroll
    for (int ch = 0; ch < 2; ++ch) {
      float keep[4], got[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {  // i = 2p + e: column 4p + 2e + parity
        const float* a = acc[k][2 * ch + i / 2];
        const int e = i % 2;
        keep[i] = odd ? a[2 * e + 1] : a[2 * e];
        got[i] = __shfl_xor_sync(0xffffffffu, odd ? a[2 * e] : a[2 * e + 1], 4);
      }
      const int c8 = strip + 32 * ch + 8 * (g / 2);
      if (c8 >= out) continue;
      float v[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        v[2 * i + (odd ? 1 : 0)] = scale * keep[i];
        v[2 * i + (odd ? 0 : 1)] = scale * got[i];
      }
      float* row = dbt + static_cast<std::size_t>(G * (2 * q + (odd ? 1 : 0)) + k) * out + c8;
      red_add4(row, v[0], v[1], v[2], v[3]);
      red_add4(row + 4, v[4], v[5], v[6], v[7]);
    }
}

}  // namespace detail

// Whether the tensor-core up projection runs (forward and backward); on unless PEFT_LORA_UP_MMA=0
// (the A/B: cuBLASLt's products, as before).
inline bool& lora_up_mma() {
  static bool on = env_switch_on("PEFT_LORA_UP_MMA");
  return on;
}

// Tuning knobs (cuda_test_lora_up's timing lines try several): the forward's blocks an SM (0: as
// many as fit) and the backward's run of 16-token steps a block (0: enough blocks to fill the GPU).
inline int& lora_up_blocks_per_sm() {
  static int n = env_tuning_knob("PEFT_LORA_UP_BLOCKS_PER_SM", 0);
  return n;
}
inline int& lora_up_back_run() {
  static int n = env_tuning_knob("PEFT_LORA_UP_BACK_RUN", 0);
  return n;
}

// The backward's default run. A block's dB^T sums leave by reductions at its end (8G x 512 floats),
// so short runs multiply them; long ones leave SMs idle. Rank 8: about one block an SM, each at
// least 4 and at most 16 steps; H200 (cuda_test_lora_up's timing lines, us a call at T = 2048,
// runs of 1 / 2 / 4 / 8 / 16 steps): q_proj's width 19.9 / 15.0 / 11.5 / 11.3 / 13.8, k/v's 8.5 /
// 6.2 / 6.3 / 7.1 / 10.7, gate/up's 64.7 / 43.9 / 36.1 / 33.9 / 31.5. Above it `fit` blocks an SM
// (1 or 2) hold the grid at once: the runs are sized for one such wave (a few blocks more would
// double the time), at least 2G steps so that the reductions stay well below dy's bytes.
inline int lora_up_back_default_run(int steps, int groups, int rp = 8, int fit = 1) {
  const int sms = current_device_kernels().gpu.sms;
  if (rp == 8) {
    const long long per_sm = (static_cast<long long>(steps) * groups + sms - 1) / sms;
    return static_cast<int>(std::clamp<long long>(per_sm, 4, 16));
  }
  const long long runs = std::max<long long>(1, static_cast<long long>(sms) * fit / groups);
  return static_cast<int>(std::max<long long>((steps + runs - 1) / runs, std::max(4, rp / 4)));
}

// Whether these kernels take the shape: padded rank 8..64 (a multiple of 8), whole 16-byte rows of
// y / dy and B^T.
inline bool lora_up_fits(int rp, int out, const void* y, const void* bt) {
  return lora_up_mma() && detail::lora_mma_rank(rp) && out % 8 == 0 && detail::aligned16(y) && detail::aligned16(bt);
}

// Whether the model should take these kernels at this padded rank rather than cuBLASLt's: they
// beat it up to rank 16 and lose above, where a block holds too few bytes of dy in flight for the
// G mma a step (H200, cuda_test_lora_up's lines at T = 2048, us a call, cuBLASLt -> ours: backward at
// out 3584 rank 16 18.0 -> 13.6, 32 17.6 -> 22.3, 64 17.1 -> 42.1; at 18944 45.2 -> 34.4, 46.4 ->
// 64.4, 47.5 -> 112.3; forward even at 32, slower at 64: bench/RESULTS.md). Rank 24 is unmeasured
// and kept on cuBLASLt with the ranks above it.
inline bool lora_up_wins(int rp) { return rp <= 16; }

// The fp32 scratch lora_up_backward needs: a partial dxa [T, rp] per 512-column group past the first.
inline std::size_t lora_up_backward_scratch_floats(int tokens, int out, int rp) {
  const int groups = (out + detail::kLoraUpBackCols - 1) / detail::kLoraUpBackCols;
  return groups > 1 ? static_cast<std::size_t>(groups) * static_cast<std::size_t>(tokens) * static_cast<std::size_t>(rp)
                    : 0;
}

namespace detail {
// Above rank 8 xa is read in 8- and 16-byte pieces.
inline bool lora_up_xa_aligned(int rp, const bf16* xa) { return rp == 8 || aligned16(xa); }
}  // namespace detail

// y [T, out] = s xa B^T, or y += s xa B^T when accumulate; xa [T, rp], B^T [rp, out] (bf16).
inline void lora_up_forward(bf16* y, const bf16* xa, const bf16* bt, int rp, int tokens, int out, float scale,
                            bool accumulate, cudaStream_t stream) {
  if (!lora_up_fits(rp, out, y, bt) || !detail::lora_up_xa_aligned(rp, xa))
    throw Error("lora_up_forward: padded rank " + std::to_string(rp) + ", out " + std::to_string(out) +
                " or a pointer unaligned");
  if (tokens == 0) return;
  detail::with_mma_groups(rp, [&](auto groups) {
    constexpr int G = decltype(groups)::value;
    const auto kernel = detail::lora_up_forward_kernel<G>;
    static const int fit = detail::blocks_that_fit(kernel, detail::kLoraUpWarps * 32);
    const int per_sm = lora_up_blocks_per_sm() > 0 ? lora_up_blocks_per_sm() : fit;
    const unsigned blocks = detail::rank8_share_blocks(detail::kLoraUpWarps, tokens, out, per_sm);
    kernel<<<blocks, detail::kLoraUpWarps * 32, 0, stream>>>(y, xa, bt, tokens, out, scale, accumulate);
    PEFT_CUDA_CHECK_LAUNCH("lora_up_forward_kernel");
  });
}

// dB^T [rp, out] += s xa^T dy (fp32) and dxa [T, rp] = s dy B (bf16), dy [T, out], one pass over dy.
// scratch: lora_up_backward_scratch_floats(tokens, out, rp) floats (may be null when that is 0).
inline void lora_up_backward(float* dbt, bf16* dxa, const bf16* dy, const bf16* xa, const bf16* bt, int rp, int tokens,
                             int out, float scale, float* scratch, cudaStream_t stream) {
  if (!lora_up_fits(rp, out, dy, bt) || !detail::aligned16(dbt) || !detail::lora_up_xa_aligned(rp, xa))
    throw Error("lora_up_backward: padded rank " + std::to_string(rp) + ", out " + std::to_string(out) +
                " or a pointer unaligned");
  const std::size_t need = lora_up_backward_scratch_floats(tokens, out, rp);
  if (need > 0 && !scratch) throw Error("lora_up_backward: " + std::to_string(need) + " floats of scratch needed");
  if (tokens == 0) return;
  const int groups = (out + detail::kLoraUpBackCols - 1) / detail::kLoraUpBackCols, steps = (tokens + 15) / 16;
  float* part = need > 0 ? scratch : nullptr;
  detail::with_mma_groups(rp, [&](auto rank_groups) {
    constexpr int G = decltype(rank_groups)::value;
    using Config = detail::UpBackConfig<G>;
    const auto kernel = detail::lora_up_backward_kernel<G>;
    constexpr int threads = detail::kLoraUpBackWarps * 32;
    constexpr int smem = Config::dynamic_sums ? Config::sums_floats * 4 : 0;
    static const int fit = detail::blocks_that_fit(kernel, threads, smem);
    const int run = lora_up_back_run() > 0 ? lora_up_back_run() : lora_up_back_default_run(steps, groups, rp, fit);
    const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>((steps + run - 1) / run));
    kernel<<<grid, threads, smem, stream>>>(dbt, dxa, part, dy, xa, bt, tokens, out, run, scale);
    PEFT_CUDA_CHECK_LAUNCH("lora_up_backward_kernel");
  });
  if (part) detail::rank8_add_splits(dxa, part, tokens, groups, stream, rp);
}

}  // namespace peft::cuda
