// cuda::LoraKernels, the CUDA LoRA branch's kernel choice (layers/cuda/linear.cuh runs it), in plain
// C++ so that CudaModelOptions (models/cuda/model_options.hpp) can carry it without CUDA headers.
#pragma once

namespace peft::cuda {

// The LoRA branch's kernels, kept selectable so the benchmark can measure one against another in
// one run (CudaModelOptions::lora_kernels; bench/RESULTS.md has the numbers):
//   kSeparate   y = x W^T + b, then y += s xa B^T (y written, read and rewritten); dropout writes
//               the dropped input to a [T, in] buffer that the GEMMs read (forward and backward)
//   kReordered  y = s xa B^T first, then the base GEMM adds x W^T + b onto it (beta = 1, bias in
//               its epilogue): no separate read-modify-write of y; dropout as kSeparate
//   kFused      kReordered, and dropout inside the rank-r passes (kernels/cuda/lora_dropout.cuh):
//               no dropout buffer, the backward's dA and masked dx in one pass over x and dx
//               (at padded rank 8, and at 16-64 where both run on tensor cores: fuses_dropout);
//               base first, as kSeparate, where x A^T runs beside the base GEMM on a side stream
//               (CudaModelOptions::lora_side_stream, kernels/cuda/side_stream.cuh)
enum class LoraKernels { kSeparate, kReordered, kFused };

}  // namespace peft::cuda
