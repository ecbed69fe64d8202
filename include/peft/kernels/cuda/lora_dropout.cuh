// LoRA's two passes over its input with dropout folded in, so neither the forward nor the
// backward writes the dropped input x * mask / (1 - p) to memory and reads it back:
//   lora_down_dropout        xa [T, rp] = drop(x) A^T                       (forward)
//   lora_dropout_backward    dA [rp, in] += dxa^T drop(x)                   (backward, one pass:
//                            dx [T, in]  += ((dxa A) * mask) / (1 - p)       x and dx read once)
// The mask is elementwise.cuh's (`detail::dropped` of the same seed and row-major index), so these
// kernels drop exactly the elements dropout_forward / dropout_backward_add drop, and the dropped
// input is rounded to bf16 before use as dropout_forward's output is (the cuBLAS path's operand).
//
// The FMA kernels: the padded rank is a template parameter so the accumulators live in registers.
// The forward tiles A through shared memory (each block reuses one tile for its tokens); the
// backward gives each thread one or two input columns for a run of tokens, keeps A's columns in
// registers, and adds its dA partial sums with atomics (fp32; the order of those adds is not fixed,
// a ~1e-7 relative wobble). Measured on the H200 (cuda_test_lora_dropout's timings,
// bench/RESULTS.md) they beat dropout_forward + cuBLASLt at rank 8 and lose at 64, where the FMAs
// dominate; the model fuses dropout only where both passes run on tensor cores instead
// (lora_dropout_on_tensor_cores: padded ranks 8..64, lora_dropout_mma.cuh). At rank 8 the FMA forward
// streamed a 7B q_proj input at ~0.6 TB/s, bound by its per-element work, not by bytes in flight
// or occupancy. Tried on it: a 32-bit mask hash (27 -> 24 us, kept), four chunks of x a lane in
// flight (26 us, not kept), the tiles software-pipelined (25 us; down_proj 111 -> 100, kept), each
// row split over 2 or 4 warps (q_proj 24.5 -> 25.6 / 33.3 us, down_proj 97.9 -> 105.6 / 126.6, not
// kept); the mma kernel: q_proj 26.6 -> 18.0 us, down_proj 100.6 -> 68.6 (and 15.5 / 55.5 once its
// dropped input was rounded to bf16 once, not twice). The FMA backward had the bytes-in-flight
// problem first (its grid is many blocks an SM now); on tensor cores (T=2048, H200): q_proj
// 24.4 -> 20.6 us, down_proj 132.0 -> 82.0.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"
#include "peft/kernels/cuda/elementwise.cuh"
#include "peft/kernels/cuda/lora_dropout_mma.cuh"

