// One launch over many tensors: the optimizer update and the gradient norm touch every trainable
// tensor (392 LoRA matrices for the 7B), and a launch per tensor would cost more than the work.
// A chunk table, built once at setup, cuts each tensor into fixed-size element ranges; block b of
// a multi-tensor kernel handles chunk b, whichever tensor it belongs to. Chunks never straddle
// two tensors, so a kernel reads one tensor's pointers per block.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_arena.cuh"

namespace peft::cuda {

struct TensorChunk {
  int tensor;              // index into the kernel's tensor list
  std::int64_t begin, end;  // element range [begin, end) of that tensor
};

class ChunkTable {
 public:
  static constexpr std::int64_t kChunkElements = 16384;

  // Uploads the table once (a synchronous copy: setup time, never inside a step).
  ChunkTable(DeviceArena& arena, std::span<const std::int64_t> numels) {
    std::vector<TensorChunk> chunks;
    for (std::size_t t = 0; t < numels.size(); ++t)
      for (std::int64_t b = 0; b < numels[t]; b += kChunkElements)
        chunks.push_back({static_cast<int>(t), b, b + kChunkElements < numels[t] ? b + kChunkElements : numels[t]});
    count_ = static_cast<int>(chunks.size());
    if (count_ == 0) return;
    chunks_ = arena.alloc<TensorChunk>(chunks.size(), "multi-tensor chunk table");
    PEFT_CUDA_CHECK(cudaMemcpy(chunks_, chunks.data(), chunks.size() * sizeof(TensorChunk), cudaMemcpyHostToDevice));
  }

  const TensorChunk* device() const { return chunks_; }
  int count() const { return count_; }

 private:
  TensorChunk* chunks_ = nullptr;
  int count_ = 0;
};

// Copies a host array of POD descriptors into the arena once, at setup.
template <class T>
T* upload_once(DeviceArena& arena, std::span<const T> host, const char* what) {
  if (host.empty()) return nullptr;
  T* d = arena.alloc<T>(host.size(), what);
  PEFT_CUDA_CHECK(cudaMemcpy(d, host.data(), host.size_bytes(), cudaMemcpyHostToDevice));
  return d;
}

}  // namespace peft::cuda
