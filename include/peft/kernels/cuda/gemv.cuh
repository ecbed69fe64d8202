// One-row matrix products for the decode step: y[o] = x . W[o] (+ bias + LoRA + residual), with
// the work that surrounds them at one token fused in (gemv_work.cuh), so a decoder layer is 4 of
// these launches plus one attention kernel (model/decode.cuh).
//
// Why not cuBLASLt: at one token a projection is a matrix-vector product, bound by reading W once
// from HBM. A GEMM library tiles for M >= 64 and wastes most of each tile at M = 1, and a LoRA
// projection there is three launches (base, x A^T, (x A^T) B^T) plus a residual add. Several
// projections of the same input (q/k/v, gate/up) are "segments" of one launch, so the small ones
// ride along with the big one instead of paying a launch and a wave tail each. x sits in shared
// memory, staged once per block; accumulation is fp32.
//
// Two kernels read the weights:
//   - gemv_stream_kernel (Hopper): one block an SM; each warp streams its rows through a ring of
//     4 KB pieces in shared memory filled by bulk copies (bulk_copy.cuh), 8-16 KB a warp in
//     flight with no registers held. The first pieces are requested before the kernel waits on
//     the previous one (programmatic dependent launch): at ~105 KB of shared memory a block, the
//     next launch's block fits beside the running one on its SM, so the weights of the next
//     projection are on their way while this one finishes, and HBM does not idle between the
//     step's ~140 kernels. Items go round-robin over the blocks first, so every SM gets the same
//     share of rows.
//   - gemv_row_kernel (every GPU): a warp owns an output row (or a pair) and streams it with
//     16-byte evict-first loads, four a lane in flight; 4 blocks an SM. Measured on the H200 it
//     reached ~41% of the bandwidth on the 26-33 MB projections (q/k/v, o): its blocks fill the
//     register file, so the next kernel can only start as they leave, and each row costs a few
//     dependent round trips (bench/RESULTS.md).
// Both run the same work items in the same per-row order of products within a lane, but their
// fp32 sums are split differently (bits may differ between the two, never between runs of one).
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/bulk_copy.cuh"
#include "peft/kernels/cuda/gemv_work.cuh"

namespace peft::cuda {
namespace detail {

__device__ inline float gemv_dot(const bf16* __restrict__ w, const bf16* xs, int in, int lane) {
  float acc = 0.0f;
  int c = lane * 8;
  for (; c + 3 * 256 < in; c += 4 * 256) {  // four loads in flight per lane
    const Bf16x8 w0 = load128cs(w + c), w1 = load128cs(w + c + 256), w2 = load128cs(w + c + 512),
                 w3 = load128cs(w + c + 768);
    const Bf16x8 x0 = load128(xs + c), x1 = load128(xs + c + 256), x2 = load128(xs + c + 512),
                 x3 = load128(xs + c + 768);
#pragma unroll
    for (int i = 0; i < 8; ++i)
      acc += to_float(w0[i]) * to_float(x0[i]) + to_float(w1[i]) * to_float(x1[i]) +
             to_float(w2[i]) * to_float(x2[i]) + to_float(w3[i]) * to_float(x3[i]);
  }
  for (; c < in; c += 256) {
    const Bf16x8 w0 = load128cs(w + c), x0 = load128(xs + c);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc += to_float(w0[i]) * to_float(x0[i]);
  }
  return warp_sum(acc);
}

// Two rows against the same x (RoPE pairs, gate/up), their loads interleaved: as many round
// trips as gemv_dot's one row, for both.
__device__ inline void gemv_dot2(const bf16* __restrict__ w1, const bf16* __restrict__ w2, const bf16* xs, int in,
                                 int lane, float& r1, float& r2) {
  float a1 = 0.0f, a2 = 0.0f;
  int c = lane * 8;
  for (; c + 3 * 256 < in; c += 4 * 256) {
    Bf16x8 p[4], q[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      p[u] = load128cs(w1 + c + u * 256);
      q[u] = load128cs(w2 + c + u * 256);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const Bf16x8 x = load128(xs + c + u * 256);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        a1 += to_float(p[u][i]) * to_float(x[i]);
        a2 += to_float(q[u][i]) * to_float(x[i]);
      }
    }
  }
  for (; c < in; c += 256) {
    const Bf16x8 p0 = load128cs(w1 + c), q0 = load128cs(w2 + c), x0 = load128(xs + c);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      a1 += to_float(p0[i]) * to_float(x0[i]);
      a2 += to_float(q0[i]) * to_float(x0[i]);
    }
  }
  r1 = warp_sum(a1);
  r2 = warp_sum(a2);
}


