// Hand-offs between the blocks of one kernel, for the decode step's fused kernels (gemv.cuh,
// decode_attention.cuh).
//
// Why: at one token a kernel boundary costs more than the work it separates (a launch, a ramp-up
// and a wave tail, ~3-5 us), so a reduction that used to be its own kernel (LoRA's x A^T before
// the projection that needs it, the flash-decoding merge, the argmax over the vocabulary) is
// done by the blocks of the kernel itself:
//   - "last arriver": every participant publishes its partial, fences, and counts itself in; the
//     one that brings the count to the total reduces all partials in a fixed order (so the result
//     does not depend on which one arrived last) and puts the counter back to 0 for the next
//     launch. Nobody waits.
//   - a flag set by the last arriver, spun on by the blocks that need the result. Only safe when
//     the producers never wait themselves and are resident: the gemv gives the producing work to
//     the lowest warps first and keeps its grid within one wave (gemv()).
// Counters live in memory zeroed once when the KV cache is made; every use leaves them at 0.
// Results are read once per warp (then kept in registers): many warps re-reading one L2 line
// serialise on it.
#pragma once

namespace peft::cuda {

// A load that later loads of this thread may not be ordered before (the flag's consumer).
__device__ inline unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
// Spins until *flag != 0 (one thread of the warp spins, the others wait at the warp barrier).
// Thousands of warps may poll one address: the sleep keeps them from flooding its L2 slice,
// which also serves the producers' counter (keep the two on separate 128-byte lines).
__device__ inline void wait_flag(const unsigned* flag, int lane) {
  if (lane == 0)
    while (load_acquire(flag) == 0) __nanosleep(200);
  __syncwarp();
}
// Called by one thread after its partial is written (and fenced, for other threads' writes):
// true for the last of `total` arrivals, which then sees every partial and resets the counter.
__device__ inline bool arrive_last(unsigned* counter, unsigned total) {
  __threadfence();
  const bool last = atomicAdd(counter, 1u) == total - 1;
  if (last) {
    __threadfence();
    *counter = 0;
  }
  return last;
}

}  // namespace peft::cuda
