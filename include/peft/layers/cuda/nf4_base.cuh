// The frozen base of a projection under the Nf4Base precision (QLoRA) on the GPU: W [out, in] held
// as an NF4 Nf4DeviceTensor (0.516 bytes a weight, kernels/cuda/nf4_tensor.cuh), the bias in bf16.
// cuda::Linear<Lora<R>, Nf4FrozenBase> and Linear<Frozen, Nf4FrozenBase> hold it where the bf16
// path holds detail::DenseBase (layers/cuda/linear.cuh), with the same members, so the policies'
// code is one for both precisions.
//
// Why a bf16 copy is never kept: the forward GEMM and the input-gradient GEMM each dequantise W
// into the model's one weight scratch right before they run (ProjectionWeights::base_for_gemm,
// as bitsandbytes' MatMul4Bit does; up to 64 tokens they decode it inside a fused GEMM instead,
// kNf4FusedMaxTokens), so the model's extra memory is its largest projection in bf16. Loading
// quantises one tensor at a time on the host with the CPU backend's quantiser, from the
// checkpoint's value rounded to bf16 (what torch_dtype=bfloat16 loading gives bitsandbytes),
// so the GPU's NF4 bits are the CPU oracle's bits.
#pragma once
#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "peft/layers/cuda/linear.cuh"
#include "peft/policies/precision.hpp"

namespace peft::cuda {
namespace detail {

// Random NF4 codes: every byte a uniform draw (two uniform 4-bit codes).
__global__ void fill_random_bytes_kernel(std::uint8_t* __restrict__ x, long long n, std::uint64_t seed) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = static_cast<std::uint8_t>(mix64(seed + 0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(i + 1)));
}

struct Nf4FrozenBase {
  std::string module;
  LinearShape shape;
  Nf4DeviceTensor w;
  bf16* b = nullptr;

  std::size_t numel() const { return static_cast<std::size_t>(shape.out) * static_cast<std::size_t>(shape.in); }
  void plan(MemoryPlan& m) {
    w = plan_nf4_tensor(m, shape.out, shape.in, "projection weight (NF4)");
    if (shape.bias) b = m.take<bf16>(static_cast<std::size_t>(shape.out), "projection bias");
  }
  // The weight in fp32 from the source, rounded to bf16, quantised on the host, copied; the host
  // copies die here (one projection at a time).
  void load(WeightSource& src, cudaStream_t stream) {
    Matrix wm(shape.out, shape.in);
    src.read(module + ".weight", wm);
    for (Eigen::Index i = 0; i < wm.size(); ++i) wm.data()[i] = round_to_bf16(wm.data()[i]);
    PEFT_CUDA_CHECK(cudaStreamSynchronize(stream));  // upload_nf4 copies synchronously on the null stream
    const std::string name = module + ".weight";
    upload_nf4(w, nf4::quantize(std::span<const float>(wm.data(), static_cast<std::size_t>(wm.size())), name), name);
    PEFT_CUDA_CHECK(cudaDeviceSynchronize());  // a pageable copy may still be in DMA when cudaMemcpy returns
    if (shape.bias) {
      Matrix bm(1, shape.out);
      src.read(module + ".bias", bm);
      upload_bf16(b, bm, stream);
    }
  }
  // Only the bias can be filled as bf16 bytes; the weight is quantised through load().
  void base_weights(std::vector<WeightDestination>& out) const {
    if (shape.bias) out.push_back({module + ".bias", b, {shape.out}});
  }
  // Benchmarks: random codes, every block's absmax the same value (scale 0, so absmax = offset),
  // chosen so the weights have RandomWeights' standard deviation 1/sqrt(in) (the 16 NF4 values
  // have an RMS of 0.55). Drawn on the device: the 32B's 31 G weights need no host pass.
  void fill_random(std::uint64_t seed, cudaStream_t stream) {
    const long long bytes = static_cast<long long>((w.numel() + 1) / 2);
    if (bytes > 0) {
      fill_random_bytes_kernel<<<grid_for(bytes), 256, 0, stream>>>(w.packed, bytes, seed);
      PEFT_CUDA_CHECK_LAUNCH("fill_random_bytes_kernel");
    }
    PEFT_CUDA_CHECK(cudaMemsetAsync(w.absmax_code, 0, static_cast<std::size_t>(w.blocks()), stream));
    PEFT_CUDA_CHECK(cudaMemsetAsync(w.absmax_scale, 0, static_cast<std::size_t>(w.groups()) * sizeof(float), stream));
    w.offset = 1.0f / (0.55f * std::sqrt(static_cast<float>(shape.in)));
    if (shape.bias) fill_normal(b, shape.out, seed ^ 0x5bd1e995ull, 0.02f, stream);
  }
  // dx (= or +=) dy W: fused at few tokens, else W dequantised into c.weight_scratch first.
  void backward_input(GemmContext c, const bf16* dy, bf16* dx, bool accumulate, int tokens) const {
    const ProfileScope base = c.part(StepPart::kBaseGemm);
    weights().nf4_backward_input(c, dy, dx, accumulate ? 1.0f : 0.0f, tokens);
  }
  ProjectionWeights weights() const { return {shape, &w, b}; }
};

}  // namespace detail

// Where a precision keeps the frozen projection weights on the GPU: bf16 (Bf16Mixed) or NF4
// computed in bf16 (Nf4Base). NF4 with fp32 arithmetic (Nf4Fp32) is the CPU's parity oracle only.
template <class P>
using FrozenBaseOf = std::conditional_t<QuantisedBase<P>, detail::Nf4FrozenBase, detail::DenseBase>;

template <class P>
concept CudaPrecision = std::same_as<P, Bf16Mixed> || std::same_as<P, Nf4Base>;

}  // namespace peft::cuda
