// A tensor-core GEMM whose weight operand is an NF4 tensor, decoded tile by tile inside the GEMM:
// the forward y[T, out] = x[T, in] W^T (+ b) (+ beta y) and the input gradient
// dx[T, in] = dy[T, out] W (+ beta dx) of a QLoRA projection at tens to hundreds of tokens.
//
// Why it exists: between the decode GEMV (nf4_gemv.cuh, 1-8 tokens) and training batches of
// thousands of tokens (dequantise into a bf16 scratch, then cuBLASLt: nf4_dequant.cuh), the
// separate dequantisation pass dominates. It moves ~4.5 bytes a weight (read 0.5, write 2, the
// GEMM reads 2 again), ~1 ns per thousand weights on an H200, while the GEMM's arithmetic at T
// tokens costs 2 T flop a weight: below a few hundred tokens (a seq-64 step, a short packed
// batch, the prefill of a chat prompt) the pass costs more than the product. Here each weight's
// 0.5 bytes of codes are read once per tile of tokens and decoded in shared memory; the decoded
// values are nf4::decode_word's, bit for bit the dequantisation's bf16 weights, and the products
// accumulate in fp32 (mma.sync m16n8k16), so the result equals dequantise + cuBLASLt up to fp32
// summation order and the final bf16 rounding. Where it beats dequantise + cuBLASLt was measured
// (docs/qlora.md; the layer's kNf4FusedMaxTokens).
//
// Schedule: 128 threads (2 x 2 warps) own a [BM tokens, 64 outputs] tile of the result (BM 32,
// 64 or 128 by the token count) and walk the reduction in 64-wide steps, double-buffered: the
// next step's activation tile arrives by cp.async and its 2 KB of codes by one 16-byte load a
// thread while the tensor cores work on this one, then each thread decodes its 32 weights (half
// of one 64-weight NF4 block: one absmax) into the other weight buffer. A weight tile is
// [64 rows of W, 64 columns of W]: every row of it is exactly one NF4 block, because both of W's
// dimensions are multiples of 64 (every Qwen2.5 projection). The forward reads it as the [n, k]
// B operand (ldmatrix), the input gradient as the [k, n] one (ldmatrix.trans): the same tile,
// the two kernels differ only in which of W's dimensions is the reduction. At a few tokens the
// [T, out] grid alone would leave most SMs idle (q_proj: 56 tiles on 132 SMs), so the reduction
// is split over up to kMaxSplits CTAs, each writing its fp32 partial tile to a workspace; a second
// kernel sums the partials in a fixed order (deterministic, unlike atomics) and applies the bias,
// beta and the bf16 rounding. Without room in the workspace the split is smaller, down to none.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/attention_mma.cuh"
#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"
#include "peft/kernels/cuda/nf4_dequant.cuh"
#include "peft/kernels/cuda/nf4_tensor.cuh"
#include "peft/quant/nf4_decode.hpp"