namespace peft::cuda {
namespace detail {

constexpr int kLoraMaxFusedRank = 64;
constexpr int kLoraTile = 256;  // input columns per shared tile of A: 32 lanes x 8
constexpr int kLoraDownWarps = 8;
constexpr int kLoraBackThreads = 128;  // x 1 or 2 columns each
constexpr int kLoraBackTokens = 32;    // dxa rows staged in shared memory at a time

// The dropped input as dropout_kernel stores it: 0 or bf16(x / (1 - p)).
__device__ inline float dropped_input(float x, bool drop, float keep) { return drop ? 0.0f : to_float(to_bf16(x * keep)); }

// One warp per TPW tokens; the block's tokens share each tile of A. Software-pipelined: the next
// tile's x and A are loaded into registers while this tile's mask and products are computed, so a
// tile costs one memory round trip or its arithmetic, whichever is longer, not both in a row; A's
// tile is double-buffered in shared memory up to rank 32 (2 x 32 x 256 x 2 bytes = 32 KB), single
// above (one more barrier a tile).
template <int RP, int TPW>
__global__ void __launch_bounds__(kLoraDownWarps * 32)
    lora_down_dropout_kernel(bf16* __restrict__ xa, const bf16* __restrict__ x, const bf16* __restrict__ a, int T, int in,
                             const std::uint64_t* __restrict__ seed_ptr, float p) {
  constexpr int kBuffers = RP <= 32 ? 2 : 1;
  constexpr int kThreads = kLoraDownWarps * 32;
  constexpr int kAPerThread = RP * (kLoraTile / 8) / kThreads;  // 16-byte pieces of A's tile a thread
  static_assert(RP * (kLoraTile / 8) % kThreads == 0, "A's tile splits evenly over the block");
  __shared__ __align__(16) bf16 tile[kBuffers][RP * kLoraTile];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int t0 = (static_cast<int>(blockIdx.x) * kLoraDownWarps + warp) * TPW;
  const std::uint64_t seed = *seed_ptr;
  const float keep = 1.0f / (1.0f - p);
  float acc[TPW][RP];
#pragma unroll
  for (int j = 0; j < TPW; ++j)
#pragma unroll
    for (int r = 0; r < RP; ++r) acc[j][r] = 0.0f;

  Bf16x8 xv[TPW], av[kAPerThread];
  auto load_tiles = [&](int k0) {  // this lane's 8 columns of x for its tokens, this thread's share of A
    const int col = k0 + lane * 8;
#pragma unroll
    for (int j = 0; j < TPW; ++j) {
      if (t0 + j < T && col < in) {
        xv[j] = load128cs(x + static_cast<std::size_t>(t0 + j) * static_cast<std::size_t>(in) + col);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) xv[j][e] = to_bf16(0.0f);
      }
    }
#pragma unroll
    for (int q = 0; q < kAPerThread; ++q) {
      const int i = static_cast<int>(threadIdx.x) + q * kThreads;
      const int r = i / (kLoraTile / 8), c = (i % (kLoraTile / 8)) * 8;
      if (k0 + c < in) {
        av[q] = load128(a + static_cast<std::size_t>(r) * in + k0 + c);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) av[q][e] = to_bf16(0.0f);
      }
    }
  };
  auto store_a = [&](int buffer) {
#pragma unroll
    for (int q = 0; q < kAPerThread; ++q) {
      const int i = static_cast<int>(threadIdx.x) + q * kThreads;
      store128(tile[buffer] + (i / (kLoraTile / 8)) * kLoraTile + (i % (kLoraTile / 8)) * 8, av[q]);
    }
  };

  load_tiles(0);
  store_a(0);
  __syncthreads();
  int buffer = 0;
  for (int k0 = 0; k0 < in; k0 += kLoraTile) {
    Bf16x8 xc[TPW];
#pragma unroll
    for (int j = 0; j < TPW; ++j) xc[j] = xv[j];
    const bool more = k0 + kLoraTile < in;
    if (more) load_tiles(k0 + kLoraTile);  // in flight during this tile's work
    const int col = k0 + lane * 8;
    float xd[TPW][8];
#pragma unroll
    for (int j = 0; j < TPW; ++j) {
      const std::uint64_t idx = static_cast<std::uint64_t>(t0 + j) * static_cast<std::uint64_t>(in) + col;
#pragma unroll
      for (int e = 0; e < 8; ++e) xd[j][e] = dropped_input(to_float(xc[j][e]), dropped(seed, idx + e, p), keep);
    }
#pragma unroll
    for (int r = 0; r < RP; ++r) {
      const Bf16x8 w = load128(tile[buffer] + r * kLoraTile + lane * 8);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float we = to_float(w[e]);
#pragma unroll
        for (int j = 0; j < TPW; ++j) acc[j][r] += xd[j][e] * we;
      }
    }
    if (more) {
      if constexpr (kBuffers == 1) __syncthreads();  // this tile's readers are done
      buffer = kBuffers == 2 ? buffer ^ 1 : 0;
      store_a(buffer);
      __syncthreads();
    }
  }
#pragma unroll
  for (int j = 0; j < TPW; ++j) {
    const int t = t0 + j;
#pragma unroll
    for (int r = 0; r < RP; ++r) {
      float v = acc[j][r];
#pragma unroll
      for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (t < T && lane == r % 32) xa[static_cast<std::size_t>(t) * RP + r] = to_bf16(v);
    }
  }
}

