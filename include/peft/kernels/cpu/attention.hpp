// Causal grouped-query attention over packed sequences on the CPU: the reference the fused GPU
// kernel is held to. Each sample [cu_seqlens[s], cu_seqlens[s+1]) attends only to itself; query
// head h reads kv head h / (heads / kv_heads), as HF's repeat_kv. The probabilities are kept for
// the backward (the CPU backend trains short sequences; the GPU kernel recomputes them instead).
// attention_forward_cached is the generation-time variant over a KV cache.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "peft/core/tensor.hpp"

namespace peft::cpu {

struct AttentionShape {
  int heads, kv_heads, head_dim;
};

// probs: one [L, L] matrix per (sample, head), sample-major.
inline void attention_forward(const Matrix& q, const Matrix& k, const Matrix& v, AttentionShape s,
                              std::span<const std::int64_t> cu_seqlens, Matrix& out, std::vector<Matrix>& probs) {
  const int d = s.head_dim, group = s.heads / s.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  out.setZero(q.rows(), static_cast<Eigen::Index>(s.heads) * d);
  probs.clear();
  for (std::size_t seg = 0; seg + 1 < cu_seqlens.size(); ++seg) {
    const Eigen::Index t0 = cu_seqlens[seg], len = cu_seqlens[seg + 1] - t0;
    for (int h = 0; h < s.heads; ++h) {
      const int g = h / group;
      Matrix p = (q.block(t0, h * d, len, d) * k.block(t0, g * d, len, d).transpose()) * scale;
      for (Eigen::Index i = 0; i < len; ++i) {
        auto row = p.row(i).head(i + 1);
        const float mx = row.maxCoeff();
        row = (row.array() - mx).exp();
        row /= row.sum();
        p.row(i).tail(len - i - 1).setZero();
      }
      out.block(t0, h * d, len, d) = p * v.block(t0, g * d, len, d);
      probs.push_back(std::move(p));
    }
  }
}

// Incremental (KV-cache) attention for generation: q holds the n newest tokens, k and v every
// cached token [T, kv_heads * d] with the new ones last, so query row i sits at absolute
// position T - n + i and sees keys 0..T - n + i. Same arithmetic as attention_forward (scores
// scaled after the product, max-subtracted softmax), so a prefill equals the full forward pass.
inline void attention_forward_cached(const Matrix& q, Eigen::Ref<const Matrix> k, Eigen::Ref<const Matrix> v,
                                     AttentionShape s, Matrix& out) {
  const int d = s.head_dim, group = s.heads / s.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const Eigen::Index n = q.rows(), total = k.rows(), past = total - n;
  out.setZero(n, static_cast<Eigen::Index>(s.heads) * d);
  Matrix p;
  for (int h = 0; h < s.heads; ++h) {
    const int g = h / group;
    p.noalias() = (q.middleCols(h * d, d) * k.middleCols(g * d, d).transpose()) * scale;
    for (Eigen::Index i = 0; i < n; ++i) {
      const Eigen::Index visible = past + i + 1;
      auto row = p.row(i).head(visible);
      const float mx = row.maxCoeff();
      row = (row.array() - mx).exp();
      row /= row.sum();
      p.row(i).tail(total - visible).setZero();
    }
    out.middleCols(h * d, d).noalias() = p * v.middleCols(g * d, d);
  }
}

// dq, dk, dv are overwritten. Softmax backward: dS = P . (dP - rowsum(dP . P)).
inline void attention_backward(const Matrix& dout, const Matrix& q, const Matrix& k, const Matrix& v,
                               AttentionShape s, std::span<const std::int64_t> cu_seqlens,
                               const std::vector<Matrix>& probs, Matrix& dq, Matrix& dk, Matrix& dv) {
  const int d = s.head_dim, group = s.heads / s.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  dq.setZero(q.rows(), q.cols());
  dk.setZero(k.rows(), k.cols());
  dv.setZero(v.rows(), v.cols());
  std::size_t idx = 0;
  for (std::size_t seg = 0; seg + 1 < cu_seqlens.size(); ++seg) {
    const Eigen::Index t0 = cu_seqlens[seg], len = cu_seqlens[seg + 1] - t0;
    for (int h = 0; h < s.heads; ++h, ++idx) {
      const int g = h / group;
      const Matrix& p = probs[idx];
      const auto dO = dout.block(t0, h * d, len, d);
      dv.block(t0, g * d, len, d).noalias() += p.transpose() * dO;
      Matrix dp = dO * v.block(t0, g * d, len, d).transpose();
      const Eigen::VectorXf rowdot = (dp.array() * p.array()).rowwise().sum();
      Matrix ds = (p.array() * (dp.array().colwise() - rowdot.array())).matrix() * scale;
      dq.block(t0, h * d, len, d).noalias() += ds * k.block(t0, g * d, len, d);
      dk.block(t0, g * d, len, d).noalias() += ds.transpose() * q.block(t0, h * d, len, d);
    }
  }
}

}  // namespace peft::cpu