namespace peft::cuda {

// W's rows and columns must be multiples of this (one weight tile's side = one NF4 block).
inline constexpr int kNf4GemmTile = 64;

// Whether the fused GEMM takes this weight: both dimensions whole 64-wide tiles (every Qwen2.5
// projection, 0.5B to 32B).
inline bool nf4_gemm_fits(const Nf4DeviceTensor& w) {
  return w.rows % kNf4GemmTile == 0 && w.cols % kNf4GemmTile == 0;
}

namespace detail {

inline constexpr int kNf4GemmThreads = 128;
inline constexpr int kNf4GemmMaxSplits = 8;
// How many CTAs an SM is given before the reduction stops being split further (each holds at
// most 49 KB of shared memory, so four to eight are resident). Measured on the H200 (7B shapes,
// 9-64 tokens, test_nf4_gemm's timing lines): gate_proj's forward at 9 tokens takes 71.8 us at 2,
// 62.0 at 4, 56.7 at 8, 57.5 at 16; the other shapes are within a few percent from 4 on.
inline constexpr int kNf4GemmCtasPerSm = 8;
static_assert(nf4::kBlock == kNf4GemmTile, "a weight tile's row is one NF4 block");

template <int BM>
constexpr std::size_t nf4_gemm_smem() {
  return sizeof(nf4::Nf4Tables) + 2 * static_cast<std::size_t>(BM + kNf4GemmTile) * kNf4GemmTile * sizeof(bf16);
}

// One thread's share of a weight tile as loaded: 16 bytes of codes (32 weights), their block's
// absmax code and its group's scale. Nothing here is used until the tile is decoded, after the
// tensor cores' work on the previous tile, so the loads' latency hides behind it (a warp issues in
// order: a use right after the load would stall it there).
struct Nf4TileCodes {
  uint4 words;
  std::uint32_t absmax_code;
  float scale;
};

// The codes of W's tile at (row0, col0): thread i takes row i / 2, half i % 2.
__device__ inline Nf4TileCodes load_tile_codes(const nf4::Nf4Data& w, int cols, int row0, int col0) {
  const int r = threadIdx.x >> 1, half = threadIdx.x & 1;
  const std::int64_t block = (static_cast<std::int64_t>(row0 + r) * cols + col0) / nf4::kBlock;
  Nf4TileCodes c;
  c.words = __ldg(reinterpret_cast<const uint4*>(w.packed + block * (nf4::kBlock / 2)) + half);
  c.absmax_code = __ldg(w.absmax_code + block);
  c.scale = __ldg(w.absmax_scale + block / nf4::kAbsmaxBlock);
  return c;
}

// The thread's 32 weights, decoded (quant/nf4_decode.hpp's arithmetic), into the swizzled
// [64, 64] tile.
__device__ inline void store_tile_weights(bf16* tile, const Nf4TileCodes& c, const float* map, const float* code,
                                          float offset) {
  const int r = threadIdx.x >> 1, half = threadIdx.x & 1;
  const float absmax = nf4::absmax_value(map[c.absmax_code], c.scale, offset);
  const std::uint32_t words[4] = {c.words.x, c.words.y, c.words.z, c.words.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    std::uint16_t bits[nf4::kChunk];
    nf4::decode_word(words[j], absmax, code, bits);
    Bf16x8 pack;
#pragma unroll
    for (int e = 0; e < nf4::kChunk; ++e) pack[e] = __ushort_as_bfloat16(bits[e]);
    store128(tile + swz<kNf4GemmTile>(r, half * 32 + j * 8), pack);
  }
}

// kInputGrad false: out[T, rows] = a[T, cols] W^T; true: out[T, cols] = a[T, rows] W. Block
// (x, y, z) = (64 outputs, BM tokens, reduction split). With partial set, the fp32 tile goes to
// partial[z][T][n_out] and nf4_gemm_finish applies bias and beta; else they are applied here.
template <bool kInputGrad, int BM>
__global__ void __launch_bounds__(kNf4GemmThreads)
    nf4_gemm_kernel(bf16* __restrict__ out, float* __restrict__ partial, const bf16* __restrict__ a, int tokens,
                    nf4::Nf4Data w, nf4::Nf4Tables tables, int rows, int cols, const bf16* __restrict__ bias,
                    float beta, int splits) {
  constexpr int T64 = kNf4GemmTile, MT = BM / 32;  // m16 tiles per warp (2 x 2 warps)
  extern __shared__ __align__(128) unsigned char smem[];
  float* map = reinterpret_cast<float*>(smem);
  float* code = map + 256;
  bf16* as = reinterpret_cast<bf16*>(smem + sizeof(nf4::Nf4Tables));  // [2][BM][64]
  bf16* ws = as + 2 * BM * T64;                                        // [2][64][64]
  load_nf4_tables(map, code, tables);

  const int n_out = kInputGrad ? cols : rows, n_red = kInputGrad ? rows : cols;
  const int n0 = blockIdx.x * T64, m0 = blockIdx.y * BM;
  const int steps = n_red / T64;
  const int kt0 = static_cast<int>(static_cast<long long>(steps) * blockIdx.z / splits);
  const int kt1 = static_cast<int>(static_cast<long long>(steps) * (blockIdx.z + 1) / splits);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp >> 1, wn = warp & 1;

  auto fetch = [&](int kt, int stage) {
    load_tile_async<BM, T64, kNf4GemmThreads>(as + stage * BM * T64, a, m0, tokens - m0, n_red, kt * T64);
    cp_async_commit();
    return kInputGrad ? load_tile_codes(w, cols, kt * T64, n0) : load_tile_codes(w, cols, n0, kt * T64);
  };

  float acc[MT][4][4] = {};
  if (kt0 < kt1) {
    store_tile_weights(ws, fetch(kt0, 0), map, code, w.offset);
    cp_async_wait<0>();
    __syncthreads();
  }
  for (int kt = kt0; kt < kt1; ++kt) {
    const int stage = (kt - kt0) & 1;
    const bool more = kt + 1 < kt1;
    Nf4TileCodes next{};
    if (more) next = fetch(kt + 1, stage ^ 1);
    const bf16* at = as + stage * BM * T64;
    const bf16* wt = ws + stage * T64 * T64;
#pragma unroll
    for (int kk = 0; kk < T64 / 16; ++kk) {
      std::uint32_t af[MT][4];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) ldsm_x4(af[mi], a_addr<T64>(at, wm * (BM / 2) + mi * 16, kk * 16, lane));
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) {
        std::uint32_t b[4];
        if constexpr (kInputGrad)
          ldsm_x4_t(b, bkn_addr<T64>(wt, kk * 16, wn * 32 + nj * 16, lane));
        else
          ldsm_x4(b, bnk_addr<T64>(wt, wn * 32 + nj * 16, kk * 16, lane));
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          mma16816(acc[mi][2 * nj], af[mi], b[0], b[1]);
          mma16816(acc[mi][2 * nj + 1], af[mi], b[2], b[3]);
        }
      }
    }
    if (more) store_tile_weights(ws + (stage ^ 1) * T64 * T64, next, map, code, w.offset);
    cp_async_wait<0>();
    __syncthreads();
  }

  // Accumulator (mi, j): rows +lane/4 and +8, columns 2 (lane % 4) and the next.
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + wm * (BM / 2) + mi * 16 + (lane >> 2) + 8 * h;
        const int col = n0 + wn * 32 + j * 8 + (lane & 3) * 2;
        if (row >= tokens) continue;
        float v0 = acc[mi][j][2 * h], v1 = acc[mi][j][2 * h + 1];
        const std::int64_t at = static_cast<std::int64_t>(row) * n_out + col;
        if (partial) {
          *reinterpret_cast<float2*>(partial + static_cast<std::int64_t>(blockIdx.z) * tokens * n_out + at) =
              make_float2(v0, v1);
          continue;
        }
        if (bias) v0 += __bfloat162float(bias[col]), v1 += __bfloat162float(bias[col + 1]);
        if (beta != 0.0f) {
          const __nv_bfloat162 old = *reinterpret_cast<const __nv_bfloat162*>(out + at);
          v0 = fmaf(beta, __bfloat162float(old.x), v0);
          v1 = fmaf(beta, __bfloat162float(old.y), v1);
        }
        *reinterpret_cast<__nv_bfloat162*>(out + at) = __floats2bfloat162_rn(v0, v1);
      }
}

