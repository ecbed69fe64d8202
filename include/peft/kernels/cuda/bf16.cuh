// Activations and frozen weights are bf16 on the device; every kernel computes in fp32 and rounds
// once on store (round-to-nearest-even, as torch and peft/core/dtype.hpp do). Memory-bound kernels
// move data through Packed128: one 16-byte load or store per thread (8 bf16 or 4 floats), the
// widest access a thread can issue, instead of ad hoc casts at each call site.
#pragma once
#include <cuda_bf16.h>

namespace peft::cuda {

using bf16 = __nv_bfloat16;

template <class T>
struct alignas(16) Packed128 {
  static constexpr int size = 16 / static_cast<int>(sizeof(T));
  T v[size];

  __device__ T& operator[](int i) { return v[i]; }
  __device__ const T& operator[](int i) const { return v[i]; }
};

using Bf16x8 = Packed128<bf16>;
using Floatx4 = Packed128<float>;

// The address must be 16-byte aligned: launchers check that rows are multiples of the pack.
template <class T>
__device__ inline Packed128<T> load128(const T* p) {
  return *reinterpret_cast<const Packed128<T>*>(p);
}
// Streaming load (evict-first): for data read once, so it does not push reused data out of L2.
template <class T>
__device__ inline Packed128<T> load128cs(const T* p) {
  Packed128<T> r;
  *reinterpret_cast<int4*>(&r) = __ldcs(reinterpret_cast<const int4*>(p));
  return r;
}
template <class T>
__device__ inline void store128(T* p, const Packed128<T>& v) {
  *reinterpret_cast<Packed128<T>*>(p) = v;
}

__device__ inline float to_float(bf16 x) { return __bfloat162float(x); }
__device__ inline float to_float(float x) { return x; }
__device__ inline bf16 to_bf16(float x) { return __float2bfloat16_rn(x); }

// Stores fp32 into either output type: lets a kernel write bf16 activations or fp32 gradients.
__device__ inline void store_as(bf16* p, float x) { *p = to_bf16(x); }
__device__ inline void store_as(float* p, float x) { *p = x; }

}  // namespace peft::cuda
