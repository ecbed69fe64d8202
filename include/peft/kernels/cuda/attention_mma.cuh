// The fast kernels behind attention.cuh's attention_forward / attention_backward: FlashAttention-2's
// schedule written directly on the tensor cores' warp-level instructions (mma.sync m16n8k16 bf16
// with fp32 accumulation, operands fetched by ldmatrix), because WMMA's fragments are opaque: the
// old kernels had to bounce every score tile through fp32 shared memory to do the softmax, and
// that traffic, not the products, bounded them at ~32 TFLOP/s. Here the score accumulators ARE
// the operands of the next product: an m16n8 accumulator pair repacked to bf16 is exactly an
// m16k16 A fragment, so S, P, dP and dS never leave registers (only dS^T is staged once per tile
// in the backward, as the B-side of dQ = dS K).
//
// Forward: one 256-thread block per (128-query tile, head, sample), each warp owning 16 query
// rows whose Q fragments it keeps in registers; 64-key K/V tiles stream through a two-stage
// cp.async ring; online softmax in base 2 (exp2 of pre-scaled scores), row sums kept per thread
// and reduced across the quad once at the end. Warps whose rows all precede a key tile skip it.
// At D = 128 the block runs alone on its SM with up to 255 registers: measured ~6% faster than
// re-reading Q from shared memory, and ~10% faster than two blocks an SM capped at 128 registers
// (which spilled). At D = 64 two blocks share an SM (a 48-byte spill, measured harmless).
// Backward: one 128-thread block per (64-key tile, query head, sample), each warp owning 16 keys;
// it walks the query tiles at or after its keys (Q, dO, lse, D double-buffered; single-buffered
// where a block may not have the 105 KB that needs at D = 128, as on sm_86 / sm_89, with the next
// tile's load overlapping dQ instead), computes S^T and
// dP^T, turns them into P^T and dS^T in registers, accumulates dV += P^T dO and dK += dS^T Q in
// registers, and adds dQ = dS K into the fp32 accumulator with atomics (8-byte vector atomics on
// Hopper, where the instruction exists; two scalar ones elsewhere). Masking happens only on
// the diagonal tile; queries past the sample get lse = +inf, so their P is exactly 0.
// Shared tiles are [rows, C] bf16 with 16-byte chunks XOR-swizzled by (row & 7): the eight row
// addresses of every ldmatrix and cp.async land on distinct banks without padding.
#pragma once
#include <cstdint>

#include "peft/kernels/cuda/bf16.cuh"

