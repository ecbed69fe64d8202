// The LoRA branch's up projection at padded rank 8 on tensor cores, forward and backward:
//   lora_up_forward    y [T, out] = s xa B^T (+ y)                     (K = 8)
//   lora_up_backward   dB^T [8, out] += s xa^T dy,  dxa [T, 8] = s dy B (one pass over dy)
// Both are bound by the [T, out] matrix they stream (y written, dy read). cuBLASLt ran these
// skinny products well below the card's bandwidth and read dy twice; H200, T = 2048, us a call in a
// stream of them: forward 12.4 -> 7.5 at q_proj's 3584 columns, 32.1 -> 27.0 at gate/up's 18944;
// backward 28.9 -> 11.9 and 45.0 -> 31.6 (bench/RESULTS.md). In the step the gain is smaller (7B
// seq 2048 ~1%, seq 64 ~3-4%): there the operand was just written and is mostly read from L2.
// Sums are fp32; outputs are rounded once, as cuBLASLt's (alpha * acc + beta * C, then bf16).
//
// The forward uses lora_dropout_mma.cuh's backward layout (rank8_mma.cuh): a lane owns 8 adjacent
// columns of 4 tokens of a 16-token step, y^T's tile is B [cols, 8] x xa^T (m16n8k8), whose sums
// land in the lane's own elements, so a lane writes 16 bytes a token.
// The backward reads dy as m16n8k16 A fragments (a lane: 8 columns of tokens g and g + 8, one
// 16-byte load each), which is what dxa = dy B wants (k = columns); dB^T = dy^T xa wants k =
// tokens, and movmatrix transposes each 8 x 8 piece in registers for it. A block is 8 warps on 8
// adjacent 64-column strips (512 columns) walking the same run of 16-token steps: its warps' dxa
// sums meet in shared memory each step, and a grid of more than one column group writes fp32
// partials [groups, T, 8] that rank8_add_splits adds in group order (deterministic); dB^T's sums
// stay in registers for the block's run and go out with 16-byte reductions at its end (so, as
// the dropout backward's dA, their fp32 order varies between runs; dxa's does not).
#pragma once
#include <algorithm>
#include <cstdint>

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

