// A packed micro-batch's way onto the GPU: checked on the host (each error names the position or
// sample), written into pinned memory, copied to the model's planned device tables. The step's
// only host-to-device traffic; everything else the step needs is already on the device, so a
// captured CUDA graph can replay it (models/cuda/qwen2.cuh).
#pragma once
#include <algorithm>
#include <cstdint>

#include "peft/core/error.hpp"
#include "peft/data/packed_batch.hpp"
#include "peft/kernels/cuda/attention_varlen.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/embedding.cuh"

namespace peft::cuda {

// The model's device tables, each planned for max_tokens (cu_seqlens: max_tokens + 1).
struct DeviceBatchTables {
  std::int32_t *ids = nullptr, *positions = nullptr, *cu_seqlens = nullptr, *label_rows = nullptr,
               *targets = nullptr;
};

struct UploadedBatch {
  int tokens = 0;
  int labels = 0;     // rows with a target (their indices in label_rows, targets beside)
  VarlenBatch batch;  // the attention kernels' view of the samples
};

// pinned: room for 5 * max_tokens + 1 int32 values. Asynchronous on `stream`; the pinned slots
// must not be rewritten until the stream has passed the copies.
inline UploadedBatch upload_packed_batch(const PackedBatch& b, int max_tokens, int vocab, std::int32_t* pinned,
                                         const DeviceBatchTables& d, cudaStream_t stream) {
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
  int max_len = 0;
  const int seqs = static_cast<int>(b.cu_seqlens.size()) - 1;
  for (int s = 0; s <= seqs; ++s) {
    cu[s] = static_cast<std::int32_t>(b.cu_seqlens[static_cast<std::size_t>(s)]);
    if (s > 0) {
      require(cu[s] > cu[s - 1], "batch: sample {} is empty", s - 1);
      max_len = std::max(max_len, cu[s] - cu[s - 1]);
    }
  }
  int labels = 0;
  for (int t = 0; t < T; ++t) {
    const std::int32_t target = b.targets[static_cast<std::size_t>(t)];
    if (target == kIgnoreIndex) continue;
    require(target >= 0 && target < vocab, "label {} at position {} is outside the vocabulary (size {})", target, t,
            vocab);
    rows[labels] = t;
    tg[labels++] = target;
  }
  PEFT_CUDA_CHECK(cudaMemcpyAsync(d.ids, ids, T * 4, cudaMemcpyHostToDevice, stream));
  PEFT_CUDA_CHECK(cudaMemcpyAsync(d.positions, pos, T * 4, cudaMemcpyHostToDevice, stream));
  PEFT_CUDA_CHECK(cudaMemcpyAsync(d.cu_seqlens, cu, (seqs + 1) * 4, cudaMemcpyHostToDevice, stream));
  if (labels > 0) {
    PEFT_CUDA_CHECK(cudaMemcpyAsync(d.label_rows, rows, labels * 4, cudaMemcpyHostToDevice, stream));
    PEFT_CUDA_CHECK(cudaMemcpyAsync(d.targets, tg, labels * 4, cudaMemcpyHostToDevice, stream));
  }
  return {T, labels, {d.cu_seqlens, seqs, max_len, T}};
}

}  // namespace peft::cuda
