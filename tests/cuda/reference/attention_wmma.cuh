// The first tensor-core attention, on WMMA 16x16x16 fragments with each score tile staged in fp32
// shared memory (4 warps, 16 rows each, 64 x 64 tiles): ~4x slower than the mma.sync kernels the
// library runs (include/peft/kernels/cuda/attention_mma.cuh). Kept with the tests, not in the
// library, as a second tensor-core implementation that test_attention.cu checks against the CPU
// and times beside the production kernels. Same contract as attention_forward/attention_backward.
#pragma once
#include <mma.h>

#include "peft/kernels/cuda/attention.cuh"

namespace peft::cuda {
namespace detail {

constexpr int kAttnTile = 64;  // query rows and key rows per tile

// Shared-memory row strides (elements) of the WMMA kernels. The padding keeps every
// 16-row fragment 32-byte aligned (WMMA's requirement) and shifts rows across banks.
template <int D>
struct TcLayout {
  static constexpr int ld = D + 8;              // bf16 [64, D] tiles: Q, K, V, dO
  static constexpr int lds = kAttnTile + 4;     // fp32 [64, 64] scores
  static constexpr int ldp = kAttnTile + 8;     // bf16 [64, 64] probabilities, dS
  static constexpr int ldo = D + 4;             // fp32 [64, D] accumulators
  static constexpr std::size_t tile_bytes = kAttnTile * ld * 2;
  static constexpr std::size_t score_bytes = kAttnTile * lds * 4;
  static constexpr std::size_t prob_bytes = kAttnTile * ldp * 2;
  static constexpr std::size_t acc_bytes = kAttnTile * ldo * 4;
  static constexpr std::size_t forward_smem = 3 * tile_bytes + score_bytes + prob_bytes + acc_bytes + 2 * kAttnTile * 4;
  static constexpr std::size_t backward_smem = 4 * tile_bytes + 2 * prob_bytes + 2 * score_bytes + 2 * kAttnTile * 4;
  static_assert(acc_bytes <= 2 * score_bytes, "the backward stages [64, D] fp32 in the two score buffers");
};

namespace wmma = nvcuda::wmma;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Rows [row0, row0 + 64) of a [tokens, stride] bf16 tensor's columns [col0, col0 + D) into a
// shared tile with row stride ld; rows at or past `valid` are zero.
template <int D>
__device__ inline void load_tile_bf16(bf16* dst, const bf16* __restrict__ src, long long row0, int valid, int stride,
                                      int col0) {
  constexpr int packs = D / 8;
  for (int idx = threadIdx.x; idx < kAttnTile * packs; idx += blockDim.x) {
    const int r = idx / packs, p = idx % packs;
    Bf16x8 v{};
    if (r < valid) v = load128(src + (row0 + r) * stride + col0 + p * 8);
    store128(dst + r * TcLayout<D>::ld + p * 8, v);
  }
}

// ---- WMMA forward ---------------------------------------------------------------------------

template <int D>
__global__ void __launch_bounds__(128) attention_forward_tc_kernel(
    bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q, const bf16* __restrict__ k,
    const bf16* __restrict__ v, const std::int32_t* __restrict__ cu_seqlens, int heads, int kv_heads, int tokens,
    float scale) {
  using L = TcLayout<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem);
  bf16* ks = qs + kAttnTile * L::ld;
  bf16* vs = ks + kAttnTile * L::ld;
  float* ss = reinterpret_cast<float*>(vs + kAttnTile * L::ld);
  bf16* ps = reinterpret_cast<bf16*>(ss + kAttnTile * L::lds);
  float* os = reinterpret_cast<float*>(ps + kAttnTile * L::ldp);
  float* row_m = os + kAttnTile * L::ldo;
  float* row_l = row_m + kAttnTile;

