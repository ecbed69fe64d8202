// Token embedding lookup: x[t] = W[ids[t]], a bf16 row copy. Under LoRA the embedding is frozen
// and has no backward at all; only full fine-tuning calls embedding_backward, which adds each
// token's gradient row into the fp32 master gradient with atomics (a token may repeat).
//
// Token ids are validated on the host, where the batch is built and where an error can name the
// position (validate_token_ids); the kernel still never reads outside W: an out-of-range id
// yields a NaN row, so a skipped validation shows up in the loss instead of as a fault.
// W may be pinned host memory mapped into the device (a frozen untied embedding, host_mapped.cuh):
// the forward then reads its T rows over PCIe, 14.7 MB for 2048 tokens of a 7B.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::cuda {
namespace detail {

__global__ void embedding_forward_kernel(bf16* __restrict__ x, const std::int32_t* __restrict__ ids,
                                         const bf16* __restrict__ w, int tokens, int vocab, int hidden) {
  const int packs = hidden / 8;
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<long long>(tokens) * packs) return;
  const long long t = idx / packs;
  const int c = static_cast<int>(idx % packs) * 8;
  const std::int32_t id = ids[t];
  Bf16x8 row;
  if (id >= 0 && id < vocab) {
    row = load128(w + static_cast<long long>(id) * hidden + c);
  } else {
    for (int i = 0; i < 8; ++i) row[i] = __float2bfloat16_rn(__int_as_float(0x7fc00000));
  }
  store128(x + t * hidden + c, row);
}

__global__ void embedding_backward_kernel(float* __restrict__ dw, const std::int32_t* __restrict__ ids,
                                          const bf16* __restrict__ dx, int tokens, int vocab, int hidden) {
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<long long>(tokens) * hidden) return;
  const long long t = idx / hidden;
  const int c = static_cast<int>(idx % hidden);
  const std::int32_t id = ids[t];
  if (id >= 0 && id < vocab) atomicAdd(&dw[static_cast<long long>(id) * hidden + c], to_float(dx[idx]));
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

inline void validate_token_ids(std::span<const std::int32_t> ids, int vocab) {
  for (std::size_t t = 0; t < ids.size(); ++t)
    if (ids[t] < 0 || ids[t] >= vocab)
      throw Error("token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                  " is outside the vocabulary (size " + std::to_string(vocab) + ")");
}

// x: [tokens, hidden] bf16; ids: [tokens] int32 on the device; w: [vocab, hidden] bf16.
inline void embedding_forward(bf16* x, const std::int32_t* ids, const bf16* w, int tokens, int vocab, int hidden,
                              cudaStream_t stream) {
  if (hidden % 8 != 0) throw Error("embedding_forward: hidden size " + std::to_string(hidden) + " is not a multiple of 8");
  const long long n = static_cast<long long>(tokens) * (hidden / 8);
  if (n == 0) return;
  detail::embedding_forward_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(x, ids, w, tokens, vocab,
                                                                                              hidden);
  PEFT_CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

// dw[ids[t]] += dx[t] (fp32 master gradient; full fine-tuning only).
inline void embedding_backward(float* dw, const std::int32_t* ids, const bf16* dx, int tokens, int vocab, int hidden,
                               cudaStream_t stream) {
  const long long n = static_cast<long long>(tokens) * hidden;
  if (n == 0) return;
  detail::embedding_backward_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(dw, ids, dx, tokens,
                                                                                               vocab, hidden);
  PEFT_CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}

}  // namespace peft::cuda
