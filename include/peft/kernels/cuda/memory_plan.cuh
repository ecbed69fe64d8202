// Planned device memory: the model describes every buffer once, in plan(MemoryPlan&), and that
// description runs twice. The first pass counts (no arena: each take() adds its rounded size and
// returns null), which sizes the arena exactly; the second hands out real blocks from it. One
// description means the size and the layout can never disagree, and nothing is allocated later:
// a step never calls cudaMalloc.
#pragma once
#include <cstddef>

#include "peft/kernels/cuda/device_arena.cuh"

namespace peft::cuda {

class MemoryPlan {
 public:
  MemoryPlan() = default;                                   // counting pass
  explicit MemoryPlan(DeviceArena& arena) : arena_(&arena) {}  // allocating pass

  template <class T>
  T* take(std::size_t count, const char* what) {
    const std::size_t bytes = (count * sizeof(T) + DeviceArena::kAlignment - 1) / DeviceArena::kAlignment *
                              DeviceArena::kAlignment;
    bytes_ += bytes;
    return arena_ ? arena_->alloc<T>(count, what) : nullptr;
  }
  bool allocating() const { return arena_ != nullptr; }
  std::size_t bytes() const { return bytes_; }

 private:
  DeviceArena* arena_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace peft::cuda