  const int seq = blockIdx.z, h = blockIdx.y, qb = blockIdx.x;
  const int start = cu_seqlens[seq], len = cu_seqlens[seq + 1] - start;
  const int q0 = qb * kAttnTile;
  if (q0 >= len) return;
  const int q_valid = min(kAttnTile, len - q0);
  const int g = h / (heads / kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = warp * 16 + lane / 2, side = lane % 2;  // softmax: two lanes per query row

  load_tile_bf16<D>(qs, q, start + q0, q_valid, heads * D, h * D);
  for (int i = threadIdx.x; i < kAttnTile * L::ldo; i += blockDim.x) os[i] = 0.0f;
  if (threadIdx.x < kAttnTile) {
    row_m[threadIdx.x] = -INFINITY;
    row_l[threadIdx.x] = 0.0f;
  }

  for (int kb = 0; kb <= qb; ++kb) {  // causal: keys up to the tile's last query
    const int k0 = kb * kAttnTile;
    const int k_valid = min(kAttnTile, len - k0);
    __syncthreads();  // every warp is done with the previous K and V
    load_tile_bf16<D>(ks, k, start + k0, k_valid, kv_heads * D, g * D);
    load_tile_bf16<D>(vs, v, start + k0, k_valid, kv_heads * D, g * D);
    __syncthreads();
    // S = Q K^T for this warp's 16 query rows
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      FragC s;
      wmma::fill_fragment(s, 0.0f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        FragA a;
        FragBT b;
        wmma::load_matrix_sync(a, qs + warp * 16 * L::ld + kk * 16, L::ld);
        wmma::load_matrix_sync(b, ks + j * 16 * L::ld + kk * 16, L::ld);
        wmma::mma_sync(s, a, b, s);
      }
      wmma::store_matrix_sync(ss + warp * 16 * L::lds + j * 16, s, L::lds, wmma::mem_row_major);
    }
    __syncwarp();
    // online softmax over this tile; P to bf16; O rows rescaled by exp(m_old - m_new)
    {
      const float* srow = ss + row * L::lds + side * 32;
      float vals[32];
      float mx = -INFINITY;
#pragma unroll
      for (int c = 0; c < 32; ++c) {
        const int kc = side * 32 + c;
        const bool ok = kc < k_valid && k0 + kc <= q0 + row;
        vals[c] = ok ? srow[c] * scale : -INFINITY;
        mx = fmaxf(mx, vals[c]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float m_old = row_m[row];
      const float m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      bf16* prow = ps + row * L::ldp + side * 32;
#pragma unroll
      for (int c = 0; c < 32; ++c) {
        const float p = m_new == -INFINITY ? 0.0f : expf(vals[c] - m_new);
        sum += p;
        prow[c] = to_bf16(p);
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      const float alpha = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);
      __syncwarp();  // both lanes of the pair have read row_m
      if (side == 0) {
        row_m[row] = m_new;
        row_l[row] = row_l[row] * alpha + sum;
      }
      float* orow = os + row * L::ldo + side * (D / 2);
#pragma unroll 8
      for (int c = 0; c < D / 2; ++c) orow[c] *= alpha;
    }
    __syncwarp();
    // O += P V
#pragma unroll
    for (int dj = 0; dj < D / 16; ++dj) {
      FragC o;
      wmma::load_matrix_sync(o, os + warp * 16 * L::ldo + dj * 16, L::ldo, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kAttnTile / 16; ++kk) {
        FragA a;
        FragB b;
        wmma::load_matrix_sync(a, ps + warp * 16 * L::ldp + kk * 16, L::ldp);
        wmma::load_matrix_sync(b, vs + kk * 16 * L::ld + dj * 16, L::ld);
        wmma::mma_sync(o, a, b, o);
      }
      wmma::store_matrix_sync(os + warp * 16 * L::ldo + dj * 16, o, L::ldo, wmma::mem_row_major);
    }
  }
  __syncwarp();
  if (row < q_valid) {
    const float inv_l = 1.0f / row_l[row];
    const float* orow = os + row * L::ldo;
    bf16* dst = out + static_cast<long long>(start + q0 + row) * heads * D + h * D;
    for (int p = side; p < D / 8; p += 2) {
      Bf16x8 pk;
#pragma unroll
      for (int i = 0; i < 8; ++i) pk[i] = to_bf16(orow[p * 8 + i] * inv_l);
      store128(dst + p * 8, pk);
    }
    if (side == 0) lse[static_cast<long long>(h) * tokens + start + q0 + row] = row_m[row] + logf(row_l[row]);
  }
}

template <int D>
__global__ void __launch_bounds__(128) attention_backward_tc_kernel(
    float* __restrict__ dk_part, float* __restrict__ dv_part, float* __restrict__ dq_accum,
    const bf16* __restrict__ dout, const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
    const float* __restrict__ lse, const float* __restrict__ dvec, const std::int32_t* __restrict__ cu_seqlens,
    int heads, int kv_heads, int tokens, float scale) {
  using L = TcLayout<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* ks = reinterpret_cast<bf16*>(smem);
  bf16* vs = ks + kAttnTile * L::ld;
  bf16* qs = vs + kAttnTile * L::ld;
  bf16* dos = qs + kAttnTile * L::ld;
  bf16* p_t = dos + kAttnTile * L::ld;   // P^T [keys, queries]
  bf16* ds_t = p_t + kAttnTile * L::ldp;  // dS^T [keys, queries]
  float* s_t = reinterpret_cast<float*>(ds_t + kAttnTile * L::ldp);  // S^T, then [64, D] staging
  float* dp_t = s_t + kAttnTile * L::lds;                             // dP^T
  float* staging = s_t;
  float* row_lse = dp_t + kAttnTile * L::lds;
  float* row_d = row_lse + kAttnTile;

  const int seq = blockIdx.z, h = blockIdx.y, kb = blockIdx.x;
  const int start = cu_seqlens[seq], len = cu_seqlens[seq + 1] - start;
  const int k0 = kb * kAttnTile;
  if (k0 >= len) return;
  const int k_valid = min(kAttnTile, len - k0);
  const int g = h / (heads / kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int krow = warp * 16 + lane / 2, side = lane % 2;  // elementwise: two lanes per key row
  const int q_tiles = (len + kAttnTile - 1) / kAttnTile;

  load_tile_bf16<D>(ks, k, start + k0, k_valid, kv_heads * D, g * D);
  load_tile_bf16<D>(vs, v, start + k0, k_valid, kv_heads * D, g * D);
  FragC dk_acc[D / 16], dv_acc[D / 16];
#pragma unroll
  for (int dj = 0; dj < D / 16; ++dj) {
    wmma::fill_fragment(dk_acc[dj], 0.0f);
    wmma::fill_fragment(dv_acc[dj], 0.0f);
  }

  for (int qb = kb; qb < q_tiles; ++qb) {
    const int q0 = qb * kAttnTile;
    const int q_valid = min(kAttnTile, len - q0);
    __syncthreads();  // previous tile's Q, dO, P^T, dS^T and staging are consumed
    load_tile_bf16<D>(qs, q, start + q0, q_valid, heads * D, h * D);
    load_tile_bf16<D>(dos, dout, start + q0, q_valid, heads * D, h * D);
    if (threadIdx.x < kAttnTile) {
      const bool ok = threadIdx.x < q_valid;
      const long long at = static_cast<long long>(h) * tokens + start + q0 + threadIdx.x;
      row_lse[threadIdx.x] = ok ? lse[at] : 0.0f;
      row_d[threadIdx.x] = ok ? dvec[at] : 0.0f;
    }
    __syncthreads();
    // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      FragC s, dp;
      wmma::fill_fragment(s, 0.0f);
      wmma::fill_fragment(dp, 0.0f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        FragA a;
        FragBT b;
        wmma::load_matrix_sync(a, ks + warp * 16 * L::ld + kk * 16, L::ld);
        wmma::load_matrix_sync(b, qs + j * 16 * L::ld + kk * 16, L::ld);
        wmma::mma_sync(s, a, b, s);
        wmma::load_matrix_sync(a, vs + warp * 16 * L::ld + kk * 16, L::ld);
        wmma::load_matrix_sync(b, dos + j * 16 * L::ld + kk * 16, L::ld);
        wmma::mma_sync(dp, a, b, dp);
      }
      wmma::store_matrix_sync(s_t + warp * 16 * L::lds + j * 16, s, L::lds, wmma::mem_row_major);
      wmma::store_matrix_sync(dp_t + warp * 16 * L::lds + j * 16, dp, L::lds, wmma::mem_row_major);
    }
    __syncwarp();
    // P^T = exp(S^T * scale - lse), dS^T = P^T (dP^T - D) * scale, both to bf16
#pragma unroll 8
    for (int c = 0; c < 32; ++c) {
      const int qc = side * 32 + c;
      const bool ok = krow < k_valid && qc < q_valid && k0 + krow <= q0 + qc;
      const float p = ok ? expf(s_t[krow * L::lds + qc] * scale - row_lse[qc]) : 0.0f;
      p_t[krow * L::ldp + qc] = to_bf16(p);
      ds_t[krow * L::ldp + qc] = to_bf16(p * (dp_t[krow * L::lds + qc] - row_d[qc]) * scale);
    }
    __syncwarp();
    // dV += P^T dO, dK += dS^T Q
#pragma unroll
    for (int dj = 0; dj < D / 16; ++dj) {
#pragma unroll
      for (int kk = 0; kk < kAttnTile / 16; ++kk) {
        FragA a;
        FragB b;
        wmma::load_matrix_sync(a, p_t + warp * 16 * L::ldp + kk * 16, L::ldp);
        wmma::load_matrix_sync(b, dos + kk * 16 * L::ld + dj * 16, L::ld);
        wmma::mma_sync(dv_acc[dj], a, b, dv_acc[dj]);
        wmma::load_matrix_sync(a, ds_t + warp * 16 * L::ldp + kk * 16, L::ldp);
        wmma::load_matrix_sync(b, qs + kk * 16 * L::ld + dj * 16, L::ld);
        wmma::mma_sync(dk_acc[dj], a, b, dk_acc[dj]);
      }
    }
    __syncthreads();  // every warp's dS^T rows are written; S^T / dP^T become the staging area
    // dQ = dS K for this warp's 16 queries: dS is dS^T read column-major
#pragma unroll
    for (int dj = 0; dj < D / 16; ++dj) {
      FragC acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < kAttnTile / 16; ++kk) {
        FragAT a;
        FragB b;
        wmma::load_matrix_sync(a, ds_t + kk * 16 * L::ldp + warp * 16, L::ldp);
        wmma::load_matrix_sync(b, ks + kk * 16 * L::ld + dj * 16, L::ld);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(staging + warp * 16 * L::ldo + dj * 16, acc, L::ldo, wmma::mem_row_major);
    }
    __syncwarp();
    for (int idx = lane; idx < 16 * D; idx += 32) {
      const int r = warp * 16 + idx / D, c = idx % D;
      if (r < q_valid)
        atomicAdd(dq_accum + static_cast<long long>(start + q0 + r) * heads * D + h * D + c, staging[r * L::ldo + c]);
    }
  }
  __syncthreads();
  // this head's dK and dV partials, staged per warp for coalesced fp32 stores
  for (int which = 0; which < 2; ++which) {
#pragma unroll
    for (int dj = 0; dj < D / 16; ++dj)
      wmma::store_matrix_sync(staging + warp * 16 * L::ldo + dj * 16, which == 0 ? dk_acc[dj] : dv_acc[dj], L::ldo,
                              wmma::mem_row_major);
    __syncwarp();
    float* part = which == 0 ? dk_part : dv_part;
    for (int idx = lane; idx < 16 * D; idx += 32) {
      const int r = warp * 16 + idx / D, c = idx % D;
      if (r < k_valid) part[static_cast<long long>(start + k0 + r) * heads * D + h * D + c] = staging[r * L::ldo + c];
    }
    __syncwarp();
  }
}

template <int D>
void attention_forward_tc(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, AttentionDims d,
                          VarlenBatch b, cudaStream_t stream) {
  constexpr int smem = static_cast<int>(TcLayout<D>::forward_smem);
  PEFT_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_tc_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid((b.max_seqlen + kAttnTile - 1) / kAttnTile, d.heads, b.num_seqs);
  attention_forward_tc_kernel<D><<<grid, 128, smem, stream>>>(out, lse, q, k, v, b.cu_seqlens, d.heads, d.kv_heads,
                                                             b.tokens, 1.0f / sqrtf(static_cast<float>(D)));
  PEFT_CUDA_CHECK_LAUNCH("attention_forward_tc_kernel");
}

template <int D>
void attention_backward_tc(float* dk_part, float* dv_part, float* dq_accum, const bf16* dout, const bf16* q,
                           const bf16* k, const bf16* v, const float* lse, const float* dvec, AttentionDims d,
                           VarlenBatch b, cudaStream_t stream) {
  constexpr int smem = static_cast<int>(TcLayout<D>::backward_smem);
  PEFT_CUDA_CHECK(cudaFuncSetAttribute(attention_backward_tc_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid((b.max_seqlen + kAttnTile - 1) / kAttnTile, d.heads, b.num_seqs);
  attention_backward_tc_kernel<D><<<grid, 128, smem, stream>>>(dk_part, dv_part, dq_accum, dout, q, k, v, lse, dvec,
                                                              b.cu_seqlens, d.heads, d.kv_heads, b.tokens,
                                                              1.0f / sqrtf(static_cast<float>(D)));
  PEFT_CUDA_CHECK_LAUNCH("attention_backward_tc_kernel");
}

template <int D>
struct WmmaBackwardCore {
  static constexpr auto run = attention_backward_tc<D>;
};

}  // namespace detail

// The previous WMMA kernels, same contract: the baseline tests/cuda/test_attention.cu checks
// against the CPU and times beside the kernels above.
inline void attention_forward_wmma(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, AttentionDims d,
                                   VarlenBatch b, cudaStream_t stream) {
  detail::check_attention(d, "attention_forward_wmma");
  if (b.tokens == 0 || b.num_seqs == 0) return;
  if (d.head_dim == 64) detail::attention_forward_tc<64>(out, lse, q, k, v, d, b, stream);
  else detail::attention_forward_tc<128>(out, lse, q, k, v, d, b, stream);
}
inline void attention_backward_wmma(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out,
                                    const bf16* q, const bf16* k, const bf16* v, const float* lse, AttentionDims d,
                                    VarlenBatch b, cudaStream_t stream) {
  detail::check_attention(d, "attention_backward_wmma");
  if (b.tokens == 0 || b.num_seqs == 0) return;
  detail::attention_backward_with<detail::WmmaBackwardCore>(dq, dk, dv, scratch, dout, out, q, k, v, lse, d, b, stream);
}

}  // namespace peft::cuda
