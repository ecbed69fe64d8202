// One-row matrix products for the decode step: y[o] = x . W[o] (+ bias + LoRA + residual), with
// the work that surrounds them at one token fused in, so a decoder layer is 4 of these launches
// plus one attention kernel (model/decode.cuh).
//
// Why not cuBLASLt: at one token a projection is a matrix-vector product, bound by reading W once
// from HBM. A GEMM library tiles for M >= 64 and wastes most of each tile at M = 1, and a LoRA
// projection there is three launches (base, x A^T, (x A^T) B^T) plus a residual add. Here one
// warp owns an output row (or a pair of rows) and streams it with 16-byte evict-first loads (the
// weights are read once per token and should not push the KV cache out of L2), accumulating in
// fp32; x sits in shared memory, staged once per block. Several projections of the same input
// (q/k/v, gate/up) are "segments" of one launch, so the small ones ride along with the big one
// instead of paying a launch and a wave tail each.
//
// Fused, written so the values are those of the unfused kernels (up to fp32 summation order):
//   - the input RMSNorm on load (rms_norm.cuh's rounding: x * rstd to bf16, times w to bf16);
//   - LoRA's x A^T: A's rows are extra work items of the same launch, handed to the lowest warps
//     first in chunks of 1024 inputs (so none is a long serial loop); the last chunk to finish
//     sums the partials in a fixed order, rounds x A^T to bf16 (the training forward's xa) and
//     raises a flag that the output rows wait on before their epilogue (grid_sync.cuh);
//   - the epilogue: bias, the LoRA term scale * xa . B^T[:, o], rounding to bf16, then + residual;
//   - RoPE (rope segments): a warp owns rows i and i + head_dim/2 of a head, rounds both, rotates
//     them with the step's cos/sin (kv_append.cuh's formula) and writes them, and an at_row
//     segment writes straight into the KV cache's row *row_at: q/k/v, RoPE and the append are one
//     launch;
//   - SwiGLU: a warp computes gate[o] and up[o] and writes silu(gate) * up (swiglu.cuh's math);
//   - greedy's argmax over the fp32 outputs (the lm_head): per warp, per block, then the last
//     block to finish reduces the blocks' winners and advances the decode state as
//     greedy_step.cuh's kernel does (ties to the lowest id; NaN never wins).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"
#include "peft/kernels/cuda/greedy_step.cuh"
#include "peft/kernels/cuda/grid_sync.cuh"
#include "peft/kernels/cuda/pdl.cuh"
#include "peft/kernels/cuda/rms_norm.cuh"
#include "peft/kernels/cuda/swiglu.cuh"