// C (1 or 2) adjacent bf16 columns as floats, and back.
template <int C>
__device__ inline void load_columns(const bf16* p, float (&v)[C]) {
  if constexpr (C == 2) {
    const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
    v[0] = f.x;
    v[1] = f.y;
  } else {
    v[0] = to_float(*p);
  }
}
template <int C>
__device__ inline void store_columns(bf16* p, const float (&v)[C]) {
  if constexpr (C == 2) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(v[0], v[1]);
  } else {
    *p = to_bf16(v[0]);
  }
}

// Each thread: C input columns from c over tokens [blockIdx.y * per_block, ...); A's columns and
// the dA partial sums stay in registers (2 C RP floats: C = 1 above rank 32, so rank 64 fits).
template <int RP, int C>
__global__ void __launch_bounds__(kLoraBackThreads)
    lora_dropout_backward_kernel(bf16* __restrict__ dx, float* __restrict__ da, const bf16* __restrict__ dxa,
                                 const bf16* __restrict__ x, const bf16* __restrict__ a, int T, int in, int per_block,
                                 const std::uint64_t* __restrict__ seed_ptr, float p) {
  __shared__ __align__(16) float rows[kLoraBackTokens * RP];
  const int c = (static_cast<int>(blockIdx.x) * kLoraBackThreads + static_cast<int>(threadIdx.x)) * C;
  const bool live = c < in;  // in % 8 == 0: all C columns are in range
  const int begin = static_cast<int>(blockIdx.y) * per_block, end = min(T, begin + per_block);
  const std::uint64_t seed = *seed_ptr;
  const float keep = 1.0f / (1.0f - p);
  float w[RP][C], g[RP][C];  // A[r, c + e]; dA partial sums
#pragma unroll
  for (int r = 0; r < RP; ++r) {
    if (live) {
      load_columns<C>(a + static_cast<std::size_t>(r) * in + c, w[r]);
    } else {
#pragma unroll
      for (int e = 0; e < C; ++e) w[r][e] = 0.0f;
    }
#pragma unroll
    for (int e = 0; e < C; ++e) g[r][e] = 0.0f;
  }
  for (int tb = begin; tb < end; tb += kLoraBackTokens) {
    const int n = min(kLoraBackTokens, end - tb);
    __syncthreads();
    for (int i = static_cast<int>(threadIdx.x); i < n * RP; i += kLoraBackThreads)
      rows[i] = to_float(dxa[static_cast<std::size_t>(tb) * RP + i]);
    __syncthreads();
    if (!live) continue;
#pragma unroll 2
    for (int j = 0; j < n; ++j) {
      const std::uint64_t idx = static_cast<std::uint64_t>(tb + j) * static_cast<std::uint64_t>(in) + c;
      float xv[C], dv[C], s[C];
      bool drop[C];
      load_columns<C>(x + idx, xv);
#pragma unroll
      for (int e = 0; e < C; ++e) {
        drop[e] = dropped(seed, idx + e, p);
        xv[e] = dropped_input(xv[e], drop[e], keep);
        s[e] = 0.0f;
      }
      const float* d = rows + j * RP;
#pragma unroll
      for (int r = 0; r < RP; ++r)
#pragma unroll
        for (int e = 0; e < C; ++e) {
          s[e] += d[r] * w[r][e];
          g[r][e] += d[r] * xv[e];
        }
      load_columns<C>(dx + idx, dv);
#pragma unroll
      for (int e = 0; e < C; ++e) dv[e] += (drop[e] ? 0.0f : keep) * s[e];
      store_columns<C>(dx + idx, dv);
    }
  }
  if (!live) return;
#pragma unroll
  for (int r = 0; r < RP; ++r)
#pragma unroll
    for (int e = 0; e < C; ++e) atomicAdd(da + static_cast<std::size_t>(r) * in + c + e, g[r][e]);
}

