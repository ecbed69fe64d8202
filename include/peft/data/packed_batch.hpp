// Padding-free packing: a micro-batch is its samples laid back to back. Each keeps its own
// positions (0..len-1) and attention boundary (cu_seqlens), and HF's label shift happens inside
// each sample, so a packed batch computes exactly what HF computes on the right-padded batch,
// without the padding.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/data/sample.hpp"

namespace peft {

struct PackedBatch {
  std::vector<std::int32_t> input_ids;
  std::vector<std::int32_t> positions;
  std::vector<std::int64_t> cu_seqlens{0};
  std::vector<std::int32_t> targets;  // targets[t] = labels[t + 1] of the same sample, else -100
  std::int64_t label_tokens = 0;

  std::size_t tokens() const { return input_ids.size(); }
  std::size_t samples() const { return cu_seqlens.size() - 1; }

  void add(const Sample& s) {
    require(s.labels.size() == s.input_ids.size(), "sample has {} input ids but {} labels", s.input_ids.size(),
            s.labels.size());
    require(!s.input_ids.empty(), "empty sample in a batch");
    for (std::size_t t = 0; t < s.size(); ++t) {
      input_ids.push_back(s.input_ids[t]);
      positions.push_back(static_cast<std::int32_t>(t));
      const std::int32_t target = t + 1 < s.size() ? s.labels[t + 1] : kIgnoreIndex;
      targets.push_back(target);
      label_tokens += target != kIgnoreIndex;
    }
    cu_seqlens.push_back(static_cast<std::int64_t>(input_ids.size()));
  }

  static PackedBatch of(std::span<const Sample* const> samples) {
    PackedBatch b;
    for (const Sample* s : samples) b.add(*s);
    return b;
  }
  static PackedBatch of(const Sample& s) {
    PackedBatch b;
    b.add(s);
    return b;
  }
};

}  // namespace peft
