// The attention fallback for the head dims the fast kernels refuse (other than 64 and 128);
// attention.cuh's entry point picks it. Only tiny models have them (the HF fixtures:
// head_dim 16 and 8), so these are written to be obviously right, not fast: one thread per
// (token, head) walking its sample's keys with an online softmax; the backward recomputes the
// probabilities from the forward's log-sum-exp, one thread per query row for dQ and one per key
// row for dK/dV (so nothing needs atomics). Same layouts and semantics as attention.cuh and
// rope.cuh; the model picks these whenever the fast launcher would throw.
#pragma once
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/attention_varlen.cuh"
#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::cuda {
namespace detail {

constexpr int kSmallMaxHeadDim = 128;

// Sample bounds [start, end) of token t: cu_seqlens is short (samples per micro-batch).
__device__ inline void sample_of(const std::int32_t* cu, int num_seqs, int t, int& start, int& end) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (cu[mid] <= t) lo = mid; else hi = mid - 1;
  }
  start = cu[lo];
  end = cu[lo + 1];
}

__global__ void small_attention_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse,
                                               const bf16* __restrict__ q, const bf16* __restrict__ k,
                                               const bf16* __restrict__ v, const std::int32_t* __restrict__ cu,
                                               int num_seqs, int tokens, int heads, int kv_heads, int d, float scale) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= tokens * heads) return;
  const int t = idx / heads, h = idx % heads, g = h / (heads / kv_heads);
  int start, end;
  sample_of(cu, num_seqs, t, start, end);
  const bf16* qr = q + (static_cast<long long>(t) * heads + h) * d;
  float acc[kSmallMaxHeadDim];
  for (int c = 0; c < d; ++c) acc[c] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int j = start; j <= t; ++j) {
    const bf16* kr = k + (static_cast<long long>(j) * kv_heads + g) * d;
    float s = 0.0f;
    for (int c = 0; c < d; ++c) s += to_float(qr[c]) * to_float(kr[c]);
    s *= scale;
    const float m_new = fmaxf(m, s), corr = expf(m - m_new), p = expf(s - m_new);
    l = l * corr + p;
    const bf16* vr = v + (static_cast<long long>(j) * kv_heads + g) * d;
    for (int c = 0; c < d; ++c) acc[c] = acc[c] * corr + p * to_float(vr[c]);
    m = m_new;
  }
  bf16* o = out + (static_cast<long long>(t) * heads + h) * d;
  for (int c = 0; c < d; ++c) o[c] = to_bf16(acc[c] / l);
  lse[static_cast<long long>(h) * tokens + t] = m + logf(l);
}

// dQ row of (t, h), and D = rowsum(dO * O) saved for the key-side kernel.
__global__ void small_attention_dq_kernel(bf16* __restrict__ dq, float* __restrict__ dvec, const bf16* __restrict__ dout,
                                          const bf16* __restrict__ out, const bf16* __restrict__ q,
                                          const bf16* __restrict__ k, const bf16* __restrict__ v,
                                          const float* __restrict__ lse, const std::int32_t* __restrict__ cu,
                                          int num_seqs, int tokens, int heads, int kv_heads, int d, float scale) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= tokens * heads) return;
  const int t = idx / heads, h = idx % heads, g = h / (heads / kv_heads);
  int start, end;
  sample_of(cu, num_seqs, t, start, end);
  const long long row = (static_cast<long long>(t) * heads + h) * d;
  float dsum = 0.0f;
  for (int c = 0; c < d; ++c) dsum += to_float(dout[row + c]) * to_float(out[row + c]);
  dvec[static_cast<long long>(h) * tokens + t] = dsum;
  const float lse_t = lse[static_cast<long long>(h) * tokens + t];
  float acc[kSmallMaxHeadDim];
  for (int c = 0; c < d; ++c) acc[c] = 0.0f;
  for (int j = start; j <= t; ++j) {
    const long long kv = (static_cast<long long>(j) * kv_heads + g) * d;
    float s = 0.0f, dp = 0.0f;
    for (int c = 0; c < d; ++c) {
      s += to_float(q[row + c]) * to_float(k[kv + c]);
      dp += to_float(dout[row + c]) * to_float(v[kv + c]);
    }
    const float p = expf(s * scale - lse_t), ds = p * (dp - dsum) * scale;
    for (int c = 0; c < d; ++c) acc[c] += ds * to_float(k[kv + c]);
  }
  for (int c = 0; c < d; ++c) dq[row + c] = to_bf16(acc[c]);
}

