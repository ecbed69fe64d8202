// Token-weighted mean cross entropy of a model over a dataset, in packed batches of `batch_size`
// samples (HF's eval loss with --per_device_eval_batch_size), and the label tokens its argmax
// predicts where the model counts them (ms-swift's eval_token_acc). Shared by the trainer's eval_loss
// and the retention hook, so both measure the same way.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "peft/data/packed_batch.hpp"
#include "peft/train/step_batches.hpp"

namespace peft {

// A model that sizes its buffers per call (the CUDA model's max_packed_tokens) gets as many
// batches a call as fit that size, as the trainer's steps do (assemble_step_batches): the sums are
// the same up to their order, and each call reads the frozen weights once instead of once a batch.
template <class Model>
auto evaluate_loss(Model& model, const std::vector<Sample>& data, std::int64_t batch_size) {
  decltype(model.evaluate(PackedBatch{})) total{};
  std::int64_t hits = 0;
  bool counted = !data.empty();  // argmax hits are known only if every call counted them
  std::size_t cap = 0;           // 0: one call a batch
  if constexpr (requires { model.max_packed_tokens(); }) cap = model.max_packed_tokens();
  std::vector<std::size_t> order(data.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  const auto bs = static_cast<std::size_t>(std::max<std::int64_t>(1, batch_size));
  for (const PackedBatch& b : assemble_step_batches(data, order, 0, data.size(), bs, 1, 0, cap).calls) {
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
