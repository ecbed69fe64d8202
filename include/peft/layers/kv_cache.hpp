// The CPU backend's key/value cache for generation: per decoder layer, the post-RoPE keys and the
// values of every token seen so far, [tokens, kv_heads * head_dim] row-major like every other
// activation. Keys are cached after RoPE (as HF's DynamicCache does), so a new token only rotates
// its own q and k and never touches the past.
//
// The contract a model's cache offers the generator (a CUDA model's cache keeps its rows in device
// memory but has the same three members): length() tokens cached, truncate(n) to drop everything
// after the first n (the chat reuses a shared prompt prefix that way), and reserve(n) as a hint.
// Storage grows by doubling, so a long chat costs amortised O(1) copies per token.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/tensor.hpp"

namespace peft {

struct LayerKvCache {
  Matrix k, v;  // [capacity, kv_heads * head_dim]; rows [0, length) are valid

  // Appends n rows of k and v and returns how many rows are valid afterwards.
  Eigen::Index append(const Matrix& k_new, const Matrix& v_new, Eigen::Index length) {
    const Eigen::Index need = length + k_new.rows();
    if (need > k.rows()) {
      const Eigen::Index cap = std::max<Eigen::Index>(need, 2 * k.rows());
      k.conservativeResize(cap, k_new.cols());
      v.conservativeResize(cap, v_new.cols());
    }
    k.middleRows(length, k_new.rows()) = k_new;
    v.middleRows(length, v_new.rows()) = v_new;
    return need;
  }
};

class KvCache {
 public:
  KvCache(std::int64_t layers, std::int64_t kv_width) : layers_(static_cast<std::size_t>(layers)), width_(kv_width) {}

  std::int64_t length() const { return length_; }
  void truncate(std::int64_t n) {
    require(n >= 0 && n <= length_, "KvCache::truncate({}) outside the {} cached tokens", n, length_);
    length_ = n;
  }
  void clear() { length_ = 0; }
  void reserve(std::int64_t tokens) {
    for (auto& l : layers_)
      if (l.k.rows() < tokens) {
        l.k.conservativeResize(tokens, width_);
        l.v.conservativeResize(tokens, width_);
      }
  }

  // For the model: layer i's storage, and the new length once every layer has appended.
  LayerKvCache& layer(std::size_t i) { return layers_[i]; }
  void advance(std::int64_t n) { length_ += n; }

 private:
  std::vector<LayerKvCache> layers_;
  std::int64_t width_;
  std::int64_t length_ = 0;
};

}  // namespace peft