// out[i] = sum over s of partial[s][i] (in order) (+ bias[i % n_out]) (+ beta out[i]), i < count.
__global__ void nf4_gemm_finish_kernel(bf16* __restrict__ out, const float* __restrict__ partial, int splits,
                                       std::int64_t count, int n_out, const bf16* __restrict__ bias, float beta) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    float v = partial[i];
    for (int s = 1; s < splits; ++s) v += partial[s * count + i];
    if (bias) v += __bfloat162float(bias[i % n_out]);
    if (beta != 0.0f) v = fmaf(beta, __bfloat162float(out[i]), v);
    out[i] = __float2bfloat16_rn(v);
  }
}

template <bool kInputGrad, int BM>
void launch_nf4_gemm(bf16* out, const bf16* a, int tokens, const Nf4DeviceTensor& w, const bf16* bias, float beta,
                     float* workspace, std::size_t workspace_bytes, cudaStream_t stream, int ctas_per_sm) {
  constexpr std::size_t smem = nf4_gemm_smem<BM>();
  // Every call, as attention.cuh does: the attribute is the current device's.
  PEFT_CUDA_CHECK(cudaFuncSetAttribute(nf4_gemm_kernel<kInputGrad, BM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
  const int rows = static_cast<int>(w.rows), cols = static_cast<int>(w.cols);
  const int n_out = kInputGrad ? cols : rows, steps = (kInputGrad ? rows : cols) / kNf4GemmTile;
  const dim3 tiles(static_cast<unsigned>(n_out / kNf4GemmTile), static_cast<unsigned>((tokens + BM - 1) / BM));
  // Split the reduction until the grid gives each SM ctas_per_sm CTAs (each keeping at least four
  // steps), as far as the workspace holds the partial tiles.
  const int sms = current_device_kernels().gpu.sms;
  const long long ctas = static_cast<long long>(tiles.x) * tiles.y;
  const std::size_t slice = static_cast<std::size_t>(tokens) * static_cast<std::size_t>(n_out) * sizeof(float);
  long long splits = (static_cast<long long>(ctas_per_sm) * sms + ctas - 1) / ctas;
  splits = std::min<long long>({splits, kNf4GemmMaxSplits, std::max(1, steps / 4)});
  if (!workspace) splits = 1;
  else splits = std::min<long long>(splits, static_cast<long long>(workspace_bytes / slice));
  if (splits < 1) splits = 1;
  const dim3 grid(tiles.x, tiles.y, static_cast<unsigned>(splits));
  nf4_gemm_kernel<kInputGrad, BM><<<grid, kNf4GemmThreads, smem, stream>>>(
      out, splits > 1 ? workspace : nullptr, a, tokens, w.data(), nf4::decode_tables(), rows, cols, bias, beta,
      static_cast<int>(splits));
  PEFT_CUDA_CHECK_LAUNCH("nf4_gemm_kernel");
  if (splits == 1) return;
  const std::int64_t count = static_cast<std::int64_t>(tokens) * n_out;
  const std::int64_t wanted = (count + 255) / 256, resident = static_cast<std::int64_t>(sms) * 8;
  nf4_gemm_finish_kernel<<<static_cast<unsigned>(std::min(wanted, resident)), 256, 0, stream>>>(
      out, workspace, static_cast<int>(splits), count, n_out, bias, beta);
  PEFT_CUDA_CHECK_LAUNCH("nf4_gemm_finish_kernel");
}

template <bool kInputGrad>
void nf4_gemm(const char* what, bf16* out, const bf16* a, int tokens, const Nf4DeviceTensor& w, const bf16* bias,
              float beta, float* workspace, std::size_t workspace_bytes, cudaStream_t stream, int ctas_per_sm) {
  const auto aligned = [](const void* p, std::uintptr_t n) { return reinterpret_cast<std::uintptr_t>(p) % n == 0; };
  const std::string shape = std::to_string(tokens) + " tokens against a [" + std::to_string(w.rows) + ", " +
                            std::to_string(w.cols) + "] NF4 weight";
  if (tokens < 0 || !nf4_gemm_fits(w))
    throw Error(std::string(what) + ": " + shape + ": the weight's rows and columns must be multiples of " +
                std::to_string(kNf4GemmTile));
  if (tokens == 0 || w.numel() == 0) return;
  if (!out || !a || !w.packed || !w.absmax_code || !w.absmax_scale)
    throw Error(std::string(what) + ": " + shape + ": null device pointer");
  if (!aligned(out, 16) || !aligned(a, 16) || !aligned(w.packed, 16) || !aligned(workspace, 16))
    throw Error(std::string(what) + ": " + shape +
                ": the output, the activations, the workspace and the packed codes must be 16-byte aligned");
  if (tokens <= 32)
    launch_nf4_gemm<kInputGrad, 32>(out, a, tokens, w, bias, beta, workspace, workspace_bytes, stream, ctas_per_sm);
  else if (tokens <= 64)
    launch_nf4_gemm<kInputGrad, 64>(out, a, tokens, w, bias, beta, workspace, workspace_bytes, stream, ctas_per_sm);
  else
    launch_nf4_gemm<kInputGrad, 128>(out, a, tokens, w, bias, beta, workspace, workspace_bytes, stream, ctas_per_sm);
}

}  // namespace detail

// y[tokens, w.rows] = x[tokens, w.cols] w^T (+ bias[w.rows]) (+ beta y), bf16 row-major; y is
// only read when beta != 0. workspace (fp32, may be null): where the split reduction's partial
// tiles go (up to kNf4GemmMaxSplits x tokens x w.rows floats; less room, less split). Every
// pointer 16-byte aligned. ctas_per_sm: how far the reduction is split (kept at its default but
// to measure it: tests/cuda/test_nf4_gemm.cu). Asynchronous on `stream`.
inline void nf4_gemm_forward(bf16* y, const bf16* x, int tokens, const Nf4DeviceTensor& w, const bf16* bias,
                             float beta, float* workspace, std::size_t workspace_bytes, cudaStream_t stream,
                             int ctas_per_sm = detail::kNf4GemmCtasPerSm) {
  detail::nf4_gemm<false>("nf4_gemm_forward", y, x, tokens, w, bias, beta, workspace, workspace_bytes, stream,
                          ctas_per_sm);
}

// dx[tokens, w.cols] = dy[tokens, w.rows] w (+ beta dx); as nf4_gemm_forward otherwise (partial
// tiles of tokens x w.cols floats).
inline void nf4_gemm_input_grad(bf16* dx, const bf16* dy, int tokens, const Nf4DeviceTensor& w, float beta,
                                float* workspace, std::size_t workspace_bytes, cudaStream_t stream,
                                int ctas_per_sm = detail::kNf4GemmCtasPerSm) {
  detail::nf4_gemm<true>("nf4_gemm_input_grad", dx, dy, tokens, w, nullptr, beta, workspace, workspace_bytes, stream,
                         ctas_per_sm);
}

}  // namespace peft::cuda
