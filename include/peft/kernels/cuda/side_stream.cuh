// SideStream: a second stream on which a LoRA projection's small passes run beside its frozen base
// GEMM (issue 14, item 5). In a training step the adapter's passes are memory- or latency-bound
// kernels of a few to tens of microseconds, and the base GEMM beside them is compute-bound and
// ends in a partial last wave of tiles that leaves SMs idle; x A^T in the forward and
// dB^T / dxa in the backward need only what the GEMM also reads, so they can fill that idle
// time. Forked and joined per projection with two events (layers/cuda/linear.cuh and
// lora_linear.cuh say what runs where); the step's CUDA graph captures the fork and the join as
// edges, so a replay keeps the overlap.
//
// The main stream is created at the device's highest priority and the side stream at its lowest:
// when an SM frees up, the block scheduler then takes the GEMM's next tiles before the side
// kernel's blocks (which only fill what is left), and graphs are instantiated with the nodes'
// own priorities (graph_capture.cuh).
#pragma once
#include <memory>

#include <cuda_runtime.h>

#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_arena.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"
#include "peft/kernels/cuda/gemm.cuh"

namespace peft::cuda {

// The longest micro-batch (tokens) whose step uses the side stream; longer ones run as before it
// (one stream, the adapter's term before the base GEMM's). H200, 7B, LoRA r8, side stream off / on
// (bench/RESULTS.md, 2026-12-04): 64 tokens 16.7 / 14.5 ms, the identity run (~1,000) 2.40 / 2.36 s,
// 2048 keep-all 17,080 / 17,420 tok/s; 4096 selective 13,713 / 13,334 and 13,506 / 13,583, 8192
// (NeMo's setup) 16,416 / 16,281, 16,318 / 16,223, 16,460 / 16,315: where the GEMMs are long the
// overlap no longer pays for the forks and the adapter's read-modify-write of y.
inline constexpr int kSideStreamMaxTokens = 2048;

// A non-blocking stream at the device's highest (main) or lowest (side) priority
// (PEFT_STREAM_PRIORITY=0: both at the default, for an A/B).
inline cudaStream_t make_prioritised_stream(bool highest) {
  int least = 0, greatest = 0;
  PEFT_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  if (!env_switch_on("PEFT_STREAM_PRIORITY")) greatest = least;
  cudaStream_t s = nullptr;
  PEFT_CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, highest ? greatest : least));
  return s;
}

class SideStream {
 public:
  // The side GEMMs (the adapter's cuBLASLt products above rank 16) get their own cuBLASLt
  // workspace: two products in flight at once must not share one.
  explicit SideStream(DeviceArena& arena) : stream_(make_prioritised_stream(false)) {
    PEFT_CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
    PEFT_CUDA_CHECK(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming));
    gemm_ = std::make_unique<Gemm>(arena, kWorkspaceBytes);
  }
  ~SideStream() {
    gemm_.reset();
    if (fork_) cudaEventDestroy(fork_);
    if (join_) cudaEventDestroy(join_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;

  // The side stream, after everything queued so far on `main`.
  cudaStream_t fork(cudaStream_t main) const {
    PEFT_CUDA_CHECK(cudaEventRecord(fork_, main));
    PEFT_CUDA_CHECK(cudaStreamWaitEvent(stream_, fork_, 0));
    return stream_;
  }
  // `main` continues after everything queued so far on the side stream.
  void join(cudaStream_t main) const {
    PEFT_CUDA_CHECK(cudaEventRecord(join_, stream_));
    PEFT_CUDA_CHECK(cudaStreamWaitEvent(main, join_, 0));
  }
  Gemm& gemm() const { return *gemm_; }

  static constexpr std::size_t kWorkspaceBytes = 4u << 20;  // the adapter's products are rank-thin

 private:
  cudaStream_t stream_ = nullptr;
  cudaEvent_t fork_ = nullptr, join_ = nullptr;
  std::unique_ptr<Gemm> gemm_;
};

}  // namespace peft::cuda
