// A packed micro-batch's way onto the device for the CUDA model's step: validated on the host,
// where an error can name the position (token ids, labels, sample boundaries), staged in pinned
// memory and copied in asynchronously. Only the labelled rows (and their targets) go up for the
// cross entropy, so a masked prompt costs no vocabulary-wide logits.
#pragma once
#include <algorithm>
#include <cstdint>

#include "peft/core/error.hpp"
#include "peft/data/packed_batch.hpp"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/embedding.cuh"

namespace peft::cuda {

// The model's device arrays for one micro-batch of at most max_tokens tokens.
struct BatchBuffers {
  std::int32_t *ids = nullptr, *positions = nullptr, *cu_seqlens = nullptr, *label_rows = nullptr, *targets = nullptr;
};
struct UploadedBatch {
  int tokens = 0, labels = 0, seqs = 0, max_seqlen = 0;
};
// `pinned` holds 5 * max_tokens + 1 int32 values (the staging area the copies read from).
inline std::size_t batch_pinned_ints(int max_tokens) { return 5 * static_cast<std::size_t>(max_tokens) + 1; }

inline UploadedBatch upload_batch(const PackedBatch& b, int max_tokens, int vocab, std::int32_t* pinned,
                                  const BatchBuffers& d, cudaStream_t stream) {
  const int T = static_cast<int>(b.tokens());
  require(T > 0, "empty batch");
  require(T <= max_tokens,
          "the batch has {} tokens but the CUDA model was planned for at most {} per micro-batch "
          "(CudaModelOptions::max_tokens)", T, max_tokens);
  require(b.positions.size() == b.input_ids.size() && b.targets.size() == b.input_ids.size(),
          "batch: {} ids, {} positions, {} targets", b.input_ids.size(), b.positions.size(), b.targets.size());
  require(b.cu_seqlens.size() >= 2 && b.cu_seqlens.front() == 0 && b.cu_seqlens.back() == T,
          "batch: cu_seqlens must run from 0 to the token count {}", T);
  validate_token_ids(b.input_ids, vocab);
  std::int32_t* ids = pinned;
  std::int32_t* pos = pinned + T;
  std::int32_t* cu = pinned + 2 * T;
  std::int32_t* rows = pinned + 3 * T + 1;
  std::int32_t* tg = rows + T;
  std::copy(b.input_ids.begin(), b.input_ids.end(), ids);
  std::copy(b.positions.begin(), b.positions.end(), pos);
  UploadedBatch u{T, 0, static_cast<int>(b.cu_seqlens.size()) - 1, 0};
  for (int s = 0; s <= u.seqs; ++s) {
    cu[s] = static_cast<std::int32_t>(b.cu_seqlens[static_cast<std::size_t>(s)]);
    if (s > 0) {
      require(cu[s] > cu[s - 1], "batch: sample {} is empty", s - 1);
      u.max_seqlen = std::max(u.max_seqlen, cu[s] - cu[s - 1]);
    }
  }
  for (int t = 0; t < T; ++t) {
    const std::int32_t target = b.targets[static_cast<std::size_t>(t)];
    if (target == kIgnoreIndex) continue;
    require(target >= 0 && target < vocab, "label {} at position {} is outside the vocabulary (size {})", target, t,
            vocab);
    rows[u.labels] = t;
    tg[u.labels++] = target;
  }
  PEFT_CUDA_CHECK(cudaMemcpyAsync(d.ids, ids, T * 4, cudaMemcpyHostToDevice, stream));
  PEFT_CUDA_CHECK(cudaMemcpyAsync(d.positions, pos, T * 4, cudaMemcpyHostToDevice, stream));
  PEFT_CUDA_CHECK(cudaMemcpyAsync(d.cu_seqlens, cu, (u.seqs + 1) * 4, cudaMemcpyHostToDevice, stream));
  if (u.labels > 0) {
    PEFT_CUDA_CHECK(cudaMemcpyAsync(d.label_rows, rows, u.labels * 4, cudaMemcpyHostToDevice, stream));
    PEFT_CUDA_CHECK(cudaMemcpyAsync(d.targets, tg, u.labels * 4, cudaMemcpyHostToDevice, stream));
  }
  return u;
}

}  // namespace peft::cuda