// The first weight row warp `gw` will read (for the prefetch before the previous kernel ends).
__device__ inline const bf16* gemv_first_row(const GemvArgs& a, int gw) {
  if (gw < a.lora_items || gw - a.lora_items >= a.items) return nullptr;
  return gemv_item(a, gw - a.lora_items).w1;
}

__global__ void __launch_bounds__(32 * kGemvWarps, 4) gemv_row_kernel(GemvArgs a) {  // 4 blocks an SM: <= 64 registers
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  bf16* xs = reinterpret_cast<bf16*>(gemv_smem);
  __shared__ float red[kGemvWarps];
  __shared__ int red_id[kGemvWarps];
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int gw = static_cast<int>(blockIdx.x) * kGemvWarps + warp, warps = static_cast<int>(gridDim.x) * kGemvWarps;
  {  // before waiting on the previous kernel: pull the first 4 KB of this warp's first row into L2
    const bf16* w = gemv_first_row(a, gw);
    for (int at = lane * 8; w && at < a.in && at < 2048; at += 256) asm volatile("prefetch.global.L2 [%0];" ::"l"(w + at));
  }
  pdl_wait();
  pdl_release();
  gemv_stage_x(a, xs, red);
  GemvXa xa;
  float best = -INFINITY;
  int best_id = a.seg[0].rows;
  for (int item = gw; item < a.lora_items + a.items; item += warps) {
    if (item < a.lora_items) {
      gemv_lora_item(a, item, xs, lane);
      continue;
    }
    const GemvItem m = gemv_item(a, item - a.lora_items);
    float r1, r2 = 0.0f;
    if (m.w2)
      gemv_dot2(m.w1, m.w2, xs, a.in, lane, r1, r2);
    else
      r1 = gemv_dot(m.w1, xs, a.in, lane);
    gemv_item_finish(a, m, r1, r2, lane, xa, best, best_id);
  }
  gemv_block_exit(a, best, best_id, red, red_id);
}

constexpr int kPieceElems = 2048;  // a bulk copy: 4 KB of a row
constexpr int kPieceBytes = kPieceElems * 2;
constexpr int kStreamMaxDepth = 4;  // pieces in flight a warp

// Shared memory of gemv_stream_kernel: x (rounded up to 128 bytes), then each warp's ring of
// `depth` pieces, then its `depth` barriers.
__host__ __device__ inline int gemv_stream_x_bytes(int in) { return (in * 2 + 127) / 128 * 128; }
__host__ __device__ inline int gemv_stream_smem(int in, int depth) {
  return gemv_stream_x_bytes(in) + kGemvWarps * depth * (kPieceBytes + 8);
}

// The dot product of one piece of a row (n inputs from x's column c0) with x, this lane's share.
__device__ inline float gemv_piece_dot(const bf16* w, const bf16* xs, int n, int lane) {
  float acc = 0.0f;
#pragma unroll
  for (int u = 0; u < kPieceElems / 256; ++u) {
    const int e = u * 256 + lane * 8;
    if (e < n) {
      const Bf16x8 w8 = load128(w + e), x8 = load128(xs + e);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc += to_float(w8[i]) * to_float(x8[i]);
    }
  }
  return acc;
}

