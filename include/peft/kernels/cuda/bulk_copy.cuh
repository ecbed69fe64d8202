// Hopper's bulk copy engine (cp.async.bulk, global -> shared) and the shared-memory barriers
// (mbarrier) that say when a copy has landed: what a kernel needs to keep many kilobytes of a
// stream in flight from one thread, with no registers held while they travel.
//
// Why: a streaming kernel that loads into registers has at most a few 16-byte loads a lane in
// flight (the one-row decode products: ~2 KB a warp), so a short kernel spends much of its time
// waiting on round trips it cannot overlap. A bulk copy is issued by one lane, lands in shared
// memory and counts its bytes on an mbarrier; the warp waits on the barrier's phase only when it
// needs the data. sm_90 only: elsewhere these compile to a trap and the callers do not select the
// kernels that use them (gemv.cuh).
#pragma once
#include <cstdint>

namespace peft::cuda {

__device__ inline std::uint32_t smem_address(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// An mbarrier expecting one arrival a phase (the issuing lane's arrive.expect_tx), made visible to
// the copy engine before any copy names it.
__device__ inline void mbarrier_init_one(std::uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_address(bar)) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#else
  __trap();
#endif
}

// An L2 policy for data read once (the weights of a decode step): evicted first, so a token's
// 14 GB stream does not push the KV cache and the activations out of L2.
__device__ inline std::uint64_t l2_evict_first_policy() {
  std::uint64_t policy = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
#endif
  return policy;
}

// Copies `bytes` (a multiple of 16; both addresses 16-byte aligned) from global `src` to shared
// `dst` and completes them on `bar`'s current phase. One lane calls it; the barrier's phase then
// completes when the bytes have landed.
__device__ inline void bulk_copy_to_shared(void* dst, const void* src, std::uint32_t bytes, std::uint64_t* bar,
                                           std::uint64_t policy) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // No proxy fence before the copy: the slot's previous contents were read by plain loads whose
  // values the warp has already used.
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_address(bar)), "r"(bytes)
               : "memory");
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
          smem_address(dst)),
      "l"(src), "r"(bytes), "r"(smem_address(bar)), "l"(policy)
      : "memory");
#else
  __trap();
#endif
}

// Waits until `bar` has completed the phase of parity `parity` (0 for its first phase, then 1, 0, ...).
__device__ inline void mbarrier_wait(std::uint64_t* bar, std::uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  std::uint32_t done = 0;
  while (!done)
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
        : "=r"(done)
        : "r"(smem_address(bar)), "r"(parity)
        : "memory");
#else
  __trap();
#endif
}

}  // namespace peft::cuda