// f(std::integral_constant<int, rp>) for a padded rank the kernels are compiled for.
template <class F>
void with_fused_rank(int rp, const char* what, F&& f) {
  switch (rp) {
    case 8: return f(std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, 16>{});
    case 24: return f(std::integral_constant<int, 24>{});
    case 32: return f(std::integral_constant<int, 32>{});
    case 40: return f(std::integral_constant<int, 40>{});
    case 48: return f(std::integral_constant<int, 48>{});
    case 56: return f(std::integral_constant<int, 56>{});
    case 64: return f(std::integral_constant<int, 64>{});
    default:
      throw Error(std::string(what) + ": padded LoRA rank " + std::to_string(rp) +
                  " has no fused kernel (multiples of 8 up to 64; lora_dropout_fusable says which)");
  }
}

inline void check_lora_dropout_shape(const char* what, int in) {
  if (in % 8 != 0) throw Error(std::string(what) + ": input width " + std::to_string(in) + " is not a multiple of 8");
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// Blocks per SM the backward aims for (token slices x column blocks): each thread has only its C
// columns of x and dx in flight a token, so it takes many warps to cover the memory's latency.
// 16 unless PEFT_LORA_BACK_BLOCKS_PER_SM says otherwise (a tuning knob; cuda_test_lora_dropout's
// timing lines try several). H200, rank 8, seq 2048 (bench/RESULTS.md): down_proj 278 us at 2,
// 159 at 4, 161 at 8, 132 at 16; q_proj 33, 31, 26, 26.
inline int& lora_back_blocks_per_sm() {
  static int per_sm = env_tuning_knob("PEFT_LORA_BACK_BLOCKS_PER_SM", 16);
  return per_sm;
}

// Whether the forward at ranks 8..64 runs on tensor cores (lora_down_dropout_mma_kernel); on unless
// PEFT_LORA_DOWN_MMA=0 (the A/B; cuda_test_lora_dropout checks both).
inline bool& lora_down_mma() {
  static bool on = env_switch_on("PEFT_LORA_DOWN_MMA");
  return on;
}

// Whether the backward at ranks 8..64 runs on tensor cores (lora_dropout_backward_mma_kernel); on unless
// PEFT_LORA_BACK_MMA=0 (the A/B; cuda_test_lora_dropout checks both).
inline bool& lora_back_mma() {
  static bool on = env_switch_on("PEFT_LORA_BACK_MMA");
  return on;
}

// Blocks per SM of the tensor-core backward's grid: 0 (the default) for as many as fit at once,
// else PEFT_LORA_BACK_MMA_BLOCKS_PER_SM's value (cuda_test_lora_dropout's timing lines try some).
inline int& lora_back_mma_blocks_per_sm() {
  static int per_sm = env_tuning_knob("PEFT_LORA_BACK_MMA_BLOCKS_PER_SM", 0);
  return per_sm;
}

namespace detail {
// The tensor-core backward's grid: as many blocks as fit (by registers: 4 an SM at rank 8, 3 above;
// LoraBackRanks) or the knob's.
template <int G>
void launch_lora_back_mma(bf16* dx, float* da, const bf16* dxa, const bf16* x, const bf16* a, int tokens, int in,
                          const std::uint64_t* seed, float p, cudaStream_t stream) {
  using R = LoraBackRanks<G>;
  static const int fit = blocks_that_fit(lora_dropout_backward_mma_kernel<G>, kLoraBackMmaWarps * 32, R::kSmemBytes);
  const int per_sm = lora_back_mma_blocks_per_sm() > 0 ? lora_back_mma_blocks_per_sm() : fit;
  const unsigned blocks = rank8_share_blocks(kLoraBackMmaWarps / R::kTeam, tokens, in, per_sm);
  lora_dropout_backward_mma_kernel<G>
      <<<blocks, kLoraBackMmaWarps * 32, R::kSmemBytes, stream>>>(dx, da, dxa, x, a, tokens, in, seed, p);
  PEFT_CUDA_CHECK_LAUNCH("lora_dropout_backward_mma_kernel");
}
}  // namespace detail

// Whether both passes run on tensor cores at this padded rank (the model then fuses dropout at it;
// above rank 8 only then: the FMA kernels lose to dropout + cuBLASLt there). Every multiple of 8 up
// to 64; the passes still take the FMA kernels for pointers the tensor-core ones cannot use.
inline bool lora_dropout_on_tensor_cores(int rp) {
  return detail::lora_mma_rank(rp) && lora_down_mma() && lora_back_mma();
}

// Whether the fused kernels take this padded rank (else the caller keeps the dropout buffer path).
inline bool lora_dropout_fusable(int rp) { return rp > 0 && rp % 8 == 0 && rp <= detail::kLoraMaxFusedRank; }

// Splits of the row the tensor-core forward takes for `tokens` x `in` at padded rank `rp`, its blocks
// `tiles` 16-token tiles (kLoraDownTiles). A batch of at most a quarter as many blocks as SMs is
// split for two blocks an SM, each split at least 32 steps of 16 columns (two a warp), and only as
// many as `scratch_floats` holds partials for (splits x tokens x rp). Measured on the H200
// (cuda_test_lora_dropout's timing lines): at 64 tokens q_proj 15.2 -> 10.4 us, down_proj 45.6 ->
// 13.0; at 2048 tokens (128 blocks) 3 splits were slower (q_proj 16.2 -> 22.4, down_proj 52.8 ->
// 60.3: the partials and the second launch cost more than the overlap gives). Two-tile blocks
// filling at most half the SMs are split to fill them once (2048 tokens: 64 blocks x 2).
// PEFT_LORA_DOWN_SPLIT=0: never split (the A/B).
inline int lora_down_splits(int tokens, int in, std::size_t scratch_floats, int rp = 8, int tiles = 1) {
  static const bool on = env_switch_on("PEFT_LORA_DOWN_SPLIT");
  const int blocks = (tokens + 16 * tiles - 1) / (16 * tiles), steps = (in + 15) / 16;
  const int sms = current_device_kernels().gpu.sms;
  if (!on) return 1;
  int want = (2 * sms + blocks - 1) / blocks;
  if (4 * blocks > sms) {
    if (tiles == 1 || 2 * blocks > sms) return 1;
    want = sms / blocks;
  }
  const int most = static_cast<int>(std::min<std::size_t>(scratch_floats / (static_cast<std::size_t>(tokens) * rp), 1 << 20));
  return std::max(1, std::min({want, steps / 32, most}));
}

// xa [T, rp] = drop(x) A^T, x [T, in], A [rp, in] (bf16), *seed on the device, dropout p. `scratch`
// (fp32, `scratch_floats` of them; may be null) lets the tensor-core kernel split long rows over blocks.
inline void lora_down_dropout(bf16* xa, const bf16* x, const bf16* a, int rp, int tokens, int in,
                              const std::uint64_t* seed, float p, cudaStream_t stream, float* scratch = nullptr,
                              std::size_t scratch_floats = 0) {
  detail::check_lora_dropout_shape("lora_down_dropout", in);
  if (tokens == 0) return;
  // Above rank 8 the tensor-core kernel reads x and A 8 bytes an access; other pointers take the FMA one.
  if (detail::lora_mma_rank(rp) && lora_down_mma() && (rp == 8 || (detail::aligned16(x) && detail::aligned16(a)))) {
    detail::with_mma_groups(rp, [&](auto groups) {
      constexpr int G = decltype(groups)::value;
      auto launch = [&](auto tiles) {
        constexpr int TT = decltype(tiles)::value;
        const int splits = scratch ? lora_down_splits(tokens, in, scratch_floats, rp, TT) : 1;
        const int k_chunk = ((in + 15) / 16 + splits - 1) / splits * 16;
        const dim3 grid(static_cast<unsigned>((tokens + 16 * TT - 1) / (16 * TT)),
                        static_cast<unsigned>((in + k_chunk - 1) / k_chunk));
        float* part = grid.y > 1 ? scratch : nullptr;
        detail::lora_down_dropout_mma_kernel<G, TT>
            <<<grid, detail::kLoraMmaWarps * 32, 0, stream>>>(xa, part, x, a, tokens, in, k_chunk, seed, p);
        PEFT_CUDA_CHECK_LAUNCH("lora_down_dropout_mma_kernel");
        if (part) detail::rank8_add_splits(xa, part, tokens, static_cast<int>(grid.y), stream, rp);
      };
      // Two-tile blocks want the row split (half as many blocks) unless the batch fills the SMs anyway.
      constexpr int TT = detail::kLoraDownTiles<G>;
      if (TT == 1 || scratch || tokens >= 16 * TT * current_device_kernels().gpu.sms)
        launch(std::integral_constant<int, TT>{});
      else
        launch(std::integral_constant<int, 1>{});
    });
    return;
  }
  detail::with_fused_rank(rp, "lora_down_dropout", [&](auto r) {
    constexpr int RP = decltype(r)::value;
    constexpr int TPW = RP <= 16 ? 1 : 2;  // more tokens a warp share a tile read at higher rank
    const unsigned blocks = static_cast<unsigned>((tokens + detail::kLoraDownWarps * TPW - 1) / (detail::kLoraDownWarps * TPW));
    detail::lora_down_dropout_kernel<RP, TPW><<<blocks, detail::kLoraDownWarps * 32, 0, stream>>>(xa, x, a, tokens, in,
                                                                                                 seed, p);
  });
  PEFT_CUDA_CHECK_LAUNCH("lora_down_dropout_kernel");
}

// dA [rp, in] += dxa^T drop(x) (fp32) and dx [T, in] += (dxa A) * mask / (1 - p) (bf16), one pass.
inline void lora_dropout_backward(bf16* dx, float* da, const bf16* dxa, const bf16* x, const bf16* a, int rp, int tokens,
                                  int in, const std::uint64_t* seed, float p, cudaStream_t stream) {
  detail::check_lora_dropout_shape("lora_dropout_backward", in);
  if (tokens == 0) return;
  // The tensor-core kernel moves 16 bytes an access (x, dx, A, dA); other pointers take the FMA one.
  using detail::aligned16;
  // Above rank 8 it also reads a token's dxa words 8 or 16 bytes at a time.
  if (detail::lora_mma_rank(rp) && lora_back_mma() && aligned16(dx) && aligned16(da) && aligned16(x) && aligned16(a) &&
      (rp == 8 || aligned16(dxa))) {
    detail::with_mma_groups(rp, [&](auto groups) {
      detail::launch_lora_back_mma<decltype(groups)::value>(dx, da, dxa, x, a, tokens, in, seed, p, stream);
    });
    return;
  }
  detail::with_fused_rank(rp, "lora_dropout_backward", [&](auto r) {
    constexpr int RP = decltype(r)::value;
    constexpr int C = RP <= 32 ? 2 : 1;
    const int col_blocks = (in + C * detail::kLoraBackThreads - 1) / (C * detail::kLoraBackThreads);
    // Enough token slices for lora_back_blocks_per_sm() blocks an SM; a slice no shorter than one
    // staged group of rows.
    const int max_slices = (tokens + detail::kLoraBackTokens - 1) / detail::kLoraBackTokens;
    const int slices = std::clamp((lora_back_blocks_per_sm() * current_device_kernels().gpu.sms + col_blocks - 1) /
                                      col_blocks, 1, max_slices);
    const int per_block = (tokens + slices - 1) / slices;
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>((tokens + per_block - 1) / per_block));
    detail::lora_dropout_backward_kernel<RP, C>
        <<<grid, detail::kLoraBackThreads, 0, stream>>>(dx, da, dxa, x, a, tokens, in, per_block, seed, p);
  });
  PEFT_CUDA_CHECK_LAUNCH("lora_dropout_backward_kernel");
}

}  // namespace peft::cuda
