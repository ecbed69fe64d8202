// One-row matrix products for the decode step: y[o] = x . W[o] (+ bias + LoRA + residual).
//
// Why not cuBLASLt: at one token a projection is a matrix-vector product, bound by reading W once
// from HBM. A GEMM library tiles for M >= 64 and wastes most of each tile at M = 1, and a LoRA
// projection there is three launches (base, x A^T, (x A^T) B^T) plus a residual add. Here one
// warp owns an output row and streams it with 16-byte evict-first loads (the weights are read
// once per token and should not push the KV cache out of L2), accumulating in fp32; x sits in
// shared memory, staged once per block. Several projections of the same input (q/k/v, gate/up)
// are "segments" of one launch, so the small ones (k, v: 3.7 MB each at 7B) ride along with the
// big one instead of paying a launch and a wave tail each.
//
// Fusions that save a launch per use, written so the values are those of the unfused kernels:
//   - the input RMSNorm on load (rms_norm.cuh's rounding: x * rstd to bf16, times w to bf16);
//   - the epilogue: bias, the LoRA term scale * xa . B^T[:, o] (xa: the fp32 rank-r vector the
//     same kernel computed from A in an earlier launch), rounding to bf16, then + residual;
//   - SwiGLU: a warp computes gate[o] and up[o] and writes silu(gate) * up (swiglu.cuh's math).
#pragma once
#include <algorithm>
#include <cstdlib>
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/pdl.cuh"
#include "peft/kernels/cuda/rms_norm.cuh"
#include "peft/kernels/cuda/swiglu.cuh"

namespace peft::cuda {

struct GemvSegment {
  const bf16* w = nullptr;         // [rows, in]
  int rows = 0;
  const bf16* bias = nullptr;      // [rows] or null
  const float* xa = nullptr;       // [rp] LoRA x A^T, or null (no adapter)
  const bf16* bt = nullptr;        // [rp, rows] B^T
  int rp = 0;
  float scale = 0.0f;
  const bf16* residual = nullptr;  // [rows] added after rounding, or null
  bf16* y = nullptr;               // bf16 output, or
  float* y32 = nullptr;            // fp32 output (round32: through bf16 first, as a bf16 GEMM's output)
  bool round32 = false;
};

struct GemvArgs {
  const bf16* x = nullptr;       // [in]
  int in = 0;
  const bf16* norm_w = nullptr;  // RMSNorm weight applied to x on load, or null
  float eps = 0.0f;
  GemvSegment seg[3];
  int count = 0;
  bool swiglu = false;  // seg[0] gate, seg[1] up (same rows): seg[0].y = silu(gate) * up
  bool block_rows = false;  // set by gemv(): a whole block per row (few rows, e.g. LoRA's x A^T)
};

namespace detail {

constexpr int kGemvWarps = 8;

__device__ inline GemvSegment gemv_pick(const GemvArgs& a, int s) {
  return s == 0 ? a.seg[0] : (s == 1 ? a.seg[1] : a.seg[2]);
}

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

// The same dot product with the block's 256 threads striding over in; the sum lands in thread 0.
// Few long rows (x A^T: 8 rows of up to 18944) would leave a warp per row with ~20 dependent
// memory round trips; a block per row has ~3.
__device__ inline float gemv_block_dot(const bf16* __restrict__ w, const bf16* xs, int in, float* red) {
  const int tid = threadIdx.x;
  float acc = 0.0f;
  int c = tid * 8;
  constexpr int step = 32 * kGemvWarps * 8;
  for (; c + step < in; c += 2 * step) {
    const Bf16x8 w0 = load128cs(w + c), w1 = load128cs(w + c + step);
    const Bf16x8 x0 = load128(xs + c), x1 = load128(xs + c + step);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc += to_float(w0[i]) * to_float(x0[i]) + to_float(w1[i]) * to_float(x1[i]);
  }
  if (c < in) {
    const Bf16x8 w0 = load128cs(w + c), x0 = load128(xs + c);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc += to_float(w0[i]) * to_float(x0[i]);
  }
  acc = warp_sum(acc);
  __syncthreads();  // red may still be read by the previous row's thread 0
  if (tid % 32 == 0) red[tid / 32] = acc;
  __syncthreads();
  float total = 0.0f;
  if (tid == 0)
    for (int i = 0; i < kGemvWarps; ++i) total += red[i];
  return total;
}

// The projection's value at row o before any residual, rounded to bf16 (bias and LoRA included).
__device__ inline float gemv_finish(const GemvSegment& s, int o, float acc) {
  float v = acc + (s.bias ? to_float(s.bias[o]) : 0.0f);
  if (s.xa) {
    float l = 0.0f;
    for (int r = 0; r < s.rp; ++r) l += s.xa[r] * to_float(s.bt[static_cast<long long>(r) * s.rows + o]);
    v += s.scale * l;
  }
  return v;
}

__device__ inline void gemv_store(const GemvSegment& seg, int o, float acc) {
  const float v = gemv_finish(seg, o, acc);
  if (seg.y32) {
    seg.y32[o] = seg.round32 ? to_float(to_bf16(v)) : v;
  } else {
    const float r = to_float(to_bf16(v));
    seg.y[o] = to_bf16(seg.residual ? to_float(seg.residual[o]) + r : r);
  }
}

__global__ void __launch_bounds__(32 * kGemvWarps) gemv_kernel(GemvArgs a) {
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  bf16* xs = reinterpret_cast<bf16*>(gemv_smem);
  __shared__ float red[kGemvWarps];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  {  // before waiting on the previous kernel: pull the first 4 KB of this block's first row into L2
    const int first = a.block_rows ? static_cast<int>(blockIdx.x) : static_cast<int>(blockIdx.x) * kGemvWarps + warp;
    int s = 0, o = first;
    while (s + 1 < a.count && o >= gemv_pick(a, s).rows) o -= gemv_pick(a, s++).rows;
    const GemvSegment seg = gemv_pick(a, a.swiglu ? 0 : s);
    const int c = (a.block_rows ? tid : lane) * 8;
    if (o < seg.rows && c < a.in && c < 2048)
      asm volatile("prefetch.global.L2 [%0];" ::"l"(seg.w + static_cast<long long>(o) * a.in + c));
  }
  pdl_wait();
  pdl_release();
  float rstd = 1.0f;
  if (a.norm_w) {
    float sq = 0.0f;
    for (int c = tid * 8; c < a.in; c += 32 * kGemvWarps * 8) {
      const Bf16x8 p = load128(a.x + c);
      for (int i = 0; i < 8; ++i) sq += to_float(p[i]) * to_float(p[i]);
    }
    sq = warp_sum(sq);
    if (lane == 0) red[warp] = sq;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kGemvWarps; ++w) total += red[w];
    rstd = rsqrtf(total / static_cast<float>(a.in) + a.eps);
  }
  for (int c = tid * 8; c < a.in; c += 32 * kGemvWarps * 8) {
    Bf16x8 p = load128(a.x + c);
    if (a.norm_w) {
      const Bf16x8 wp = load128(a.norm_w + c);
      for (int i = 0; i < 8; ++i) p[i] = to_bf16(to_float(to_bf16(to_float(p[i]) * rstd)) * to_float(wp[i]));
    }
    store128(xs + c, p);
  }
  __syncthreads();

