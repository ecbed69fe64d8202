// The plain-FMA version of attention.cuh's flash attention: the same tiles, masks, online
// softmax and FA2 backward schedule, with every product a scalar fp32 loop over 64 x 64 tiles
// staged in fp32 shared memory (rows padded by one word so column walks do not conflict on
// banks), 256 threads each owning a 4 x (D/16) register tile. It is the readable reference the
// tensor-core kernels are checked against (tests/cuda/test_attention.cu runs all of them against
// the CPU), one to two orders of magnitude slower; the backward uses one block per (key tile, kv head)
// and loops over the group's query heads, so dK and dV need no partials. Scratch layout is
// attention.cuh's (dQ accumulator first, D last).
#pragma once
// The 64-row tiles and the tile loader are attention_wmma.cuh's (the same tiling, the FP32 pipe).
#include "attention_wmma.cuh"

namespace peft::cuda {
namespace detail {

constexpr int kSimtThreads = 256;

template <int D>
struct SimtTiles {
  static constexpr int row = D + 1;            // fp32 stride of a Q/K/V/dO tile row
  static constexpr int srow = kAttnTile + 1;   // fp32 stride of an S/P/dS tile row
  static constexpr int tile = kAttnTile * row;
  static constexpr int stile = kAttnTile * srow;
  static constexpr std::size_t forward_smem = (3 * tile + stile + 3 * kAttnTile) * sizeof(float);
  static constexpr std::size_t backward_smem = (4 * tile + 2 * stile + 2 * kAttnTile) * sizeof(float);
};

// Loads rows [row0, row0 + 64) of a [tokens, stride] bf16 tensor's column block [col0, col0 + D)
// into fp32 shared memory; rows at or past `valid` are zero.
template <int D>
__device__ inline void load_tile_f32(float* dst, const bf16* __restrict__ src, long long row0, int valid, int stride,
                                 int col0) {
  constexpr int packs = D / 8;
  for (int idx = threadIdx.x; idx < kAttnTile * packs; idx += kSimtThreads) {
    const int r = idx / packs, p = idx % packs;
    float* d = dst + r * SimtTiles<D>::row + p * 8;
    if (r < valid) {
      const Bf16x8 v = load128(src + (row0 + r) * stride + col0 + p * 8);
      #pragma unroll
      for (int i = 0; i < 8; ++i) d[i] = to_float(v[i]);
    } else {
      #pragma unroll
      for (int i = 0; i < 8; ++i) d[i] = 0.0f;
    }
  }
}

// acc[i][j] = sum_k A[ty + 16 i][k] * B[tx + 16 j][k] over k < D: a 64 x 64 product of two row
// tiles (A B^T), each thread owning rows ty + 16 i and columns tx + 16 j.
template <int D>
__device__ inline void tile_abt(float (&acc)[4][4], const float* a, const float* b, int tx, int ty) {
  #pragma unroll
  for (int i = 0; i < 4; ++i)
    #pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
#pragma unroll 4
  for (int k = 0; k < D; ++k) {
    float av[4], bv[4];
    #pragma unroll
    for (int i = 0; i < 4; ++i) av[i] = a[(ty + 16 * i) * SimtTiles<D>::row + k];
    #pragma unroll
    for (int j = 0; j < 4; ++j) bv[j] = b[(tx + 16 * j) * SimtTiles<D>::row + k];
    #pragma unroll
    for (int i = 0; i < 4; ++i)
      #pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
  }
}

// ---- forward --------------------------------------------------------------------------------

template <int D>
__global__ void __launch_bounds__(kSimtThreads) attention_forward_simt_kernel(
    bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q, const bf16* __restrict__ k,
    const bf16* __restrict__ v, const std::int32_t* __restrict__ cu_seqlens, int heads, int kv_heads, int tokens,
    float scale) {
  using T = SimtTiles<D>;
  constexpr int cols_per_thread = D / 16;
  extern __shared__ __align__(128) unsigned char smem[];
  float* qs = reinterpret_cast<float*>(smem);
  float* ks = qs + T::tile;
  float* vs = ks + T::tile;
  float* ss = vs + T::tile;
  float* row_m = ss + T::stile;
  float* row_l = row_m + kAttnTile;
  float* row_alpha = row_l + kAttnTile;

  const int seq = blockIdx.z, h = blockIdx.y, qb = blockIdx.x;
  const int start = cu_seqlens[seq], len = cu_seqlens[seq + 1] - start;
  const int q0 = qb * kAttnTile;
  if (q0 >= len) return;
  const int q_valid = min(kAttnTile, len - q0);
  const int g = h / (heads / kv_heads);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

  load_tile_f32<D>(qs, q, start + q0, q_valid, heads * D, h * D);
  if (threadIdx.x < kAttnTile) {
    row_m[threadIdx.x] = -INFINITY;
    row_l[threadIdx.x] = 0.0f;
  }
  float o[4][cols_per_thread];
  #pragma unroll
  for (int i = 0; i < 4; ++i)
    #pragma unroll
    for (int j = 0; j < cols_per_thread; ++j) o[i][j] = 0.0f;

  const int last_kb = qb;  // causal: keys <= the tile's last query
  for (int kb = 0; kb <= last_kb; ++kb) {
    const int k0 = kb * kAttnTile;
    const int k_valid = min(kAttnTile, len - k0);
    __syncthreads();  // previous tile's K, V, S fully consumed
    load_tile_f32<D>(ks, k, start + k0, k_valid, kv_heads * D, g * D);
    load_tile_f32<D>(vs, v, start + k0, k_valid, kv_heads * D, g * D);
    __syncthreads();
    float s[4][4];
    tile_abt<D>(s, qs, ks, tx, ty);
    #pragma unroll
    for (int i = 0; i < 4; ++i)
      #pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int qr = ty + 16 * i, kc = tx + 16 * j;
        const bool ok = kc < k_valid && k0 + kc <= q0 + qr;
        ss[qr * T::srow + kc] = ok ? s[i][j] * scale : -INFINITY;
      }
    __syncthreads();
    // online softmax: 4 threads per query row, 16 columns each
    {
      const int r = threadIdx.x / 4, sub = threadIdx.x % 4;
      float mx = -INFINITY;
      #pragma unroll
      for (int j = 0; j < 16; ++j) mx = fmaxf(mx, ss[r * T::srow + sub + 4 * j]);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_old = row_m[r];
      const float m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      #pragma unroll
      for (int j = 0; j < 16; ++j) {
        float& e = ss[r * T::srow + sub + 4 * j];
        e = m_new == -INFINITY ? 0.0f : expf(e - m_new);
        sum += e;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      __syncwarp();
      if (sub == 0) {
        const float alpha = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);
        row_alpha[r] = alpha;
        row_l[r] = row_l[r] * alpha + sum;
        row_m[r] = m_new;
      }
    }
    __syncthreads();
    // O = O * alpha + P V
    #pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float alpha = row_alpha[ty + 16 * i];
      #pragma unroll
      for (int j = 0; j < cols_per_thread; ++j) o[i][j] *= alpha;
    }
    for (int kk = 0; kk < kAttnTile; ++kk) {
      float pv[4], vv[cols_per_thread];
      #pragma unroll
      for (int i = 0; i < 4; ++i) pv[i] = ss[(ty + 16 * i) * T::srow + kk];
      #pragma unroll
      for (int j = 0; j < cols_per_thread; ++j) vv[j] = vs[kk * T::row + tx + 16 * j];
      #pragma unroll
      for (int i = 0; i < 4; ++i)
        #pragma unroll
        for (int j = 0; j < cols_per_thread; ++j) o[i][j] += pv[i] * vv[j];
    }
  }
  __syncthreads();
  // normalise into the Q tile (no longer needed), then store rows with 16-byte packs
  #pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = ty + 16 * i;
    const float inv_l = row_l[r] > 0.0f ? 1.0f / row_l[r] : 0.0f;
    #pragma unroll
    for (int j = 0; j < cols_per_thread; ++j) qs[r * T::row + tx + 16 * j] = o[i][j] * inv_l;
  }
  if (threadIdx.x < q_valid)
    lse[static_cast<long long>(h) * tokens + start + q0 + threadIdx.x] = row_m[threadIdx.x] + logf(row_l[threadIdx.x]);
  __syncthreads();
  constexpr int packs = D / 8;
  for (int idx = threadIdx.x; idx < q_valid * packs; idx += kSimtThreads) {
    const int r = idx / packs, p = idx % packs;
    Bf16x8 pk;
    #pragma unroll
    for (int i = 0; i < 8; ++i) pk[i] = to_bf16(qs[r * T::row + p * 8 + i]);
    store128(out + static_cast<long long>(start + q0 + r) * heads * D + h * D + p * 8, pk);
  }
}

