// Greedy decoding's choice made on the device: argmax of the fp32 logits row (ties to the lowest
// id, as torch.argmax and peft::argmax), written where the next decode step reads its token, with
// the cache length advanced by one.
//
// The captured decode step folds this argmax into its lm_head launch (gemv.cuh, through
// greedy_commit); the kernel here picks the first new token after a prefill and serves the
// cuBLASLt comparison step.
//
// Why on the device: then the decode step needs nothing from the host. A captured step graph is
// launched N times back to back and the host reads the N ids once at the end, so the GPU never
// idles waiting for a logits copy, a host argmax and the next launch.
//
// state (device int32): [0] tokens in the cache (the next token's position), [1] the next token's
// id, [2] how many ids have been written to out_ids.
#pragma once
#include <cstdint>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/pdl.cuh"

namespace peft::cuda {

struct DecodeState {
  enum : int { kLength = 0, kToken = 1, kWritten = 2, kSlots = 4 };
};

namespace detail {

constexpr int kArgmaxThreads = 1024;

__device__ inline bool argmax_better(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi) || (bv != bv && v == v);  // NaN never wins
}

// The chosen id becomes the next token (one thread; gemv.cuh's fused lm_head argmax calls it too).
__device__ inline void greedy_commit(int id, int vocab, std::int32_t* state, std::int32_t* out_ids, int out_capacity) {
  if (id >= vocab) id = 0;  // every logit NaN: a valid id all the same
  const int written = state[DecodeState::kWritten];
  if (out_ids && written < out_capacity) out_ids[written] = id;
  state[DecodeState::kWritten] = written + 1;
  state[DecodeState::kToken] = id;
  state[DecodeState::kLength] += 1;
}

__global__ void __launch_bounds__(kArgmaxThreads) greedy_advance_kernel(const float* __restrict__ logits, int vocab,
                                                                        std::int32_t* state,
                                                                        std::int32_t* __restrict__ out_ids,
                                                                        int out_capacity) {
  __shared__ float sv[kArgmaxThreads / 32];
  __shared__ int si[kArgmaxThreads / 32];
  pdl_wait();
  pdl_release();
  float bv = -INFINITY;
  int bi = vocab;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x)
    if (argmax_better(logits[i], i, bv, bi)) {
      bv = logits[i];
      bi = i;
    }
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, off);
    if (argmax_better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  if (threadIdx.x % 32 == 0) {
    sv[threadIdx.x / 32] = bv;
    si[threadIdx.x / 32] = bi;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kArgmaxThreads / 32; ++w)
    if (argmax_better(sv[w], si[w], bv, bi)) {
      bv = sv[w];
      bi = si[w];
    }
  greedy_commit(bi, vocab, state, out_ids, out_capacity);
}

}  // namespace detail

// out_ids may be null (the step's logits go to the host instead).
inline void greedy_advance(const float* logits, int vocab, std::int32_t* state, std::int32_t* out_ids,
                           int out_capacity, cudaStream_t stream) {
  launch_pdl("greedy_advance_kernel", detail::greedy_advance_kernel, dim3(1), dim3(detail::kArgmaxThreads), 0, stream,
             logits, vocab, state, out_ids, out_capacity);
}

}  // namespace peft::cuda