// Warp (b, w) of a grid of B blocks takes items w * B + b, then every W = 8 B-th after it.
__global__ void __launch_bounds__(32 * kGemvWarps, 2) gemv_stream_kernel(GemvArgs a, int depth) {
  extern __shared__ __align__(128) unsigned char gemv_stream_smem_[];
  __shared__ float red[kGemvWarps];
  __shared__ int red_id[kGemvWarps];
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  bf16* xs = reinterpret_cast<bf16*>(gemv_stream_smem_);
  unsigned char* rings = gemv_stream_smem_ + gemv_stream_x_bytes(a.in);
  bf16* ring = reinterpret_cast<bf16*>(rings + warp * depth * kPieceBytes);
  auto* bars = reinterpret_cast<std::uint64_t*>(rings + kGemvWarps * depth * kPieceBytes) + warp * depth;
  const int blocks = static_cast<int>(gridDim.x), stride = blocks * kGemvWarps;
  const int first = warp * blocks + static_cast<int>(blockIdx.x), total = a.lora_items + a.items;
  const int pieces = (a.in + kPieceElems - 1) / kPieceElems;
  const std::uint64_t policy = l2_evict_first_policy();
  if (lane == 0)
    for (int d = 0; d < depth; ++d) mbarrier_init_one(bars + d);
  __syncwarp();

  // The producer's place in this warp's stream of pieces: item pk, its row pr, piece pp.
  int pk = first;
  while (pk < a.lora_items) pk += stride;
  int pr = 0, pp = 0;
  GemvItem pm;
  if (pk < total) pm = gemv_item(a, pk - a.lora_items);
  unsigned issued = 0;
  auto issue = [&] {  // the stream's next piece into the slot it cycles to (the one just read)
    if (pk >= total) return;
    const int c0 = pp * kPieceElems, n = min(kPieceElems, a.in - c0);
    const unsigned slot = issued % static_cast<unsigned>(depth);
    if (lane == 0)
      bulk_copy_to_shared(ring + slot * kPieceElems, (pr == 0 ? pm.w1 : pm.w2) + c0, static_cast<unsigned>(n) * 2u,
                          bars + slot, policy);
    ++issued;
    if (++pp < pieces) return;
    pp = 0;
    if (++pr < (pm.w2 ? 2 : 1)) return;
    pr = 0;
    pk += stride;
    if (pk < total) pm = gemv_item(a, pk - a.lora_items);
  };
  for (int d = 0; d < depth; ++d) issue();  // the weights need nothing from the previous kernel

  pdl_wait();
  pdl_release();
  gemv_stage_x(a, xs, red);
  GemvXa xa;
  float best = -INFINITY;
  int best_id = a.seg[0].rows;
  unsigned used = 0;
  for (int item = first; item < total; item += stride) {
    if (item < a.lora_items) {
      gemv_lora_item(a, item, xs, lane);
      continue;
    }
    const GemvItem m = gemv_item(a, item - a.lora_items);
    float acc[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (r == 1 && !m.w2) break;
      for (int p = 0; p < pieces; ++p) {
        const unsigned slot = used % static_cast<unsigned>(depth);
        mbarrier_wait(bars + slot, (used / static_cast<unsigned>(depth)) & 1u);
        acc[r] += gemv_piece_dot(ring + slot * kPieceElems, xs + p * kPieceElems, min(kPieceElems, a.in - p * kPieceElems),
                                 lane);
        __syncwarp();  // every lane is done with the slot before it is refilled
        issue();
        ++used;
      }
    }
    gemv_item_finish(a, m, warp_sum(acc[0]), warp_sum(acc[1]), lane, xa, best, best_id);
  }
  gemv_block_exit(a, best, best_id, red, red_id);
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// Blocks per SM the row kernel launches (each warp loops over work items): 4 (the register file
// full at 64 registers a thread) unless PEFT_GEMV_BLOCKS_PER_SM says otherwise; a tuning knob
// that decode_bench --kernels also sets between measurements.
inline int& gemv_blocks_per_sm() {
  static int per_sm = env_tuning_knob("PEFT_GEMV_BLOCKS_PER_SM", 4);
  return per_sm;
}

// Whether the Hopper kernel streams the weights (gemv_stream_kernel): on Hopper unless
// PEFT_GEMV_STREAM=0 (the A/B; cuda_test_decode runs its checks with both kernels).
inline bool& gemv_streams() {
  static bool on = env_switch_on("PEFT_GEMV_STREAM");
  return on;
}

// Pieces in flight a warp for an input of `in` (0: none fits, use the row kernel): up to 4, as
// many as keep the block within ~110 KB (two blocks an SM: this launch's and the next one's), at
// least 2; PEFT_GEMV_STREAM_DEPTH sets it (a tuning knob).
inline int gemv_stream_depth(int in) {
  static const int forced = env_tuning_knob("PEFT_GEMV_STREAM_DEPTH", 0);
  const int x = detail::gemv_stream_x_bytes(in), per_depth = detail::gemv_stream_smem(in, 1) - x;
  int depth = forced > 0 ? std::min(forced, detail::kStreamMaxDepth)
                         : std::clamp((110 * 1024 - x) / per_depth, 2, detail::kStreamMaxDepth);
  return static_cast<std::size_t>(detail::gemv_stream_smem(in, depth)) <= smem_optin() ? depth : 0;
}

// Runs the segments of `a` (1 to 3; in % 8 == 0, 16-byte aligned rows). `sms`: the device's SM
// count. Segments with an adapter (seg.a), a state to advance (argmax) need a.scratch.
inline void gemv(const GemvArgs& args, int sms, cudaStream_t stream) {
  GemvArgs a = args;
  auto fail = [&](const std::string& what) { throw Error("gemv: " + what); };
  if (a.in % 8 != 0 || a.count < 1 || a.count > 3 || (a.swiglu && (a.count != 2 || a.seg[0].rows != a.seg[1].rows)))
    fail("in " + std::to_string(a.in) + " must be a multiple of 8, with 1 to 3 segments (" + std::to_string(a.count) +
         "; swiglu: 2 of the same rows)");
  const int chunks = (a.in + detail::kGemvChunk - 1) / detail::kGemvChunk;
  a.items = a.lora_items = 0;
  for (int s = 0; s < a.count; ++s) {
    const GemvSegment& g = a.seg[s];
    if (g.rope && (a.head_dim <= 0 || a.head_dim % 2 != 0 || g.rows % a.head_dim != 0 || !a.rope_cos || !a.rope_sin))
      fail("a RoPE segment needs an even head_dim dividing its rows and the cos/sin row");
    if (g.rope && a.swiglu) fail("RoPE and SwiGLU do not mix");
    if (g.at_row && (!a.row_at || !g.y)) fail("an at_row segment needs row_at and a bf16 output");
    if (g.a && (!g.xa || !g.bt || g.rp <= 0)) fail("an adapted segment needs xa, B^T and its rank");
    a.items += g.rope ? g.rows / 2 : g.rows;
    if (g.a) a.lora_items += g.rp * chunks;
  }
  if (a.swiglu) a.items = a.seg[0].rows;
  if (a.items == 0) return;
  if (a.lora_items > 0 &&
      (!a.scratch.sync || !a.scratch.xa_copies || static_cast<std::size_t>(a.lora_items) > a.scratch.partial_floats))
    fail("x A^T of " + std::to_string(a.lora_items) + " chunks needs scratch (" +
         std::to_string(a.scratch.partial_floats) + " partials)");
  if (a.state && (!a.scratch.sync || !a.scratch.best || a.count != 1 || !a.seg[0].y32))
    fail("the argmax needs scratch and one fp32 segment");
  // Raises a kernel's shared-memory limit once to what it needs (the attribute is per kernel).
  auto allow_smem = [](auto kernel, std::size_t smem, std::size_t& raised) {
    if (smem <= raised) return;
    PEFT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    raised = smem;
  };
  // The hand-offs need every block resident at once (one wave).
  auto one_wave = [&](auto kernel, int blocks, std::size_t smem) {
    if (!a.scratch.sync) return blocks;
    int resident = 0;
    PEFT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, 32 * detail::kGemvWarps, smem));
    blocks = std::max(1, std::min(blocks, resident * sms));
    return a.state ? std::min(blocks, a.scratch.best_slots) : blocks;
  };
  const int groups = (a.lora_items + a.items + detail::kGemvWarps - 1) / detail::kGemvWarps;
  const int depth = hopper_kernels() && gemv_streams() ? gemv_stream_depth(a.in) : 0;
  if (depth > 0) {
    static std::size_t raised = 48 * 1024;
    const std::size_t smem = static_cast<std::size_t>(detail::gemv_stream_smem(a.in, depth));
    allow_smem(detail::gemv_stream_kernel, smem, raised);
    const int blocks = one_wave(detail::gemv_stream_kernel, std::max(1, std::min(groups, sms)), smem);
    launch_pdl("gemv_stream_kernel", detail::gemv_stream_kernel, dim3(blocks), dim3(32 * detail::kGemvWarps), smem,
               stream, a, depth);
    return;
  }
  static std::size_t raised = 48 * 1024;
  const std::size_t smem = static_cast<std::size_t>(a.in) * sizeof(bf16);
  allow_smem(detail::gemv_row_kernel, smem, raised);
  const int blocks = one_wave(detail::gemv_row_kernel, std::max(1, std::min(groups, gemv_blocks_per_sm() * sms)), smem);
  launch_pdl("gemv_row_kernel", detail::gemv_row_kernel, dim3(blocks), dim3(32 * detail::kGemvWarps), smem, stream, a);
}

}  // namespace peft::cuda