template <int D>
__global__ void __launch_bounds__(kSimtThreads) attention_backward_simt_kernel(
    bf16* __restrict__ dk, bf16* __restrict__ dv, float* __restrict__ dq_accum, const bf16* __restrict__ dout,
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const float* __restrict__ lse,
    const float* __restrict__ dvec, const std::int32_t* __restrict__ cu_seqlens, int heads, int kv_heads, int tokens,
    float scale) {
  using T = SimtTiles<D>;
  constexpr int cols_per_thread = D / 16;
  extern __shared__ __align__(128) unsigned char smem[];
  float* ks = reinterpret_cast<float*>(smem);
  float* vs = ks + T::tile;
  float* qs = vs + T::tile;
  float* dos = qs + T::tile;
  float* ps = dos + T::tile;
  float* dss = ps + T::stile;
  float* row_lse = dss + T::stile;
  float* row_d = row_lse + kAttnTile;

  const int seq = blockIdx.z, g = blockIdx.y, kb = blockIdx.x;
  const int start = cu_seqlens[seq], len = cu_seqlens[seq + 1] - start;
  const int k0 = kb * kAttnTile;
  if (k0 >= len) return;
  const int k_valid = min(kAttnTile, len - k0);
  const int group = heads / kv_heads;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int q_tiles = (len + kAttnTile - 1) / kAttnTile;

  load_tile_f32<D>(ks, k, start + k0, k_valid, kv_heads * D, g * D);
  load_tile_f32<D>(vs, v, start + k0, k_valid, kv_heads * D, g * D);
  float dk_acc[4][cols_per_thread], dv_acc[4][cols_per_thread];
  #pragma unroll
  for (int i = 0; i < 4; ++i)
    #pragma unroll
    for (int j = 0; j < cols_per_thread; ++j) dk_acc[i][j] = dv_acc[i][j] = 0.0f;

  for (int h = g * group; h < (g + 1) * group; ++h) {
    for (int qb = kb; qb < q_tiles; ++qb) {
      const int q0 = qb * kAttnTile;
      const int q_valid = min(kAttnTile, len - q0);
      __syncthreads();  // previous Q, dO, P, dS consumed
      load_tile_f32<D>(qs, q, start + q0, q_valid, heads * D, h * D);
      load_tile_f32<D>(dos, dout, start + q0, q_valid, heads * D, h * D);
      if (threadIdx.x < kAttnTile) {
        const bool ok = threadIdx.x < q_valid;
        const long long at = static_cast<long long>(h) * tokens + start + q0 + threadIdx.x;
        row_lse[threadIdx.x] = ok ? lse[at] : 0.0f;
        row_d[threadIdx.x] = ok ? dvec[at] : 0.0f;
      }
      __syncthreads();
      float s[4][4], dp[4][4];
      tile_abt<D>(s, qs, ks, tx, ty);    // S = Q K^T
      tile_abt<D>(dp, dos, vs, tx, ty);  // dP = dO V^T
      #pragma unroll
      for (int i = 0; i < 4; ++i)
        #pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int qr = ty + 16 * i, kc = tx + 16 * j;
          const bool ok = qr < q_valid && kc < k_valid && k0 + kc <= q0 + qr;
          const float p = ok ? expf(s[i][j] * scale - row_lse[qr]) : 0.0f;
          ps[qr * T::srow + kc] = p;
          dss[qr * T::srow + kc] = p * (dp[i][j] - row_d[qr]) * scale;
        }
      __syncthreads();
      // dV += P^T dO, dK += dS^T Q: rows are keys (ty + 16 i), columns features (tx + 16 j)
      for (int r = 0; r < q_valid; ++r) {
        float pv[4], dsv[4], dov[cols_per_thread], qv[cols_per_thread];
        #pragma unroll
        for (int i = 0; i < 4; ++i) {
          pv[i] = ps[r * T::srow + ty + 16 * i];
          dsv[i] = dss[r * T::srow + ty + 16 * i];
        }
        #pragma unroll
        for (int j = 0; j < cols_per_thread; ++j) {
          dov[j] = dos[r * T::row + tx + 16 * j];
          qv[j] = qs[r * T::row + tx + 16 * j];
        }
        #pragma unroll
        for (int i = 0; i < 4; ++i)
          #pragma unroll
          for (int j = 0; j < cols_per_thread; ++j) {
            dv_acc[i][j] += pv[i] * dov[j];
            dk_acc[i][j] += dsv[i] * qv[j];
          }
      }
      // dQ += dS K: rows are queries (ty + 16 i)
      float dq[4][cols_per_thread];
      #pragma unroll
      for (int i = 0; i < 4; ++i)
        #pragma unroll
        for (int j = 0; j < cols_per_thread; ++j) dq[i][j] = 0.0f;
      for (int kk = 0; kk < k_valid; ++kk) {
        float dsv[4], kv[cols_per_thread];
        #pragma unroll
        for (int i = 0; i < 4; ++i) dsv[i] = dss[(ty + 16 * i) * T::srow + kk];
        #pragma unroll
        for (int j = 0; j < cols_per_thread; ++j) kv[j] = ks[kk * T::row + tx + 16 * j];
        #pragma unroll
        for (int i = 0; i < 4; ++i)
          #pragma unroll
          for (int j = 0; j < cols_per_thread; ++j) dq[i][j] += dsv[i] * kv[j];
      }
      #pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int qr = ty + 16 * i;
        if (qr >= q_valid) continue;
        float* dst = dq_accum + static_cast<long long>(start + q0 + qr) * heads * D + h * D;
        #pragma unroll
        for (int j = 0; j < cols_per_thread; ++j) atomicAdd(dst + tx + 16 * j, dq[i][j]);
      }
    }
  }
  __syncthreads();
  // dK, dV through shared memory (Q and dO tiles are free now) for 16-byte stores
  #pragma unroll
  for (int i = 0; i < 4; ++i)
    #pragma unroll
    for (int j = 0; j < cols_per_thread; ++j) {
      qs[(ty + 16 * i) * T::row + tx + 16 * j] = dk_acc[i][j];
      dos[(ty + 16 * i) * T::row + tx + 16 * j] = dv_acc[i][j];
    }
  __syncthreads();
  constexpr int packs = D / 8;
  for (int idx = threadIdx.x; idx < k_valid * packs; idx += kSimtThreads) {
    const int r = idx / packs, p = idx % packs;
    Bf16x8 a, b;
    #pragma unroll
    for (int i = 0; i < 8; ++i) {
      a[i] = to_bf16(qs[r * T::row + p * 8 + i]);
      b[i] = to_bf16(dos[r * T::row + p * 8 + i]);
    }
    const long long at = static_cast<long long>(start + k0 + r) * kv_heads * D + g * D + p * 8;
    store128(dk + at, a);
    store128(dv + at, b);
  }
}


}  // namespace detail

