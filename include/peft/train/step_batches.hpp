// The first of the trainer's three jobs: which samples one optimizer step trains on, and how this
// rank feeds them to the model. HF Trainer's order: an epoch is a permutation of the samples
// (file order, or a shuffle seeded by (seed, epoch), so any epoch's order is recomputed on resume
// without replaying earlier ones); a step takes gradient_accumulation_steps x world micro-batches
// of per_device_train_batch_size samples (the epoch's last step takes what is left); rank r takes
// micro-batches r, r+W, ...; every rank counts the label tokens of the whole step, since the loss
// is normalised by that global count. This rank's micro-batches are packed into as few
// forward/backward calls as `pack_cap` tokens allow (0: one call each), which changes no update.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "peft/core/rng.hpp"
#include "peft/data/packed_batch.hpp"

namespace peft {

inline std::vector<std::size_t> epoch_order(std::size_t n, std::int64_t epoch, std::uint64_t seed, bool shuffle) {
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (shuffle) {
    Rng rng(seed * 1000003ULL + static_cast<std::uint64_t>(epoch));
    rng.shuffle(order.begin(), order.end());
  }
  return order;
}

struct StepBatches {
  std::vector<PackedBatch> calls;  // this rank's forward/backward calls
  std::int64_t label_tokens = 0;   // of the whole step, all ranks
  std::int64_t tokens = 0;         // the same
};

// Samples order[first, last) in micro-batches of `batch_size`; this rank's go into `calls`.
inline StepBatches assemble_step_batches(const std::vector<Sample>& data, const std::vector<std::size_t>& order,
                                         std::size_t first, std::size_t last, std::size_t batch_size, int world,
                                         int rank, std::size_t pack_cap) {
  StepBatches out;
  std::size_t mb = 0;
  for (std::size_t i = first; i < last; i += batch_size, ++mb) {
    const std::size_t end = std::min(last, i + batch_size);
    if (static_cast<int>(mb % static_cast<std::size_t>(world)) != rank) {  // another rank's: count only
      for (std::size_t j = i; j < end; ++j) {
        out.label_tokens += static_cast<std::int64_t>(data[order[j]].label_tokens());
        out.tokens += static_cast<std::int64_t>(data[order[j]].size());
      }
      continue;
    }
    std::size_t mb_tokens = 0;
    for (std::size_t j = i; j < end; ++j) mb_tokens += data[order[j]].size();
    if (out.calls.empty() || out.calls.back().tokens() + mb_tokens > pack_cap) out.calls.emplace_back();
    PackedBatch& b = out.calls.back();
    const std::int64_t before = b.label_tokens;
    for (std::size_t j = i; j < end; ++j) b.add(data[order[j]]);
    out.label_tokens += b.label_tokens - before;
    out.tokens += static_cast<std::int64_t>(mb_tokens);
  }
  return out;
}

// The most tokens one forward/backward call of a run holds, for a model that sizes its buffers
// for it (the CUDA model's max_tokens): a micro-batch of `batch` samples no longer than the
// longest the data has (capped at max_length), or, with accumulation packing on (pack_tokens -1
// or > 0), up to gradient_accumulation_steps of them joined into one call, but never more tokens
// than `batch` samples of max_length take. That last size is the one the GPU's activation policy
// is chosen for (examples/sft/cuda_activations.cuh), so packing costs no memory the run's
// settings had not already allowed, and a step of short samples (the recipe's 16 identity rows
// of ~40 tokens) becomes one call that reads the weights once instead of 16 calls.
inline std::int64_t packed_call_tokens(std::int64_t max_length, std::int64_t longest_sample, std::int64_t batch,
                                       std::int64_t gradient_accumulation_steps, std::int64_t pack_tokens) {
  batch = std::max<std::int64_t>(batch, 1);
  const std::int64_t call = std::min(max_length, std::max<std::int64_t>(longest_sample, 1)) * batch;
  if (pack_tokens == 0 || gradient_accumulation_steps <= 1) return call;
  std::int64_t pack = std::min(call * gradient_accumulation_steps, max_length * batch);
  if (pack_tokens > 0) pack = std::min(pack, pack_tokens);
  return std::max(call, pack);
}

}  // namespace peft
