// Planned device memory: the model describes every buffer once, in plan(MemoryPlan&), and that
// description runs twice. The first pass counts (no arena: each take() adds its rounded size and
// returns null), which sizes the arena exactly; the second hands out real blocks from it. One
// description means the size and the layout can never disagree, and nothing is allocated later:
// a step never calls cudaMalloc.
//
// Buffers whose lifetimes never overlap share memory through overlay(): e.g. the loss's buffers
// (alive between the last layer's forward and the first layer's backward) and the layers' step
// scratch (alive only inside a layer). Each alternative lays its buffers out from the start of one
// block as large as the largest of them.
#pragma once
#include <algorithm>
#include <cstddef>
#include <string>

#include "peft/kernels/cuda/device_arena.cuh"

namespace peft::cuda {

class MemoryPlan {
 public:
  MemoryPlan() = default;                                   // counting pass
  explicit MemoryPlan(DeviceArena& arena) : arena_(&arena) {}  // allocating pass
  MemoryPlan(char* block, std::size_t capacity) : block_(block), capacity_(capacity) {}  // carving one block

  template <class T>
  T* take(std::size_t count, const char* what) {
    const std::size_t bytes = (count * sizeof(T) + DeviceArena::kAlignment - 1) / DeviceArena::kAlignment *
                              DeviceArena::kAlignment;
    const std::size_t at = bytes_;
    bytes_ += bytes;
    if (block_) {
      if (bytes_ > capacity_)
        throw Error(std::string("memory plan: ") + what + " overruns its shared block (" + std::to_string(bytes_) +
                    " of " + std::to_string(capacity_) + " bytes)");
      return reinterpret_cast<T*>(block_ + at);
    }
    return arena_ ? arena_->alloc<T>(count, what) : nullptr;
  }
  bool allocating() const { return arena_ != nullptr || block_ != nullptr; }
  std::size_t bytes() const { return bytes_; }

 private:
  DeviceArena* arena_ = nullptr;
  char* block_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t bytes_ = 0;
};

// One block of `m` shared by alternatives whose buffers are never alive at the same time: each
// layout(MemoryPlan&) is counted, the block is the largest count, and on the allocating pass each
// lays its buffers out from the block's start.
template <class... Layouts>
void overlay(MemoryPlan& m, const char* what, Layouts&&... layouts) {
  std::size_t size = 0;
  const auto count = [&](auto& layout) {
    MemoryPlan c;
    layout(c);
    size = std::max(size, c.bytes());
  };
  (count(layouts), ...);
  char* block = m.take<char>(size, what);
  if (!m.allocating()) return;
  const auto carve = [&](auto& layout) {
    MemoryPlan p(block, size);
    layout(p);
  };
  (carve(layouts), ...);
}

}  // namespace peft::cuda