  int total = 0;
  for (int s = 0; s < a.count; ++s) total += gemv_pick(a, s).rows;
  if (a.swiglu) total = a.seg[0].rows;
  if (a.block_rows) {
    for (int row = blockIdx.x; row < total; row += gridDim.x) {
      int s = 0, o = row;
      while (s + 1 < a.count && o >= gemv_pick(a, s).rows) o -= gemv_pick(a, s++).rows;
      const GemvSegment seg = gemv_pick(a, s);
      const float acc = gemv_block_dot(seg.w + static_cast<long long>(o) * a.in, xs, a.in, red);
      if (tid == 0) gemv_store(seg, o, acc);
    }
    return;
  }
  for (int row = blockIdx.x * kGemvWarps + warp; row < total; row += gridDim.x * kGemvWarps) {
    if (a.swiglu) {
      const GemvSegment& g = a.seg[0];
      const GemvSegment& u = a.seg[1];
      const float ga = gemv_dot(g.w + static_cast<long long>(row) * a.in, xs, a.in, lane);
      const float ua = gemv_dot(u.w + static_cast<long long>(row) * a.in, xs, a.in, lane);
      if (lane == 0) {
        const float gv = to_float(to_bf16(gemv_finish(g, row, ga)));
        const float uv = to_float(to_bf16(gemv_finish(u, row, ua)));
        g.y[row] = to_bf16(gv * sigmoid(gv) * uv);
      }
      continue;
    }
    int s = 0, o = row;
    while (s + 1 < a.count && o >= gemv_pick(a, s).rows) o -= gemv_pick(a, s++).rows;
    const GemvSegment seg = gemv_pick(a, s);
    const float acc = gemv_dot(seg.w + static_cast<long long>(o) * a.in, xs, a.in, lane);
    if (lane == 0) gemv_store(seg, o, acc);
  }
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// Runs the segments of `a` (1 to 3; in % 8 == 0, 16-byte aligned rows). `sms`: the device's SM
// count (the grid is a few blocks per SM, each warp looping over rows).
inline void gemv(const GemvArgs& a, int sms, cudaStream_t stream) {
  if (a.in % 8 != 0 || a.count < 1 || a.count > 3 || (a.swiglu && (a.count != 2 || a.seg[0].rows != a.seg[1].rows)))
    throw Error("gemv: in " + std::to_string(a.in) + " must be a multiple of 8, with 1 to 3 segments (" +
                std::to_string(a.count) + ")");
  int rows = 0;
  for (int s = 0; s < a.count; ++s) rows += a.seg[s].rows;
  if (a.swiglu) rows = a.seg[0].rows;
  if (rows == 0) return;
  const std::size_t smem = static_cast<std::size_t>(a.in) * sizeof(bf16);
  if (smem > 48 * 1024) {
    static std::size_t raised = 48 * 1024;  // the attribute is per kernel: raise it once, as needed
    if (smem > raised) {
      PEFT_CUDA_CHECK(cudaFuncSetAttribute(detail::gemv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
      raised = smem;
    }
  }
  GemvArgs args = a;
  args.block_rows = !a.swiglu && rows < 2 * sms;
  const int groups = args.block_rows ? rows : (rows + detail::kGemvWarps - 1) / detail::kGemvWarps;
  static const int per_sm = [] {  // PEFT_GEMV_BLOCKS_PER_SM: a tuning knob for decode_bench
    const char* e = std::getenv("PEFT_GEMV_BLOCKS_PER_SM");
    return e && std::atoi(e) > 0 ? std::atoi(e) : 4;
  }();
  const int blocks = std::max(1, std::min(groups, per_sm * sms));
  launch_pdl("gemv_kernel", detail::gemv_kernel, dim3(blocks), dim3(32 * detail::kGemvWarps), smem, stream, args);
}

}  // namespace peft::cuda
