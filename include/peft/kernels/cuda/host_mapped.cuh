// cuda::HostMappedBuffer: bytes in pinned host memory that kernels read through a device pointer
// (cudaHostAlloc with cudaHostAllocMapped). Why: a frozen, untied token embedding (152064 x 3584
// bf16 = 1.09 GB at 7B) is read only T rows a step, 14.7 MB at 2048 tokens, so PCIe carries it in
// well under a millisecond; holding it on the device costs more than a QLoRA 7B's activations.
// The gather kernel reads rows through the device alias, which also works inside a CUDA graph.
// Checkpoint downloads stage through one too (optim/cuda/device_parameters.cuh): pinned memory
// takes asynchronous copies at full PCIe speed, one wait for a whole batch of tensors.
#pragma once
#include <cstddef>
#include <string>
#include <utility>

#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::cuda {

class HostMappedBuffer {
 public:
  HostMappedBuffer() = default;
  // hint: what the error adds on how to do without it.
  HostMappedBuffer(std::size_t bytes, const std::string& what, const std::string& hint = "") : bytes_(bytes) {
    if (bytes == 0) return;
    const cudaError_t st = cudaHostAlloc(&host_, bytes, cudaHostAllocMapped | cudaHostAllocPortable);
    if (st != cudaSuccess) {
      host_ = nullptr;
      throw Error("could not allocate " + std::to_string(bytes) + " bytes of pinned host memory for " + what + ": " +
                  cudaGetErrorString(st) + (hint.empty() ? "" : " (" + hint + ")"));
    }
    PEFT_CUDA_CHECK(cudaHostGetDevicePointer(&device_, host_, 0));
  }
  ~HostMappedBuffer() {
    if (host_) cudaFreeHost(host_);  // no throw from a destructor
  }
  HostMappedBuffer(HostMappedBuffer&& o) noexcept { *this = std::move(o); }
  HostMappedBuffer& operator=(HostMappedBuffer&& o) noexcept {
    std::swap(host_, o.host_);
    std::swap(device_, o.device_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  HostMappedBuffer(const HostMappedBuffer&) = delete;
  HostMappedBuffer& operator=(const HostMappedBuffer&) = delete;

  void* device() const { return device_; }  // what kernels and cudaMemcpy* take
  void* host() const { return host_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* host_ = nullptr;
  void* device_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace peft::cuda
