// SwiGLU, as kernels/cpu/swiglu.hpp: act = silu(gate) * up, silu(g) = g * sigmoid(g), and its
// backward dup = dact * silu(g), dgate = dact * up * s * (1 + g (1 - s)), all fp32 with one
// rounding to bf16 per output.
//
// gate and up are [rows, cols] views with a row stride `ld` (elements), so they may be the two
// halves of one fused gate_up projection's output ([rows, 2 * cols], ld = 2 * cols) or separate
// tensors (ld = cols). The backward writes dgate and dup with the same stride, and may write them
// over gate and up themselves (each thread reads its elements before writing them): the
// recompute-free backward then needs no extra [rows, 2 * cols] buffer.
#pragma once
#include <string>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::cuda {
namespace detail {

__device__ inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void swiglu_forward_kernel(bf16* __restrict__ act, const bf16* __restrict__ gate, const bf16* __restrict__ up,
                                      int rows, int cols, int ld) {
  const int packs = cols / 8;
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<long long>(rows) * packs) return;
  const long long r = idx / packs;
  const int c = static_cast<int>(idx % packs) * 8;
  const Bf16x8 g = load128cs(gate + r * ld + c), u = load128cs(up + r * ld + c);
  Bf16x8 out;
  for (int i = 0; i < 8; ++i) {
    const float gi = to_float(g[i]);
    out[i] = to_bf16(gi * sigmoid(gi) * to_float(u[i]));
  }
  store128(act + r * cols + c, out);
}

// No __restrict__ on gate/up/dgate/dup: they may alias (in-place backward).
__global__ void swiglu_backward_kernel(bf16* dgate, bf16* dup, const bf16* __restrict__ dact, const bf16* gate,
                                       const bf16* up, int rows, int cols, int ld) {
  const int packs = cols / 8;
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<long long>(rows) * packs) return;
  const long long r = idx / packs;
  const int c = static_cast<int>(idx % packs) * 8;
  const Bf16x8 g = load128(gate + r * ld + c), u = load128(up + r * ld + c), d = load128cs(dact + r * cols + c);
  Bf16x8 dg, du;
  for (int i = 0; i < 8; ++i) {
    const float gi = to_float(g[i]), ui = to_float(u[i]), di = to_float(d[i]);
    const float s = sigmoid(gi);
    du[i] = to_bf16(di * gi * s);
    dg[i] = to_bf16(di * ui * s * (1.0f + gi * (1.0f - s)));
  }
  store128(dgate + r * ld + c, dg);
  store128(dup + r * ld + c, du);
}

inline void check_swiglu_shape(int cols, int ld, const char* who) {
  if (cols % 8 != 0 || ld % 8 != 0 || ld < cols)
    throw Error(std::string(who) + ": cols " + std::to_string(cols) + " and row stride " + std::to_string(ld) +
                " must be multiples of 8 with stride >= cols");
}

}  // namespace detail

// ----------------------------------------------------------------------------------------------

// act: [rows, cols] contiguous; gate, up: [rows, cols] with row stride ld.
inline void swiglu_forward(bf16* act, const bf16* gate, const bf16* up, int rows, int cols, int ld, cudaStream_t stream) {
  detail::check_swiglu_shape(cols, ld, "swiglu_forward");
  const long long n = static_cast<long long>(rows) * (cols / 8);
  if (n == 0) return;
  detail::swiglu_forward_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(act, gate, up, rows, cols, ld);
  PEFT_CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

// dgate, dup overwritten (row stride ld); they may be gate and up themselves.
inline void swiglu_backward(bf16* dgate, bf16* dup, const bf16* dact, const bf16* gate, const bf16* up, int rows,
                            int cols, int ld, cudaStream_t stream) {
  detail::check_swiglu_shape(cols, ld, "swiglu_backward");
  const long long n = static_cast<long long>(rows) * (cols / 8);
  if (n == 0) return;
  detail::swiglu_backward_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(dgate, dup, dact, gate, up,
                                                                                            rows, cols, ld);
  PEFT_CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

}  // namespace peft::cuda
