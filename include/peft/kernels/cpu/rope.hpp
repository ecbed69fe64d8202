// Rotary position embedding, HF's "rotate_half" layout: feature i pairs with i + d/2, and the
// angle of pair i at position p is p * theta^(-2i/d), computed in fp32 as transformers does.
// Positions come per token, so packed samples each start again at 0.
#pragma once
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "peft/core/tensor.hpp"

namespace peft::cpu {

struct RopeTable {
  Matrix cos, sin;  // [tokens, d/2]
};

inline RopeTable rope_table(std::span<const std::int32_t> positions, int head_dim, double theta) {
  const int half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i)
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / static_cast<float>(head_dim));
  RopeTable r{Matrix(positions.size(), half), Matrix(positions.size(), half)};
  for (std::size_t t = 0; t < positions.size(); ++t)
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      r.cos(t, i) = std::cos(angle);
      r.sin(t, i) = std::sin(angle);
    }
  return r;
}

// In place on x [tokens, heads * head_dim]. inverse = true applies the transpose rotation,
// which is the backward of the forward rotation (a rotation's inverse is its transpose).
inline void apply_rope(Matrix& x, int heads, int head_dim, const RopeTable& r, bool inverse = false) {
  const int half = head_dim / 2;
  const float sign = inverse ? -1.0f : 1.0f;
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (int h = 0; h < heads; ++h) {
      float* v = x.row(t).data() + static_cast<std::ptrdiff_t>(h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float c = r.cos(t, i), s = sign * r.sin(t, i);
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
}

}  // namespace peft::cpu
