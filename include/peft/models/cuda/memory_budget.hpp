// Will the run fit the GPU? The CUDA model's arena plan (qwen2_cuda.cuh's planned_memory: the same
// plan() that lays the arena out, run as a count) split into what it holds, and the choice between
// keeping every layer's activations and recomputing them, made before anything is allocated.
// Plain C++ (no CUDA headers) so the arithmetic and the decision are unit-tested on machines without
// a GPU (tests/test_memory_budget.cpp); the programs feed it cudaMemGetInfo's free bytes.
//
// Why decide up front: a 24 GB card (RTX 3090 / 4090) holds the 7B's 15.2 GB of bf16 weights plus
// either the recompute plan (~1.3 GB of activations at 2048 tokens) or the keep-all plan (~7 GB),
// next to the CUDA context and whatever else runs there. Finding out by a failed cudaMalloc
// half-way through set-up wastes the checkpoint load and says nothing about what would fit.
#pragma once
#include <cstddef>
#include <cstdio>
#include <string>

#include "peft/core/error.hpp"

namespace peft::cuda {

struct PlannedMemory {
  std::size_t weights = 0;      // frozen weights (bf16; projections in NF4 under Nf4Base), LoRA masters and copies
  std::size_t activations = 0;  // what the forward keeps for the backward, residual stream included
  std::size_t optimizer = 0;    // LoRA gradients and AdamW moments
  std::size_t workspace = 0;    // per-step scratch (NF4: + one dequantised projection), logits chunk, batch
                                // tables, cuBLASLt, optimizer lists
  std::size_t host_embedding = 0;  // a frozen untied embedding in pinned host memory: not device memory
  std::size_t total() const { return weights + activations + optimizer + workspace; }  // device bytes
};

// Device memory a run needs beyond its arena (cuBLASLt's handle, captured graphs, stream and
// event pools): kept free when deciding whether a plan fits.
inline constexpr std::size_t kUnplannedReserve = std::size_t{512} << 20;

inline std::string gb(std::size_t bytes) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GB", static_cast<double>(bytes) / 1e9);
  return s;
}

// "16.71 GB (weights 15.27 GB, activations 0.65 GB, optimizer state 0.16 GB, workspace 0.63 GB)", and
// "; embedding: host (pinned) 1.09 GB" after it when the embedding lives in host memory.
inline std::string describe(const PlannedMemory& p) {
  return gb(p.total()) + " (weights " + gb(p.weights) + ", activations " + gb(p.activations) + ", optimizer state " +
         gb(p.optimizer) + ", workspace " + gb(p.workspace) + ")" +
         (p.host_embedding ? "; embedding: host (pinned) " + gb(p.host_embedding) : std::string());
}

inline bool fits(const PlannedMemory& p, std::size_t free_bytes) { return p.total() + kUnplannedReserve <= free_bytes; }

struct ActivationChoice {
  bool recompute = true;
  std::string note;  // printed before training: the plan chosen and, if switched, why
};

// gradient_checkpointing (ms-swift's flag, default true) asks for recompute; false asks to keep
// every layer's activations, which falls back to recompute when the keep plan does not fit the
// free memory. Throws, with the numbers, when the chosen plan cannot fit at all.
inline ActivationChoice choose_activations(bool gradient_checkpointing, const PlannedMemory& keep,
                                           const PlannedMemory& recompute, std::size_t free_bytes) {
  const std::string free_s = gb(free_bytes) + " free on the GPU (" + gb(kUnplannedReserve) + " of it kept for cuBLAS and graphs)";
  const auto too_big = [&](const std::string& what, const PlannedMemory& p) {
    return Error("the run does not fit the GPU: " + what + " plans " + describe(p) + " but there is " +
                 free_s + "; lower --max_length or --per_device_train_batch_size / --per_device_eval_batch_size, "
                 "or use a GPU with more memory");
  };
  ActivationChoice c;
  if (gradient_checkpointing) {
    if (!fits(recompute, free_bytes)) throw too_big("--gradient_checkpointing true (recompute)", recompute);
    c.recompute = true;
    c.note = "[memory] --gradient_checkpointing true: recompute each layer in the backward; planned peak " +
             describe(recompute) + ", " + gb(free_bytes) + " free";
    return c;
  }
  if (fits(keep, free_bytes)) {
    c.recompute = false;
    c.note = "[memory] --gradient_checkpointing false: keep every layer's activations; planned peak " + describe(keep) +
             ", " + gb(free_bytes) + " free";
    return c;
  }
  if (!fits(recompute, free_bytes))
    throw too_big("keeping every layer's activations plans " + gb(keep.total()) + ", and even recompute", recompute);
  c.recompute = true;
  c.note = "[memory] --gradient_checkpointing false plans " + describe(keep) + " but there is " + free_s +
           ": switching to recompute (gradient checkpointing), planned peak " + describe(recompute);
  return c;
}

}  // namespace peft::cuda