namespace peft::cuda::detail {

constexpr float kLog2e = 1.4426950408889634f;

__device__ inline std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared, bypassing L1; zero-filled when !valid (src is then not read).
__device__ inline void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ inline void ldsm_x4(std::uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ inline void ldsm_x4_t(std::uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// c += a (16x16, row) * b (16x8, col)
__device__ inline void mma16816(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ inline std::uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<std::uint32_t*>(&v);
}
// Two m16n8 accumulators (columns 0-7 and 8-15) as one m16k16 A fragment.
__device__ inline void acc_to_a(std::uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

// Element offset of (r, c) in a swizzled [rows, C] tile; c % 8 is kept inside the 16-byte chunk.
template <int C>
__device__ inline int swz(int r, int c) {
  return r * C + ((((c >> 3) ^ r) & 7) | ((c >> 3) & ~7)) * 8 + (c & 7);
}
// ldmatrix row addresses (lane -> element) for the three operand shapes used below, tile origin
// (r0, c0): A from a row-major [m, k] tile; B from an [n, k] tile (x4 = n-tiles n0, n0 + 8);
// B from a [k, n] tile through .trans (x4 = n-tiles c0, c0 + 8); A^T from a [k, m] tile (.trans).
template <int C>
__device__ inline const bf16* a_addr(const bf16* t, int r0, int c0, int lane) {
  return t + swz<C>(r0 + (lane & 15), c0 + (lane >> 4) * 8);
}
template <int C>
__device__ inline const bf16* bnk_addr(const bf16* t, int r0, int c0, int lane) {
  return t + swz<C>(r0 + (lane >> 4) * 8 + (lane & 7), c0 + ((lane >> 3) & 1) * 8);
}
template <int C>
__device__ inline const bf16* bkn_addr(const bf16* t, int r0, int c0, int lane) {
  return t + swz<C>(r0 + ((lane >> 3) & 1) * 8 + (lane & 7), c0 + (lane >> 4) * 8);
}
template <int C>
__device__ inline const bf16* at_addr(const bf16* t, int r0, int c0, int lane) {
  return t + swz<C>(r0 + (lane >> 4) * 8 + (lane & 7), c0 + ((lane >> 3) & 1) * 8);
}

// Rows [row0, row0 + R) of a [tokens, stride] bf16 tensor's columns [col0, col0 + C) into a
// swizzled tile, asynchronously; rows at or past `valid` are zero-filled.
template <int R, int C, int NT>
__device__ inline void load_tile_async(bf16* dst, const bf16* __restrict__ src, long long row0, int valid, int stride,
                                       int col0) {
  constexpr int chunks = C / 8;
#pragma unroll
  for (int i = threadIdx.x; i < R * chunks; i += NT) {
    const int r = i / chunks, c = (i % chunks) * 8;
    const bool ok = r < valid;
    cp_async16(dst + swz<C>(r, c), src + (row0 + (ok ? r : 0)) * stride + col0 + c, ok);
  }
}

// ---- forward --------------------------------------------------------------------------------

constexpr int kFwdM = 128, kFwdN = 64, kFwdThreads = 256;
template <int D>
constexpr std::size_t mma_forward_smem = static_cast<std::size_t>(kFwdM + 4 * kFwdN) * D * 2;

template <int D>
__global__ void __launch_bounds__(kFwdThreads, D == 128 ? 1 : 2) attention_forward_mma_kernel(
    bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q, const bf16* __restrict__ k,
    const bf16* __restrict__ v, const std::int32_t* __restrict__ cu_seqlens, int heads, int kv_heads, int tokens,
    float scale) {
  constexpr int M = kFwdM, N = kFwdN;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sq = reinterpret_cast<bf16*>(smem);
  bf16* skv = sq + M * D;  // stage s: K at skv + s * 2 * N * D, V right after

  const int seq = blockIdx.z, h = blockIdx.y, qb = gridDim.x - 1 - blockIdx.x;  // long tiles first
  const int start = cu_seqlens[seq], len = cu_seqlens[seq + 1] - start;
  const int q0 = qb * M;
  if (q0 >= len) return;
  const int q_valid = min(M, len - q0);
  const int g = h / (heads / kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane >> 2, tq = lane & 3;
  const int wrow0 = q0 + warp * 16;  // this warp's first query (sample-local)
  const int n_tiles = (q0 + q_valid + N - 1) / N;
  const float sl2 = scale * kLog2e;

  auto load_kv = [&](int kb, int stage) {
    bf16* sk = skv + stage * 2 * N * D;
    const int k0 = kb * N, kv = min(N, len - k0);
    load_tile_async<N, D, kFwdThreads>(sk, k, start + k0, kv, kv_heads * D, g * D);
    load_tile_async<N, D, kFwdThreads>(sk + N * D, v, start + k0, kv, kv_heads * D, g * D);
  };
  load_tile_async<M, D, kFwdThreads>(sq, q, start + q0, q_valid, heads * D, h * D);
  load_kv(0, 0);
  cp_async_commit();

  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  std::uint32_t qf[D / 16][4];

  for (int kb = 0; kb < n_tiles; ++kb) {
    if (kb + 1 < n_tiles) {
      load_kv(kb + 1, (kb + 1) & 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kb == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(qf[kk], a_addr<D>(sq, warp * 16, kk * 16, lane));
    }
    const int k0 = kb * N;
    if (k0 <= wrow0 + 15) {  // some of this warp's rows see some of these keys
      const bf16* sk = skv + (kb & 1) * 2 * N * D;
      const bf16* sv = sk + N * D;
      float s[N / 8][4];
#pragma unroll
      for (int j = 0; j < N / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const auto& qa = qf[kk];
#pragma unroll
        for (int nj = 0; nj < N / 16; ++nj) {
          std::uint32_t b[4];
          ldsm_x4(b, bnk_addr<D>(sk, nj * 16, kk * 16, lane));
          mma16816(s[2 * nj], qa, b[0], b[1]);
          mma16816(s[2 * nj + 1], qa, b[2], b[3]);
        }
      }
      if (k0 + N - 1 > wrow0) {  // the diagonal crosses this warp's rows: key > query is masked
#pragma unroll
        for (int j = 0; j < N / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (k0 + j * 8 + tq * 2 + (e & 1) > wrow0 + gr + (e >> 1) * 8) s[j][e] = -INFINITY;
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = m_run[r];
#pragma unroll
        for (int j = 0; j < N / 8; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * r], s[j][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float ms = mx == -INFINITY ? 0.0f : mx * sl2;
        const float alpha = exp2f(m_run[r] * sl2 - ms);  // 0 on the first tile (m_run = -inf)
        m_run[r] = mx;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < N / 8; ++j) {
          s[j][2 * r] = exp2f(fmaf(s[j][2 * r], sl2, -ms));
          s[j][2 * r + 1] = exp2f(fmaf(s[j][2 * r + 1], sl2, -ms));
          sum += s[j][2 * r] + s[j][2 * r + 1];
        }
        l_run[r] = l_run[r] * alpha + sum;
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
          o[j][2 * r] *= alpha;
          o[j][2 * r + 1] *= alpha;
        }
      }
#pragma unroll
      for (int kk = 0; kk < N / 16; ++kk) {
        std::uint32_t pa[4];
        acc_to_a(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
        for (int dj = 0; dj < D / 16; ++dj) {
          std::uint32_t b[4];
          ldsm_x4_t(b, bkn_addr<D>(sv, kk * 16, dj * 16, lane));
          mma16816(o[2 * dj], pa, b[0], b[1]);
          mma16816(o[2 * dj + 1], pa, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
  }

  // normalise, stage this warp's 16 rows in its own (consumed) part of sq, store 16 bytes a lane
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = 1.0f / l;
    const int row = warp * 16 + gr + r * 8;
    if (tq == 0 && row < q_valid)
      lse[static_cast<long long>(h) * tokens + start + q0 + row] = m_run[r] * scale + logf(l);
  }
#pragma unroll
  for (int j = 0; j < D / 8; ++j)
#pragma unroll
    for (int r = 0; r < 2; ++r)
      *reinterpret_cast<std::uint32_t*>(sq + swz<D>(warp * 16 + gr + r * 8, j * 8 + tq * 2)) =
          pack_bf16(o[j][2 * r] * inv[r], o[j][2 * r + 1] * inv[r]);
  __syncwarp();
  for (int i = lane; i < 16 * (D / 8); i += 32) {
    const int row = warp * 16 + i / (D / 8), c = (i % (D / 8)) * 8;
    if (row < q_valid)
      store128(out + static_cast<long long>(start + q0 + row) * heads * D + h * D + c,
               *reinterpret_cast<const Bf16x8*>(sq + swz<D>(row, c)));
  }
}

// ---- backward -------------------------------------------------------------------------------

constexpr int kBwdTile = 64, kBwdThreads = 128;
// Stages: 2 (Q, dO, lse, D double-buffered) or 1.
template <int D, int Stages>
constexpr std::size_t mma_backward_smem =
    static_cast<std::size_t>((2 + 2 * Stages) * kBwdTile * D + kBwdTile * kBwdTile) * 2 + 2 * Stages * kBwdTile * 4;

template <int D, int Stages>
__global__ void __launch_bounds__(kBwdThreads, 2) attention_backward_mma_kernel(
    float* __restrict__ dk_part, float* __restrict__ dv_part, float* __restrict__ dq_accum,
    const bf16* __restrict__ dout, const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
    const float* __restrict__ lse, const float* __restrict__ dvec, const std::int32_t* __restrict__ cu_seqlens,
    int heads, int kv_heads, int tokens, float scale, bool vector_atomics) {
  static_assert(Stages == 1 || Stages == 2, "one or two query-tile stages");
  constexpr int T = kBwdTile;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sk = reinterpret_cast<bf16*>(smem);
  bf16* sv = sk + T * D;
  bf16* sq = sv + T * D;            // Stages
  bf16* sdo = sq + Stages * T * D;  // Stages
  bf16* sds = sdo + Stages * T * D;  // dS^T [keys, queries]
  float* slse = reinterpret_cast<float*>(sds + T * T);  // Stages, lse * log2(e)
  float* sdv = slse + Stages * T;                       // Stages, D = rowsum(dO * O)

  const int seq = blockIdx.z, h = blockIdx.y, kb = blockIdx.x;
  const int start = cu_seqlens[seq], len = cu_seqlens[seq + 1] - start;
  const int k0 = kb * T;
  if (k0 >= len) return;
  const int g = h / (heads / kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gr = lane >> 2, tq = lane & 3;
  const int q_tiles = (len + T - 1) / T;
  const float sl2 = scale * kLog2e;

  auto load_q = [&](int qb, int stage) {
    const int q0 = qb * T, qv = min(T, len - q0);
    load_tile_async<T, D, kBwdThreads>(sq + stage * T * D, q, start + q0, qv, heads * D, h * D);
    load_tile_async<T, D, kBwdThreads>(sdo + stage * T * D, dout, start + q0, qv, heads * D, h * D);
    if (threadIdx.x < T) {  // read after a __syncthreads
      const bool ok = static_cast<int>(threadIdx.x) < qv;
      const long long at = static_cast<long long>(h) * tokens + start + q0 + threadIdx.x;
      slse[stage * T + threadIdx.x] = ok ? lse[at] * kLog2e : INFINITY;
      sdv[stage * T + threadIdx.x] = ok ? dvec[at] : 0.0f;
    }
  };
  load_tile_async<T, D, kBwdThreads>(sk, k, start + k0, min(T, len - k0), kv_heads * D, g * D);
  load_tile_async<T, D, kBwdThreads>(sv, v, start + k0, min(T, len - k0), kv_heads * D, g * D);
  load_q(kb, 0);
  cp_async_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[j][e] = dv[j][e] = 0.0f;

  for (int qb = kb; qb < q_tiles; ++qb) {
    const int stage = Stages == 2 ? (qb - kb) & 1 : 0, q0 = qb * T;
    if (Stages == 2 && qb + 1 < q_tiles) {
      load_q(qb + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* cq = sq + stage * T * D;
    const bf16* cdo = sdo + stage * T * D;
    const float* clse = slse + stage * T;
    const float* cdv = sdv + stage * T;

    // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys and the tile's 64 queries
    float s[T / 8][4], dp[T / 8][4];
#pragma unroll
    for (int j = 0; j < T / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      std::uint32_t ka[4], va[4];
      ldsm_x4(ka, a_addr<D>(sk, warp * 16, kk * 16, lane));
      ldsm_x4(va, a_addr<D>(sv, warp * 16, kk * 16, lane));
#pragma unroll
      for (int nj = 0; nj < T / 16; ++nj) {
        std::uint32_t b[4];
        ldsm_x4(b, bnk_addr<D>(cq, nj * 16, kk * 16, lane));
        mma16816(s[2 * nj], ka, b[0], b[1]);
        mma16816(s[2 * nj + 1], ka, b[2], b[3]);
        ldsm_x4(b, bnk_addr<D>(cdo, nj * 16, kk * 16, lane));
        mma16816(dp[2 * nj], va, b[0], b[1]);
        mma16816(dp[2 * nj + 1], va, b[2], b[3]);
      }
    }
    // P^T = exp(S^T * scale - lse), dS^T = P^T (dP^T - D) * scale; key > query masked on the diagonal
    const bool diag = qb == kb;
#pragma unroll
    for (int j = 0; j < T / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qc = j * 8 + tq * 2 + (e & 1), kr = warp * 16 + gr + (e >> 1) * 8;
        float p = exp2f(fmaf(s[j][e], sl2, -clse[qc]));
        if (diag && kr > qc) p = 0.0f;
        s[j][e] = p;
        dp[j][e] = p * (dp[j][e] - cdv[qc]) * scale;
      }
    // dV += P^T dO, dK += dS^T Q
#pragma unroll
    for (int kk = 0; kk < T / 16; ++kk) {
      std::uint32_t pa[4], da[4];
      acc_to_a(pa, s[2 * kk], s[2 * kk + 1]);
      acc_to_a(da, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
      for (int dj = 0; dj < D / 16; ++dj) {
        std::uint32_t b[4];
        ldsm_x4_t(b, bkn_addr<D>(cdo, kk * 16, dj * 16, lane));
        mma16816(dv[2 * dj], pa, b[0], b[1]);
        mma16816(dv[2 * dj + 1], pa, b[2], b[3]);
        ldsm_x4_t(b, bkn_addr<D>(cq, kk * 16, dj * 16, lane));
        mma16816(dk[2 * dj], da, b[0], b[1]);
        mma16816(dk[2 * dj + 1], da, b[2], b[3]);
      }
    }
#pragma unroll
    for (int j = 0; j < T / 8; ++j)
#pragma unroll
      for (int r = 0; r < 2; ++r)
        *reinterpret_cast<std::uint32_t*>(sds + swz<T>(warp * 16 + gr + r * 8, j * 8 + tq * 2)) =
            pack_bf16(dp[j][2 * r], dp[j][2 * r + 1]);
    __syncthreads();
    // One stage: every warp is past its last read of this tile's Q, dO, lse and D (dQ below
    // reads dS^T and K only), so the next tile loads into the same buffers while dQ runs.
    if (Stages == 1 && qb + 1 < q_tiles) {
      load_q(qb + 1, 0);
      cp_async_commit();
    }
    // dQ = dS K for this warp's 16 queries, in two column halves (fewer live registers)
    const int qrow = q0 + warp * 16 + gr;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float acc[D / 16][4];
#pragma unroll
      for (int j = 0; j < D / 16; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < T / 16; ++kk) {
        std::uint32_t a[4];
        ldsm_x4_t(a, at_addr<T>(sds, kk * 16, warp * 16, lane));
#pragma unroll
        for (int dj = 0; dj < D / 32; ++dj) {
          std::uint32_t b[4];
          ldsm_x4_t(b, bkn_addr<D>(sk, kk * 16, half * (D / 2) + dj * 16, lane));
          mma16816(acc[2 * dj], a, b[0], b[1]);
          mma16816(acc[2 * dj + 1], a, b[2], b[3]);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (qrow + r * 8 >= len) continue;
        float* dst =
            dq_accum + static_cast<long long>(start + qrow + r * 8) * heads * D + h * D + half * (D / 2) + tq * 2;
#pragma unroll
        for (int j = 0; j < D / 16; ++j) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
          if (vector_atomics) {
            atomicAdd(reinterpret_cast<float2*>(dst + j * 8), make_float2(acc[j][2 * r], acc[j][2 * r + 1]));
            continue;
          }
#endif
          atomicAdd(dst + j * 8, acc[j][2 * r]);
          atomicAdd(dst + j * 8 + 1, acc[j][2 * r + 1]);
        }
      }
    }
  }

  // this query head's dK and dV partials (fp32), summed over the group by attention_group_sum_kernel
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = k0 + warp * 16 + gr + r * 8;
    if (key >= len) continue;
    const long long at = static_cast<long long>(start + key) * heads * D + h * D + tq * 2;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      *reinterpret_cast<float2*>(dk_part + at + j * 8) = make_float2(dk[j][2 * r], dk[j][2 * r + 1]);
      *reinterpret_cast<float2*>(dv_part + at + j * 8) = make_float2(dv[j][2 * r], dv[j][2 * r + 1]);
    }
  }
}

}  // namespace peft::cuda::detail
