// CudaModelOptions: the CUDA model's run-time sizes and placements (models/cuda/qwen2.cuh takes
// them), where the token embedding lives, and the shapes the kernels take. Plain C++ (no CUDA headers), so the programs can
// fill them and the placement rule is unit-tested without a GPU (tests/test_memory_budget.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include "peft/core/error.hpp"
#include "peft/io/model_config.hpp"
#include "peft/layers/lora_kernels.hpp"

namespace peft {

// Where the token embedding lives. automatic: in pinned host memory when that is valid (frozen
// and untied: the forward only gathers T rows, the backward never touches it), else on the device.
// A tied embedding is lm_head's GEMM operand every step and a trained one is updated every step:
// both stay on the device, and asking for host then is an error. Measured on the H200: +0.3% of
// the 7B's bf16 keep-all step (bench/RESULTS.md), so automatic does not depend on the precision.
enum class EmbeddingHome { automatic, device, host };

// Run-time sizes of the CUDA model's plan.
struct CudaModelOptions {
  int max_tokens = 4096;       // tokens per micro-batch (the packed batch); sizes every activation
  int logits_chunk_rows = 512;  // rows of vocabulary-wide bf16 logits alive at once
  std::size_t extra_bytes = 16u << 20;  // slack beyond the plan (which counts the optimizer state too)
  int device = 0;
  bool graphs = true;  // replay a captured CUDA graph for a step shape seen before
  EmbeddingHome embedding = EmbeddingHome::automatic;
  // The LoRA branch's kernels (layers/cuda/linear.cuh): the default is the fastest measured; the
  // others stay selectable for the benchmark's A/B (bench/train_bench --lora-kernels).
  cuda::LoraKernels lora_kernels = cuda::LoraKernels::kFused;
  // A training step's adapter passes on a second stream beside the base GEMMs (fused kernels only;
  // kernels/cuda/side_stream.cuh); false keeps one stream (bench/train_bench --side-stream=0).
  bool lora_side_stream = true;
  // Under CudaSelective / CudaRecompute, how many layers, from the first, rebuild what the policy
  // does not keep; the layers above them keep all their activations (Megatron-SWIFT's
  // --recompute_num_layers with --recompute_method block). -1: every layer. Ignored by Cuda.
  int recompute_num_layers = -1;
};

// Whether `home` puts an embedding that is (or is not) trained / tied in host memory.
inline bool embedding_in_host_memory(EmbeddingHome home, bool trained, bool tied) {
  const bool valid = !trained && !tied;
  if (home == EmbeddingHome::host)
    require(valid, "CudaModelOptions::embedding = host needs a frozen, untied embedding; this one is {}",
            trained ? "trained (--train_type full)" : "tied to lm_head (tie_word_embeddings)");
  return valid && home != EmbeddingHome::device;
}

// The shapes the CUDA kernels take: 16-byte rows (multiples of 8 bf16) for cuBLASLt and the
// vectorised kernels, and a head_dim the attention kernels tile (even, at most 128).
inline void check_cuda_model_shapes(const ModelConfig& cfg) {
  auto mult8 = [&](std::int64_t v, const char* field) {
    require(v % 8 == 0, "the CUDA backend needs {} to be a multiple of 8 (config has {})", field, v);
  };
  mult8(cfg.hidden_size, "hidden_size");
  mult8(cfg.intermediate_size, "intermediate_size");
  mult8(cfg.num_key_value_heads * cfg.head_dim, "num_key_value_heads * head_dim");
  require(cfg.head_dim % 2 == 0 && cfg.head_dim <= 128, "the CUDA backend needs an even head_dim <= 128 (got {})",
          cfg.head_dim);
}

}  // namespace peft
