// Device memory is planned, not allocated on demand: one cudaMalloc when training starts, then
// bump allocation out of it. A step never calls cudaMalloc (which synchronises the device and
// cannot be captured in a CUDA graph), and the high-water mark is the exact peak the run needed,
// which is what the benchmark reports next to cudaMemGetInfo.
//
// Lifetimes are stack-like: long-lived buffers (weights, master parameters, optimizer state) are
// taken first, per-step scratch after a mark() and given back with release(mark). Every block is
// 256-byte aligned, the alignment cuBLASLt and 16-byte vector loads want.
//
// With PEFT_CUDA_ARENA_DEBUG=1 in the environment every block is its own cudaMalloc instead
// (same accounting): compute-sanitizer then sees each buffer's bounds, which a bump arena hides.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::cuda {

class DeviceArena {
 public:
  static constexpr std::size_t kAlignment = 256;

  explicit DeviceArena(std::size_t capacity_bytes) : capacity_(round_up(capacity_bytes)) {
    const char* debug = std::getenv("PEFT_CUDA_ARENA_DEBUG");
    separate_ = debug && std::string(debug) == "1";
    if (separate_) return;
    void* p = nullptr;
    PEFT_CUDA_CHECK(cudaMalloc(&p, capacity_));
    base_ = static_cast<char*>(p);
  }
  ~DeviceArena() {  // no throw from a destructor; a failure here cannot be acted on
    if (base_) cudaFree(base_);
    for (auto& b : blocks_) cudaFree(b.second);
  }
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;
  DeviceArena(DeviceArena&& o) noexcept { *this = std::move(o); }
  DeviceArena& operator=(DeviceArena&& o) noexcept {
    std::swap(base_, o.base_);
    std::swap(capacity_, o.capacity_);
    std::swap(used_, o.used_);
    std::swap(high_water_, o.high_water_);
    std::swap(separate_, o.separate_);
    std::swap(blocks_, o.blocks_);
    return *this;
  }

  // `what` names the buffer in the error when the arena is too small.
  template <class T>
  T* alloc(std::size_t count, const char* what) {
    const std::size_t bytes = round_up(count * sizeof(T));
    if (bytes > capacity_ - used_)
      throw Error(std::string("device arena exhausted allocating ") + what + ": " + std::to_string(bytes) +
                  " bytes requested, " + std::to_string(capacity_ - used_) + " of " + std::to_string(capacity_) +
                  " free; give the arena more memory");
    T* p;
    if (separate_) {
      void* q = nullptr;
      PEFT_CUDA_CHECK(cudaMalloc(&q, count * sizeof(T) > 0 ? count * sizeof(T) : 1));
      blocks_.emplace_back(used_, q);
      p = static_cast<T*>(q);
    } else {
      p = reinterpret_cast<T*>(base_ + used_);
    }
    used_ += bytes;
    if (used_ > high_water_) high_water_ = used_;
    return p;
  }

  std::size_t mark() const { return used_; }
  void release(std::size_t mark) {
    if (mark > used_) throw Error("device arena: release to a mark above the current top");
    while (!blocks_.empty() && blocks_.back().first >= mark) {
      PEFT_CUDA_CHECK(cudaFree(blocks_.back().second));
      blocks_.pop_back();
    }
    used_ = mark;
  }

  std::size_t capacity() const { return capacity_; }
  std::size_t used() const { return used_; }
  std::size_t high_water() const { return high_water_; }
  bool separate_allocations() const { return separate_; }

 private:
  static std::size_t round_up(std::size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

  char* base_ = nullptr;
  std::size_t capacity_ = 0, used_ = 0, high_water_ = 0;
  bool separate_ = false;                                 // PEFT_CUDA_ARENA_DEBUG=1
  std::vector<std::pair<std::size_t, void*>> blocks_;     // (offset, block) in debug mode
};

}  // namespace peft::cuda
