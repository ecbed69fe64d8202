// Programmatic dependent launch (Hopper) for the decode step's chain of small kernels.
//
// Why: one decode token is ~290 dependent launches whose work is a few microseconds each, so the
// gap between a kernel's end and the next one's start is a large share of the step. With the
// launch attribute, the next kernel is scheduled while the current one still runs; its blocks
// do what needs no earlier result (the one-row products prefetch their weights into L2) and then
// wait in pdl_wait() until the previous kernel has finished and its writes are visible. Each
// kernel releases its successor only after its own wait (pdl_release after pdl_wait), so at most
// one kernel runs ahead. Every kernel launched with launch_pdl must call pdl_wait() before it
// reads or writes anything another kernel touches. Works eagerly and inside a captured graph;
// PEFT_DECODE_PDL=0 turns it off (plain stream order, for comparison). Hopper only: the
// griddepcontrol instructions exist in the sm_90 code alone, and the attribute is set only when
// the device runs the Hopper kernel family (device_kernels.cuh); elsewhere the same kernels run in
// plain stream order.
#pragma once
#include <utility>

#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"

namespace peft::cuda {

// Waits for the previous kernel in the stream (a no-op when not launched with the attribute).
__device__ inline void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// Lets the next kernel in the stream be scheduled.
__device__ inline void pdl_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// PEFT_DECODE_PDL is not 0 and the current device runs the Hopper kernels.
inline bool pdl_enabled() { return pdl_requested() && hopper_kernels(); }

template <class... Params, class... Args>
void launch_pdl(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
                cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  const cudaError_t st = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (st != cudaSuccess) throw Error(std::string("launch of ") + name + ": " + cudaGetErrorString(st));
}

}  // namespace peft::cuda