namespace peft::cuda {

struct GemvSegment {
  const bf16* w = nullptr;         // [rows, in]
  int rows = 0;
  const bf16* bias = nullptr;      // [rows] or null
  const bf16* a = nullptr;         // LoRA A [rp, in], or null (no adapter)
  float* xa = nullptr;             // [rp]: where this launch leaves x A^T (bf16 values in fp32)
  const bf16* bt = nullptr;        // [rp, rows] B^T
  int rp = 0;
  float scale = 0.0f;
  const bf16* residual = nullptr;  // [rows] added after rounding, or null
  bf16* y = nullptr;               // bf16 output, or
  float* y32 = nullptr;            // fp32 output (round32: through bf16 first, as a bf16 GEMM's output)
  bool round32 = false;
  bool rope = false;    // rotate rows (i, i + head_dim / 2) of each head after rounding (GemvArgs::rope_*)
  bool at_row = false;  // y is a cache [*, rows]: written at row *GemvArgs::row_at
};

// Device memory for the in-launch hand-offs (model/kv_cache.cuh owns it). sync: kGemvSyncWords
// zeroed once (counters and flags each on its own 128-byte line); every launch leaves them at 0.
// The finished x A^T and its ready flag are published in kGemvCopies copies, block b reading copy
// b % kGemvCopies: thousands of warps reading one line would queue on one L2 slice.
constexpr int kGemvCopies = 16;
constexpr int kGemvSyncWords = 64 + 32 * kGemvCopies;
constexpr int kGemvXaCopyFloats = 128;  // a copy: 3 segments x 32 ranks (+ padding to 512 bytes)
struct GemvScratch {
  unsigned* sync = nullptr;
  float* xa_copies = nullptr;  // kGemvCopies * kGemvXaCopyFloats
  float* partial = nullptr;  // x A^T partials: rp * ceil(in / 1024) floats per adapted segment
  std::size_t partial_floats = 0;
  float* best = nullptr;     // argmax: a (value, id) pair per block
  int best_slots = 0;
};

struct GemvArgs {
  const bf16* x = nullptr;       // [in]
  int in = 0;
  const bf16* norm_w = nullptr;  // RMSNorm weight applied to x on load, or null
  float eps = 0.0f;
  GemvSegment seg[3];
  int count = 0;
  bool swiglu = false;  // seg[0] gate, seg[1] up (same rows): seg[0].y = silu(gate) * up
  const float* rope_cos = nullptr;  // [head_dim / 2] of the token (rope.cuh's table, row 0)
  const float* rope_sin = nullptr;
  int head_dim = 0;
  const std::int32_t* row_at = nullptr;  // device: the cache row at_row segments write
  // Argmax of seg[0]'s fp32 outputs, advancing the decode state (greedy_step.cuh), or null.
  std::int32_t* state = nullptr;
  std::int32_t* out_ids = nullptr;
  int out_capacity = 0;
  GemvScratch scratch;
  int lora_items = 0, items = 0;  // set by gemv(): x A^T chunks, then output rows (or row pairs)
};

namespace detail {

constexpr int kGemvWarps = 8;
constexpr int kGemvChunk = 32 * 8 * 4;  // inputs per x A^T work item: one pass of 4 loads per lane
constexpr int kSyncItems = 0, kSyncExited = 32, kSyncReady = 64;  // GemvScratch::sync words (+ 32 * copy)
constexpr int kXaLoads = 24;  // chunks a lane loads at once when summing x A^T (inputs up to 24576)

__device__ inline GemvSegment gemv_pick(const GemvArgs& a, int s) {
  return s == 0 ? a.seg[0] : (s == 1 ? a.seg[1] : a.seg[2]);
}
__device__ inline int gemv_items_of(const GemvSegment& s) { return s.rope ? s.rows / 2 : s.rows; }

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

// x A^T work item `k`: row r of an adapted segment's A over inputs [c * 1024, (c + 1) * 1024).
// The last item to finish turns the partials into every segment's xa and raises the ready flag.
__device__ inline void gemv_lora_item(const GemvArgs& a, int k, const bf16* xs, int lane) {
  const int chunks = (a.in + kGemvChunk - 1) / kGemvChunk;
  int s = 0, off = 0;
  for (;; ++s) {
    const GemvSegment g = gemv_pick(a, s);
    if (!g.a) continue;
    if (k < off + g.rp * chunks) break;
    off += g.rp * chunks;
  }
  const GemvSegment seg = gemv_pick(a, s);
  const int j = k - off, r = j / chunks, c = j % chunks;
  const bf16* w = seg.a + static_cast<long long>(r) * a.in;
  const int c0 = c * kGemvChunk, c1 = min(a.in, c0 + kGemvChunk);
  float acc = 0.0f;
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int at = c0 + u * 256 + lane * 8;
    if (at < c1) {
      const Bf16x8 w0 = load128cs(w + at), x0 = load128(xs + at);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc += to_float(w0[i]) * to_float(x0[i]);
    }
  }
  acc = warp_sum(acc);
  int last = 0;
  if (lane == 0) {
    a.scratch.partial[k] = acc;  // k = off + r * chunks + c: the segments' partials back to back
    last = arrive_last(&a.scratch.sync[kSyncItems], static_cast<unsigned>(a.lora_items));
  }
  if (!__shfl_sync(0xffffffffu, last, 0)) return;
  __threadfence();
  off = 0;
  for (int t = 0; t < a.count; ++t) {
    const GemvSegment g = gemv_pick(a, t);
    if (!g.a) continue;
    for (int rr = lane; rr < g.rp; rr += 32) {  // the chunks of row rr, loaded at once, summed in order
      const float* p = a.scratch.partial + off + rr * chunks;
      float v[kXaLoads];
#pragma unroll
      for (int i = 0; i < kXaLoads; ++i) v[i] = i < chunks ? __ldcg(p + i) : 0.0f;
      float sum = 0.0f;
#pragma unroll
      for (int i = 0; i < kXaLoads; ++i) sum += v[i];
      for (int i = kXaLoads; i < chunks; ++i) sum += __ldcg(p + i);
      const float x = to_float(to_bf16(sum));
      g.xa[rr] = x;
      if (rr < 32)
        for (int c = 0; c < kGemvCopies; ++c) a.scratch.xa_copies[c * kGemvXaCopyFloats + t * 32 + rr] = x;
    }
    off += g.rp * chunks;
  }
  __threadfence();
  __syncwarp();
  if (lane < kGemvCopies) atomicExch(&a.scratch.sync[kSyncReady + 32 * lane], 1u);
}

// Per warp: x A^T of each segment, lane r holding row r < 32 (read once, after the flag).
struct GemvXa {
  float v[3];
  bool ready = false;
};
__device__ inline void gemv_take_xa(const GemvArgs& a, GemvXa& xa, int lane) {
  if (xa.ready) return;
  const int copy = static_cast<int>(blockIdx.x) % kGemvCopies;
  wait_flag(&a.scratch.sync[kSyncReady + 32 * copy], lane);
  const float* from = a.scratch.xa_copies + copy * kGemvXaCopyFloats;
#pragma unroll
  for (int s = 0; s < 3; ++s) {
    const GemvSegment g = gemv_pick(a, s);
    xa.v[s] = s < a.count && g.a && lane < g.rp ? __ldcg(from + s * 32 + lane) : 0.0f;
  }
  xa.ready = true;
}
// What row o's epilogue reads besides its dot product (B^T[lane, o], bias, residual), loaded
// before the dot: their round trips then overlap the weight stream instead of following it one
// after another (with ~1 row a warp, q/k/v's and o's launches end on that chain).
struct GemvRowInputs {
  float bt = 0.0f;  // lane r < min(rp, 32): B^T[r, o]
  float bias = 0.0f;
  float residual = 0.0f;
};
__device__ inline GemvRowInputs gemv_row_inputs(const GemvSegment& s, int o, int lane) {
  GemvRowInputs in;
  if (s.a && lane < s.rp) in.bt = to_float(s.bt[static_cast<long long>(lane) * s.rows + o]);
  if (lane == 0) {
    if (s.bias) in.bias = to_float(s.bias[o]);
    if (s.residual && !s.y32) in.residual = to_float(s.residual[o]);
  }
  return in;
}

// The LoRA term xa . B^T[:, o] of segment s, summed across the warp (every lane gets it).
__device__ inline float gemv_lora(const GemvSegment& seg, const GemvXa& xa, int s, int o, int lane,
                                  const GemvRowInputs& in) {
  if (!seg.a) return 0.0f;
  const float x = s == 0 ? xa.v[0] : (s == 1 ? xa.v[1] : xa.v[2]);  // no local-memory indexing
  float l = lane < seg.rp ? x * in.bt : 0.0f;
  for (int r = lane + 32; r < seg.rp; r += 32)  // ranks above 32: read per row
    l += __ldcg(seg.xa + r) * to_float(seg.bt[static_cast<long long>(r) * seg.rows + o]);
  return warp_sum(l);
}

// The projection's value at row o before any residual (bias and LoRA term included; lane 0).
__device__ inline float gemv_finish(const GemvSegment& s, float acc, float lora, const GemvRowInputs& in) {
  const float v = acc + in.bias;
  return s.a ? v + s.scale * lora : v;
}

__device__ inline bf16* gemv_out(const GemvArgs& a, const GemvSegment& s) {
  return s.at_row ? s.y + static_cast<long long>(*a.row_at) * s.rows : s.y;
}

// Stores row o and returns the value stored (fp32 outputs: what the argmax compares; lane 0).
__device__ inline float gemv_store(const GemvArgs& a, const GemvSegment& seg, int o, float acc, float lora,
                                   const GemvRowInputs& in) {
  const float v = gemv_finish(seg, acc, lora, in);
  if (seg.y32) {
    const float out = seg.round32 ? to_float(to_bf16(v)) : v;
    seg.y32[o] = out;
    return out;
  }
  const float r = to_float(to_bf16(v));
  gemv_out(a, seg)[o] = to_bf16(seg.residual ? in.residual + r : r);
  return 0.0f;
}

// Output item it (after the x A^T items): a row, a RoPE pair, or a gate/up pair.
__device__ inline void gemv_output_item(const GemvArgs& a, int it, const bf16* xs, int lane, GemvXa& xa, float& best,
                                        int& best_id) {
  if (a.swiglu) {
    const GemvSegment& g = a.seg[0];
    const GemvSegment& u = a.seg[1];
    const GemvRowInputs gi = gemv_row_inputs(g, it, lane), ui = gemv_row_inputs(u, it, lane);
    float ga, ua;
    gemv_dot2(g.w + static_cast<long long>(it) * a.in, u.w + static_cast<long long>(it) * a.in, xs, a.in, lane, ga, ua);
    if (g.a || u.a) gemv_take_xa(a, xa, lane);
    const float gl = gemv_lora(g, xa, 0, it, lane, gi), ul = gemv_lora(u, xa, 1, it, lane, ui);
    if (lane == 0) {
      const float gv = to_float(to_bf16(gemv_finish(g, ga, gl, gi)));
      const float uv = to_float(to_bf16(gemv_finish(u, ua, ul, ui)));
      g.y[it] = to_bf16(gv * sigmoid(gv) * uv);
    }
    return;
  }
  int s = 0, j = it;
  while (s + 1 < a.count && j >= gemv_items_of(gemv_pick(a, s))) j -= gemv_items_of(gemv_pick(a, s++));
  const GemvSegment seg = gemv_pick(a, s);
  if (seg.rope) {
    const int half = a.head_dim / 2, o1 = (j / half) * a.head_dim + j % half, o2 = o1 + half;
    const GemvRowInputs i1 = gemv_row_inputs(seg, o1, lane), i2 = gemv_row_inputs(seg, o2, lane);
    const float c = lane == 0 ? a.rope_cos[j % half] : 0.0f, sn = lane == 0 ? a.rope_sin[j % half] : 0.0f;
    float r1, r2;
    gemv_dot2(seg.w + static_cast<long long>(o1) * a.in, seg.w + static_cast<long long>(o2) * a.in, xs, a.in, lane,
              r1, r2);
    if (seg.a) gemv_take_xa(a, xa, lane);
    const float l1 = gemv_lora(seg, xa, s, o1, lane, i1), l2 = gemv_lora(seg, xa, s, o2, lane, i2);
    if (lane == 0) {
      const float x1 = to_float(to_bf16(gemv_finish(seg, r1, l1, i1)));
      const float x2 = to_float(to_bf16(gemv_finish(seg, r2, l2, i2)));
      bf16* y = gemv_out(a, seg);
      y[o1] = to_bf16(x1 * c - x2 * sn);
      y[o2] = to_bf16(x2 * c + x1 * sn);
    }
    return;
  }
  const GemvRowInputs in = gemv_row_inputs(seg, j, lane);
  const float acc = gemv_dot(seg.w + static_cast<long long>(j) * a.in, xs, a.in, lane);
  if (seg.a) gemv_take_xa(a, xa, lane);
  const float l = gemv_lora(seg, xa, s, j, lane, in);
  if (lane == 0) {
    const float v = gemv_store(a, seg, j, acc, l, in);
    if (a.state && argmax_better(v, j, best, best_id)) {
      best = v;
      best_id = j;
    }
  }
}

// The first weight row warp `gw` will read (for the prefetch before the previous kernel ends).
__device__ inline const bf16* gemv_first_row(const GemvArgs& a, int gw) {
  if (gw < a.lora_items) return nullptr;
  int j = gw - a.lora_items, s = 0;
  if (j >= a.items) return nullptr;
  if (a.swiglu) return a.seg[0].w + static_cast<long long>(j) * a.in;
  while (s + 1 < a.count && j >= gemv_items_of(gemv_pick(a, s))) j -= gemv_items_of(gemv_pick(a, s++));
  const GemvSegment seg = gemv_pick(a, s);
  const int row = seg.rope ? (j / (a.head_dim / 2)) * a.head_dim + j % (a.head_dim / 2) : j;
  return seg.w + static_cast<long long>(row) * a.in;
}

__global__ void __launch_bounds__(32 * kGemvWarps, 4) gemv_kernel(GemvArgs a) {  // 4 blocks an SM: <= 64 registers
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  bf16* xs = reinterpret_cast<bf16*>(gemv_smem);
  __shared__ float red[kGemvWarps];
  __shared__ int red_id[kGemvWarps];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gw = static_cast<int>(blockIdx.x) * kGemvWarps + warp, warps = static_cast<int>(gridDim.x) * kGemvWarps;
  {  // before waiting on the previous kernel: pull the first 4 KB of this warp's first row into L2
    const bf16* w = gemv_first_row(a, gw);
    const int c = lane * 8;
    for (int at = c; w && at < a.in && at < 2048; at += 256)
      asm volatile("prefetch.global.L2 [%0];" ::"l"(w + at));
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

  GemvXa xa;
  float best = -INFINITY;
  int best_id = a.seg[0].rows;
  for (int item = gw; item < a.lora_items + a.items; item += warps) {
    if (item < a.lora_items)
      gemv_lora_item(a, item, xs, lane);
    else
      gemv_output_item(a, item - a.lora_items, xs, lane, xa, best, best_id);
  }
  if (!a.scratch.sync) return;
  if (a.state) {  // this block's winner
    if (lane == 0) {
      red[warp] = best;
      red_id[warp] = best_id;
    }
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < kGemvWarps; ++w)
        if (argmax_better(red[w], red_id[w], best, best_id)) {
          best = red[w];
          best_id = red_id[w];
        }
      a.scratch.best[2 * blockIdx.x] = best;
      a.scratch.best[2 * blockIdx.x + 1] = __int_as_float(best_id);
    }
  }
  __syncthreads();  // every warp is past its wait on the ready flag
  if (tid == 0 && arrive_last(&a.scratch.sync[kSyncExited], gridDim.x)) {
    for (int c = 0; c < kGemvCopies; ++c) a.scratch.sync[kSyncReady + 32 * c] = 0;
    if (a.state) {
      for (unsigned b = 0; b < gridDim.x; ++b) {
        const float v = __ldcg(a.scratch.best + 2 * b);
        const int id = __float_as_int(__ldcg(a.scratch.best + 2 * b + 1));
        if (argmax_better(v, id, best, best_id)) {
          best = v;
          best_id = id;
        }
      }
      greedy_commit(best_id, a.seg[0].rows, a.state, a.out_ids, a.out_capacity);
    }
  }
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// Blocks per SM the one-row products launch (each warp loops over work items): 4 (the register
// file full at 64 registers a thread) unless PEFT_GEMV_BLOCKS_PER_SM says otherwise; a tuning knob
// that decode_bench --kernels also sets between measurements.
inline int& gemv_blocks_per_sm() {
  static int per_sm = env_tuning_knob("PEFT_GEMV_BLOCKS_PER_SM", 4);
  return per_sm;
}

// Runs the segments of `a` (1 to 3; in % 8 == 0, 16-byte aligned rows). `sms`: the device's SM
// count (the grid is a few blocks per SM, each warp looping over work items). Segments with an
// adapter (seg.a), a state to advance (argmax) need a.scratch.
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
  const std::size_t smem = static_cast<std::size_t>(a.in) * sizeof(bf16);
  if (smem > 48 * 1024) {
    static std::size_t raised = 48 * 1024;  // the attribute is per kernel: raise it once, as needed
    if (smem > raised) {
      PEFT_CUDA_CHECK(cudaFuncSetAttribute(detail::gemv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
      raised = smem;
    }
  }
  const int per_sm = gemv_blocks_per_sm();
  const int groups = (a.lora_items + a.items + detail::kGemvWarps - 1) / detail::kGemvWarps;
  int blocks = std::max(1, std::min(groups, per_sm * sms));
  if (a.scratch.sync) {  // the hand-offs need every block resident at once (one wave)
    int resident = 0;
    PEFT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, detail::gemv_kernel,
                                                                  32 * detail::kGemvWarps, smem));
    blocks = std::max(1, std::min(blocks, resident * sms));
    if (a.state) blocks = std::min(blocks, a.scratch.best_slots);
  }
  launch_pdl("gemv_kernel", detail::gemv_kernel, dim3(blocks), dim3(32 * detail::kGemvWarps), smem, stream, a);
}

}  // namespace peft::cuda
