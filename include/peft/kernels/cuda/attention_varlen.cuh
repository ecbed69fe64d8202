// The shapes every attention kernel shares: heads and head size, and the packed variable-length
// micro-batch (cu_seqlens), apart so that the fast kernels (attention_mma.cuh), the small-shape
// fallback (attention_small.cuh) and their entry point (attention.cuh) include one definition.
#pragma once
#include <cstddef>
#include <cstdint>

namespace peft::cuda {

struct AttentionDims {
  int heads, kv_heads, head_dim;
};

// The packed micro-batch: cu_seqlens on the device ([num_seqs + 1] int32, from 0 to tokens: every
// token belongs to a sample), and on the host its sample count, longest sample and total tokens
// (they size the grid).
struct VarlenBatch {
  const std::int32_t* cu_seqlens;
  int num_seqs, max_seqlen, tokens;
};

// fp32 scratch the backward needs: dQ accumulator, per-query-head dK and dV partials, D. cuDNN's
// backward (attention_cudnn.cuh) takes it as its workspace, whose pieces are the same four but
// aligned: the margin is their padding.
inline constexpr std::size_t kAttentionScratchMarginFloats = 1 << 16;
inline std::size_t attention_backward_scratch_floats(int tokens, AttentionDims d) {
  const std::size_t nq = static_cast<std::size_t>(tokens) * d.heads * d.head_dim;
  return 3 * nq + static_cast<std::size_t>(d.heads) * tokens + kAttentionScratchMarginFloats;
}

}  // namespace peft::cuda