__global__ void __launch_bounds__(kLoraUpWarps * 32)
    lora_up_forward_kernel(bf16* __restrict__ y, const bf16* __restrict__ xa, const bf16* __restrict__ bt, int T,
                           int out, float scale, bool accumulate) {
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, q = lane % 4;
  const WarpShare share = rank8_warp_share(T, out, kLoraUpWarps);
  for (int s = share.begin; s < share.end;) {
    const int strip = s / share.steps, last = min(share.end, (strip + 1) * share.steps);
    const int col = strip * kRank8StripCols + 8 * g;
    const bool live = col < out;  // out % 8 == 0: the lane's 8 columns are in or out whole
    std::uint32_t bf[4][2];
    rank8_column_fragments(bf, bt, out, col, live, q);
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
        const int tr = t0 + 8 * h + g;  // xa^T's fragment: k = ranks 2q, 2q + 1, n = token g of half h
        const std::uint32_t xf = tr < T ? load_pair(xa + static_cast<std::size_t>(tr) * 8 + 2 * q) : 0u;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          mma1688(c, bf[j][0], bf[j][1], xf);
          // c: [0] (col 2j, token 2h), [1] (col 2j, token 2h + 1), [2]/[3] the same at col 2j + 1.
#pragma unroll
          for (int u = 0; u < 2; ++u) {
            const int k = 2 * h + u;
            const float lo = accumulate ? bf16_lo(yw[k][j]) : 0.0f, hi = accumulate ? bf16_hi(yw[k][j]) : 0.0f;
            yw[k][j] = pack_bf16(scale * c[u] + lo, scale * c[2 + u] + hi);
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

// Grid: (column groups, token runs of `run` steps). part: null with one column group (dxa written
// directly), else [groups, T, 8] fp32.
__global__ void __launch_bounds__(kLoraUpBackWarps * 32)
    lora_up_backward_kernel(float* __restrict__ dbt, bf16* __restrict__ dxa, float* __restrict__ part,
                            const bf16* __restrict__ dy, const bf16* __restrict__ xa, const bf16* __restrict__ bt,
                            int T, int out, int run, float scale) {
  __shared__ float sums[2][kLoraUpBackWarps][16][8];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, q = lane % 4;
  const int strip = static_cast<int>(blockIdx.x) * kLoraUpBackCols + warp * kRank8StripCols;
  const int steps = (T + 15) / 16, st0 = static_cast<int>(blockIdx.y) * run, st1 = min(steps, st0 + run);
  // The lane's columns for dxa's A fragments: chunk ch's col[ch]..+7; k = 2q + e is column
  // col[ch] + 4u + e and k = 2q + 8 + e column col[ch] + 4u + 2 + e in the chunk's mma u.
  int col[2];
  bool live[2];
  uint4 bfrag[2];  // B's B fragments: B^T [g, col[ch]..+7]
#pragma unroll
  for (int ch = 0; ch < 2; ++ch) {
    col[ch] = strip + 32 * ch + 8 * q;
    live[ch] = col[ch] < out;  // out % 8 == 0: 8 columns in or out whole
    bfrag[ch] = load16(bt + static_cast<std::size_t>(g) * out + col[ch], live[ch]);
  }
  float acc[4][4] = {};  // dB^T, chunk ch's mma p at acc[2 ch + p] (see the flush)
  DyTile cur = load_dy_tile(dy, T, out, st0 * 16, g, col, live);
  int buf = 0;
  for (int st = st0; st < st1; ++st, buf ^= 1) {
    const int t0 = st * 16;
    const DyTile next = load_dy_tile(dy, T, out, st + 1 < st1 ? t0 + 16 : T, g, col, live);  // in flight meanwhile
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // dxa: (token g, ranks 2q, 2q + 1), (token g + 8, the same)
    // xa's B fragments for dB^T: k = tokens 2q, 2q + 1 (+ 8), n = rank g.
    auto xa_at = [&](int t) { return t < T ? load_u16(xa + static_cast<std::size_t>(t) * 8 + g) : 0u; };
    const int tk = t0 + 2 * q;
    const std::uint32_t xb0 = xa_at(tk) | (xa_at(tk + 1) << 16), xb1 = xa_at(tk + 8) | (xa_at(tk + 9) << 16);
#pragma unroll
    for (int ch = 0; ch < 2; ++ch) {
      const std::uint32_t lw[4] = {cur.lo[ch].x, cur.lo[ch].y, cur.lo[ch].z, cur.lo[ch].w};
      const std::uint32_t hw[4] = {cur.hi[ch].x, cur.hi[ch].y, cur.hi[ch].z, cur.hi[ch].w};
      const std::uint32_t bw[4] = {bfrag[ch].x, bfrag[ch].y, bfrag[ch].z, bfrag[ch].w};
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const std::uint32_t a[4] = {lw[2 * u], hw[2 * u], lw[2 * u + 1], hw[2 * u + 1]};
        mma16816(d, a, bw[2 * u], bw[2 * u + 1]);
      }
      // dy^T's A fragments: word w transposed holds tokens (2q, 2q + 1) of column
      // col_w(g) = strip + 32 ch + 8 (g / 2) + 2 w + (g & 1); rows g / g + 8 are words 2p / 2p + 1.
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        const std::uint32_t a[4] = {transpose8x8(lw[2 * p]), transpose8x8(lw[2 * p + 1]), transpose8x8(hw[2 * p]),
                                    transpose8x8(hw[2 * p + 1])};
        mma16816(acc[2 * ch + p], a, xb0, xb1);
      }
    }
    // The block's 8 strips' dxa sums for these 16 tokens (double-buffered: one barrier a step).
    *reinterpret_cast<float2*>(&sums[buf][warp][g][2 * q]) = make_float2(d[0], d[1]);
    *reinterpret_cast<float2*>(&sums[buf][warp][g + 8][2 * q]) = make_float2(d[2], d[3]);
    __syncthreads();
    if (threadIdx.x < 16 * 8) {
      const int row = static_cast<int>(threadIdx.x) / 8, r = static_cast<int>(threadIdx.x) % 8, t = t0 + row;
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kLoraUpBackWarps; ++w) v += sums[buf][w][row][r];
      if (t < T) {
        if (part)
          part[(static_cast<std::size_t>(blockIdx.x) * T + t) * 8 + r] = scale * v;
        else
          dxa[static_cast<std::size_t>(t) * 8 + r] = to_bf16(scale * v);
      }
    }
    cur = next;
  }
  // dB^T [rank, col] += s * acc. acc[2 ch + p] holds (col_{2p}(g), ranks 2q, 2q + 1) and
  // (col_{2p+1}(g), the same): columns 8 (g / 2) + {0, 2, 4, 6} + (g & 1) of the chunk. Lanes g and
  // g ^ 1 trade a rank (the even one keeps 2q, the odd one 2q + 1), so each holds 8 adjacent
  // columns of one rank: two 16-byte reductions instead of 16 scalar atomics.
  const bool odd = g & 1;
#pragma unroll
  for (int ch = 0; ch < 2; ++ch) {
    float keep[4], got[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // i = 2p + e: column 4p + 2e + parity
      const float* a = acc[2 * ch + i / 2];
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
    float* row = dbt + static_cast<std::size_t>(2 * q + (odd ? 1 : 0)) * out + c8;
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

// The backward's default run: about one block an SM, each at least 4 and at most 16 steps. A block's
// dB^T sums leave by reductions at its end, so short runs multiply them; long ones leave SMs idle.
// H200 (cuda_test_lora_up's timing lines, us a call at T = 2048, runs of 1 / 2 / 4 / 8 / 16 steps):
// q_proj's width 19.9 / 15.0 / 11.5 / 11.3 / 13.8, k/v's 8.5 / 6.2 / 6.3 / 7.1 / 10.7, gate/up's 64.7 /
// 43.9 / 36.1 / 33.9 / 31.5.
inline int lora_up_back_default_run(int steps, int groups) {
  const int sms = current_device_kernels().gpu.sms;
  const long long per_sm = (static_cast<long long>(steps) * groups + sms - 1) / sms;
  return static_cast<int>(std::clamp<long long>(per_sm, 4, 16));
}

// Whether these kernels take the shape: padded rank 8, whole 16-byte rows of y / dy and B^T.
inline bool lora_up_fits(int rp, int out, const void* y, const void* bt) {
  return lora_up_mma() && rp == 8 && out % 8 == 0 && detail::aligned16(y) && detail::aligned16(bt);
}

// The fp32 scratch lora_up_backward needs: a partial dxa per 512-column group past the first.
inline std::size_t lora_up_backward_scratch_floats(int tokens, int out) {
  const int groups = (out + detail::kLoraUpBackCols - 1) / detail::kLoraUpBackCols;
  return groups > 1 ? static_cast<std::size_t>(groups) * static_cast<std::size_t>(tokens) * 8 : 0;
}

// y [T, out] = s xa B^T, or y += s xa B^T when accumulate; xa [T, 8], B^T [8, out] (bf16).
inline void lora_up_forward(bf16* y, const bf16* xa, const bf16* bt, int tokens, int out, float scale, bool accumulate,
                            cudaStream_t stream) {
  if (!lora_up_fits(8, out, y, bt)) throw Error("lora_up_forward: out " + std::to_string(out) + " or a pointer unaligned");
  if (tokens == 0) return;
  static const int fit = detail::blocks_that_fit(detail::lora_up_forward_kernel, detail::kLoraUpWarps * 32);
  const int per_sm = lora_up_blocks_per_sm() > 0 ? lora_up_blocks_per_sm() : fit;
  const unsigned blocks = detail::rank8_share_blocks(detail::kLoraUpWarps, tokens, out, per_sm);
  detail::lora_up_forward_kernel<<<blocks, detail::kLoraUpWarps * 32, 0, stream>>>(y, xa, bt, tokens, out, scale,
                                                                                   accumulate);
  PEFT_CUDA_CHECK_LAUNCH("lora_up_forward_kernel");
}

// dB^T [8, out] += s xa^T dy (fp32) and dxa [T, 8] = s dy B (bf16), dy [T, out], one pass over dy.
// scratch: lora_up_backward_scratch_floats(tokens, out) floats (may be null when that is 0).
inline void lora_up_backward(float* dbt, bf16* dxa, const bf16* dy, const bf16* xa, const bf16* bt, int tokens,
                             int out, float scale, float* scratch, cudaStream_t stream) {
  if (!lora_up_fits(8, out, dy, bt) || !detail::aligned16(dbt))
    throw Error("lora_up_backward: out " + std::to_string(out) + " or a pointer unaligned");
  const std::size_t need = lora_up_backward_scratch_floats(tokens, out);
  if (need > 0 && !scratch) throw Error("lora_up_backward: " + std::to_string(need) + " floats of scratch needed");
  if (tokens == 0) return;
  const int groups = (out + detail::kLoraUpBackCols - 1) / detail::kLoraUpBackCols, steps = (tokens + 15) / 16;
  const int run = lora_up_back_run() > 0 ? lora_up_back_run() : lora_up_back_default_run(steps, groups);
  const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>((steps + run - 1) / run));
  float* part = need > 0 ? scratch : nullptr;
  detail::lora_up_backward_kernel<<<grid, detail::kLoraUpBackWarps * 32, 0, stream>>>(dbt, dxa, part, dy, xa, bt, tokens,
                                                                                       out, run, scale);
  PEFT_CUDA_CHECK_LAUNCH("lora_up_backward_kernel");
  if (part) detail::rank8_add_splits(dxa, part, tokens, groups, stream);
}

}  // namespace peft::cuda