// dK and dV rows of (key j, kv head g): sums over the group's query heads and the queries at or
// after j in j's sample.
__global__ void small_attention_dkv_kernel(bf16* __restrict__ dk, bf16* __restrict__ dv, const bf16* __restrict__ dout,
                                           const bf16* __restrict__ q, const bf16* __restrict__ k,
                                           const bf16* __restrict__ v, const float* __restrict__ lse,
                                           const float* __restrict__ dvec, const std::int32_t* __restrict__ cu,
                                           int num_seqs, int tokens, int heads, int kv_heads, int d, float scale) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= tokens * kv_heads) return;
  const int j = idx / kv_heads, g = idx % kv_heads, group = heads / kv_heads;
  int start, end;
  sample_of(cu, num_seqs, j, start, end);
  const long long kv = (static_cast<long long>(j) * kv_heads + g) * d;
  float dk_acc[kSmallMaxHeadDim], dv_acc[kSmallMaxHeadDim];
  for (int c = 0; c < d; ++c) dk_acc[c] = dv_acc[c] = 0.0f;
  for (int h = g * group; h < (g + 1) * group; ++h)
    for (int t = j; t < end; ++t) {
      const long long row = (static_cast<long long>(t) * heads + h) * d;
      float s = 0.0f, dp = 0.0f;
      for (int c = 0; c < d; ++c) {
        s += to_float(q[row + c]) * to_float(k[kv + c]);
        dp += to_float(dout[row + c]) * to_float(v[kv + c]);
      }
      const float p = expf(s * scale - lse[static_cast<long long>(h) * tokens + t]);
      const float ds = p * (dp - dvec[static_cast<long long>(h) * tokens + t]) * scale;
      for (int c = 0; c < d; ++c) {
        dv_acc[c] += p * to_float(dout[row + c]);
        dk_acc[c] += ds * to_float(q[row + c]);
      }
    }
  for (int c = 0; c < d; ++c) {
    dk[kv + c] = to_bf16(dk_acc[c]);
    dv[kv + c] = to_bf16(dv_acc[c]);
  }
}


inline void check_small(AttentionDims d, const char* who) {
  if (d.head_dim <= 0 || d.head_dim > kSmallMaxHeadDim || d.kv_heads <= 0 || d.heads % d.kv_heads != 0)
    throw Error(std::string(who) + ": head_dim " + std::to_string(d.head_dim) + " (at most " +
                std::to_string(kSmallMaxHeadDim) + "), heads " + std::to_string(d.heads) + ", kv_heads " +
                std::to_string(d.kv_heads));
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// Same contract as attention_forward; the backward needs `heads * tokens` floats of scratch (D).
inline void small_attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, AttentionDims d,
                                    VarlenBatch b, cudaStream_t stream) {
  detail::check_small(d, "small_attention_forward");
  const int n = b.tokens * d.heads;
  if (n == 0) return;
  detail::small_attention_forward_kernel<<<(n + 127) / 128, 128, 0, stream>>>(
      out, lse, q, k, v, b.cu_seqlens, b.num_seqs, b.tokens, d.heads, d.kv_heads, d.head_dim,
      1.0f / sqrtf(static_cast<float>(d.head_dim)));
  PEFT_CUDA_CHECK_LAUNCH("small_attention_forward_kernel");
}

inline void small_attention_backward(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* out,
                                     const bf16* q, const bf16* k, const bf16* v, const float* lse, AttentionDims d,
                                     VarlenBatch b, cudaStream_t stream) {
  detail::check_small(d, "small_attention_backward");
  const int nq = b.tokens * d.heads, nk = b.tokens * d.kv_heads;
  if (nq == 0) return;
  const float scale = 1.0f / sqrtf(static_cast<float>(d.head_dim));
  detail::small_attention_dq_kernel<<<(nq + 127) / 128, 128, 0, stream>>>(
      dq, scratch, dout, out, q, k, v, lse, b.cu_seqlens, b.num_seqs, b.tokens, d.heads, d.kv_heads, d.head_dim, scale);
  PEFT_CUDA_CHECK_LAUNCH("small_attention_dq_kernel");
  detail::small_attention_dkv_kernel<<<(nk + 127) / 128, 128, 0, stream>>>(
      dk, dv, dout, q, k, v, lse, scratch, b.cu_seqlens, b.num_seqs, b.tokens, d.heads, d.kv_heads, d.head_dim, scale);
  PEFT_CUDA_CHECK_LAUNCH("small_attention_dkv_kernel");
}


}  // namespace peft::cuda