// ----------------------------------------------------------------------------------------------

inline void attention_forward_simt(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, AttentionDims d,
                                   VarlenBatch b, cudaStream_t stream) {
  detail::check_attention(d, "attention_forward_simt");
  if (b.tokens == 0 || b.num_seqs == 0) return;
  const dim3 grid((b.max_seqlen + detail::kAttnTile - 1) / detail::kAttnTile, d.heads, b.num_seqs);
  auto launch = [&](auto kernel, std::size_t smem) {
    PEFT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    kernel<<<grid, detail::kSimtThreads, smem, stream>>>(out, lse, q, k, v, b.cu_seqlens, d.heads, d.kv_heads, b.tokens,
                                                          1.0f / sqrtf(static_cast<float>(d.head_dim)));
    PEFT_CUDA_CHECK_LAUNCH("attention_forward_simt_kernel");
  };
  if (d.head_dim == 64) launch(detail::attention_forward_simt_kernel<64>, detail::SimtTiles<64>::forward_smem);
  else launch(detail::attention_forward_simt_kernel<128>, detail::SimtTiles<128>::forward_smem);
}

inline void attention_backward_simt(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out,
                                    const bf16* q, const bf16* k, const bf16* v, const float* lse, AttentionDims d,
                                    VarlenBatch b, cudaStream_t stream) {
  detail::check_attention(d, "attention_backward_simt");
  if (b.tokens == 0 || b.num_seqs == 0) return;
  const long long nq = static_cast<long long>(b.tokens) * d.heads * d.head_dim;
  float *dq_accum = scratch, *dvec = scratch + 3 * nq;
  PEFT_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, nq * sizeof(float), stream));
  detail::attention_backward_dot_kernel<<<detail::blocks_for(static_cast<long long>(b.tokens) * d.heads * 32, 256), 256, 0,
                                          stream>>>(dvec, dout, out, b.tokens, d.heads, d.head_dim);
  PEFT_CUDA_CHECK_LAUNCH("attention_backward_dot_kernel");
  const dim3 grid((b.max_seqlen + detail::kAttnTile - 1) / detail::kAttnTile, d.kv_heads, b.num_seqs);
  auto launch = [&](auto kernel, std::size_t smem) {
    PEFT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    kernel<<<grid, detail::kSimtThreads, smem, stream>>>(dk, dv, dq_accum, dout, q, k, v, lse, dvec, b.cu_seqlens, d.heads,
                                                          d.kv_heads, b.tokens, 1.0f / sqrtf(static_cast<float>(d.head_dim)));
    PEFT_CUDA_CHECK_LAUNCH("attention_backward_simt_kernel");
  };
  if (d.head_dim == 64) launch(detail::attention_backward_simt_kernel<64>, detail::SimtTiles<64>::backward_smem);
  else launch(detail::attention_backward_simt_kernel<128>, detail::SimtTiles<128>::backward_smem);
  detail::f32_to_bf16_kernel<<<detail::blocks_for(nq, 256), 256, 0, stream>>>(dq, dq_accum, nq);
  PEFT_CUDA_CHECK_LAUNCH("f32_to_bf16_kernel");
}

}  // namespace peft::cuda
