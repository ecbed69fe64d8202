// An NF4-quantised [rows, cols] weight held on the device: the three arrays of quant/nf4.hpp's
// layout in planned memory, plus the offset (one float, kept on the host and passed to each
// kernel as an argument). A model takes the arrays in its plan (MemoryPlan: counted, then
// allocated, so a QLoRA run's peak is known before it starts), fills each from the CPU quantiser
// as it loads the checkpoint (upload_nf4: one projection is quantised on the host, copied, and
// its host copy freed), and dequantises one at a time into a bf16 scratch before a GEMM
// (dequantize_bf16, or dequantize_rows_bf16 for a tile of rows; kernels/cuda/nf4_dequant.cuh
// says why this order, and what it costs).
#pragma once
#include <cstdint>
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/memory_plan.cuh"
#include "peft/kernels/cuda/nf4_dequant.cuh"
#include "peft/quant/nf4.hpp"

namespace peft::cuda {

struct Nf4DeviceTensor {
  std::int64_t rows = 0, cols = 0;
  std::uint8_t* packed = nullptr;        // ceil(numel / 2) bytes
  std::uint8_t* absmax_code = nullptr;   // one byte per 64 elements
  float* absmax_scale = nullptr;         // one float per 256 blocks
  float offset = 0.0f;                   // set by upload_nf4

  std::int64_t numel() const { return rows * cols; }
  std::int64_t blocks() const { return (numel() + nf4::kBlock - 1) / nf4::kBlock; }
  std::int64_t groups() const { return (blocks() + nf4::kAbsmaxBlock - 1) / nf4::kAbsmaxBlock; }
  nf4::Nf4Data data() const { return {packed, absmax_code, absmax_scale, offset}; }
};

// Takes the tensor's arrays from the plan (null pointers in the counting pass). `what` names
// the tensor in an arena-exhausted error.
inline Nf4DeviceTensor plan_nf4_tensor(MemoryPlan& plan, std::int64_t rows, std::int64_t cols, const char* what) {
  if (rows < 0 || cols < 0)
    throw Error(std::string("plan_nf4_tensor: ") + what + " has a negative shape [" + std::to_string(rows) + ", " +
                std::to_string(cols) + "]");
  Nf4DeviceTensor t;
  t.rows = rows;
  t.cols = cols;
  t.packed = plan.take<std::uint8_t>(static_cast<std::size_t>((t.numel() + 1) / 2), what);
  t.absmax_code = plan.take<std::uint8_t>(static_cast<std::size_t>(t.blocks()), what);
  t.absmax_scale = plan.take<float>(static_cast<std::size_t>(t.groups()), what);
  return t;
}

// Copies a tensor quantised on the host (nf4::quantize of the weight flattened row-major) into
// dst's planned arrays. Synchronous: the host copy may be freed as soon as this returns. `what`
// names the tensor when the sizes disagree.
inline void upload_nf4(Nf4DeviceTensor& dst, const nf4::Nf4Tensor& src, const std::string& what) {
  if (src.numel != dst.numel() || static_cast<std::int64_t>(src.packed.size()) != (dst.numel() + 1) / 2 ||
      src.blocks() != dst.blocks() || static_cast<std::int64_t>(src.absmax_scale.size()) != dst.groups())
    throw Error("upload_nf4: " + what + " was quantised with " + std::to_string(src.numel) +
                " elements, but its device tensor is planned for [" + std::to_string(dst.rows) + ", " +
                std::to_string(dst.cols) + "]");
  if (dst.numel() > 0 && (!dst.packed || !dst.absmax_code || !dst.absmax_scale))
    throw Error("upload_nf4: " + what + " has no device memory (planned in the counting pass only?)");
  PEFT_CUDA_CHECK(cudaMemcpy(dst.packed, src.packed.data(), src.packed.size(), cudaMemcpyHostToDevice));
  PEFT_CUDA_CHECK(cudaMemcpy(dst.absmax_code, src.absmax_code.data(), src.absmax_code.size(), cudaMemcpyHostToDevice));
  PEFT_CUDA_CHECK(cudaMemcpy(dst.absmax_scale, src.absmax_scale.data(), src.absmax_scale.size() * sizeof(float),
                             cudaMemcpyHostToDevice));
  dst.offset = src.offset;
}

// dst[rows, cols] = the weight in bf16 (dst 16-byte aligned).
inline void dequantize_bf16(bf16* dst, const Nf4DeviceTensor& t, cudaStream_t stream) {
  nf4_dequantize_range(dst, t.data(), t.numel(), 0, t.numel(), stream);
}

// dst[row1 - row0, cols] = rows [row0, row1) of the weight in bf16. Fastest when row0 * cols is a
// multiple of 8 (every Qwen projection: cols is a multiple of 64).
inline void dequantize_rows_bf16(bf16* dst, const Nf4DeviceTensor& t, std::int64_t row0, std::int64_t row1,
                                 cudaStream_t stream) {
  if (row0 < 0 || row1 < row0 || row1 > t.rows)
    throw Error("dequantize_rows_bf16: rows [" + std::to_string(row0) + ", " + std::to_string(row1) +
                ") are not inside the weight's " + std::to_string(t.rows) + " rows");
  nf4_dequantize_range(dst, t.data(), t.numel(), row0 * t.cols, row1 * t.cols, stream);
}

}  // namespace peft::cuda
