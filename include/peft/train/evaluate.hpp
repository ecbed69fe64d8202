// Token-weighted mean cross entropy of a model over a dataset, in packed batches of `batch_size`
// samples (HF's eval loss with --per_device_eval_batch_size), and the label tokens its argmax
// predicts where the model counts them (ms-swift's eval_token_acc). Shared by the trainer's eval_loss
// and the retention hook, so both measure the same way.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "peft/data/packed_batch.hpp"

namespace peft {

template <class Model>
auto evaluate_loss(Model& model, const std::vector<Sample>& data, std::int64_t batch_size) {
  decltype(model.evaluate(PackedBatch{})) total{};
  std::int64_t hits = 0;
  bool counted = !data.empty();  // argmax hits are known only if every batch counted them
  const auto bs = static_cast<std::size_t>(std::max<std::int64_t>(1, batch_size));
  for (std::size_t i = 0; i < data.size(); i += bs) {
    PackedBatch b;
    for (std::size_t j = i; j < std::min(data.size(), i + bs); ++j) b.add(data[j]);
    const auto r = model.evaluate(b);
    total.sum += r.sum;
    total.tokens += r.tokens;
    if constexpr (requires { r.correct; }) {
      counted = counted && r.correct >= 0;
      hits += counted ? r.correct : 0;
    }
  }
  if constexpr (requires { total.correct; }) total.correct = counted ? hits : -1;
  return total;
}

}  // namespace peft
