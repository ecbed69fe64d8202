// cuda::Linear<Lora<R>, Base>: a frozen base W [out, in] (+ bf16 bias; Base: bf16 or NF4) and,
// when --target_modules names the module, PEFT's LoRA branch (a module it does not name behaves
// as Linear<Frozen>),
//   y = x W^T + b + s * (dropout(x) A^T) B^T, s = alpha / r (alpha / sqrt(r) with use_rslora).
//
// The rank: R when fixed at compile time (Lora<8>; --lora_rank must then be 8), else (Lora<>)
// --lora_rank at run time; either way the kernels see the padded rank rp.
// Why the adapter is laid out as A [rp, in] and B^T [rp, out] with rp = r rounded up to 8:
// cuBLASLt wants 16-byte leading dimensions, so the [tokens, r] intermediate needs r % 8 == 0.
// Padding with zero rows of A and zero rows of B^T is exact: the padded rows get zero gradients
// (dB^T = xa^T dy has xa's padded columns zero; dA = dxa^T x has dxa's padded columns zero,
// since dxa = dy B), and AdamW leaves a zero parameter with zero gradient at zero. Storing B
// transposed keeps the real [r, out] block a contiguous prefix, so the HF [out, r] tensor is a
// transpose of that prefix (done on the host when saving).
//
// Precision: A and B are fp32 masters (PEFT's autocast_adapter_dtype) with bf16 copies that the
// GEMMs read and the optimizer refreshes; all GEMMs accumulate in fp32. The rank-8 GEMMs are
// bandwidth-bound (they stream x or dy once), so bf16 operands halve their cost against fp32
// GEMMs; the rounding of A and B to bf16 is the same rounding HF's bf16 autocast applies.
//
// Gradients: parameter gradients accumulate (+=, fp32); the input gradient is written (=) or
// added (+=, for q/k/v and gate/up that share one input), rounded once to bf16.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "peft/core/rng.hpp"
#include "peft/layers/cuda/linear.cuh"

namespace peft::cuda {

template <int R, class Base>
class Linear<Lora<R>, Base> {
 public:
  static constexpr int kRank = R;  // kDynamicRank: --lora_rank, read at construction

  Linear(std::string module, LinearShape s, const LoraConfig& lora)
      : base_{std::move(module), s}, targeted_(lora.targets(base_.module)), r_(R != kDynamicRank ? R : lora.r),
        rp_(targeted_ ? round_rank_up(r_) : 0), scaling_(static_cast<float>(lora.scaling())),
        dropout_(static_cast<float>(lora.lora_dropout)) {
    if constexpr (R != kDynamicRank) check_compiled_rank(R, lora);
  }

  // Weights first (all layers), then gradients (one contiguous block for zero_grad): two calls.
  void plan_weights(MemoryPlan& m) {
    base_.plan(m);
    if (!targeted_) return;
    const std::size_t in = static_cast<std::size_t>(base_.shape.in), out = static_cast<std::size_t>(base_.shape.out);
    const std::size_t rp = static_cast<std::size_t>(rp_);
    a_ = m.take<float>(rp * in, "lora_A");
    bt_ = m.take<float>(rp * out, "lora_B");
    a16_ = m.take<bf16>(rp * in, "lora_A bf16");
    bt16_ = m.take<bf16>(rp * out, "lora_B bf16");
    if (m.allocating()) {  // zero until init_adapter or an adapter load (as the CPU layer)
      PEFT_CUDA_CHECK(cudaMemset(a_, 0, rp * in * 4));
      PEFT_CUDA_CHECK(cudaMemset(bt_, 0, rp * out * 4));
      PEFT_CUDA_CHECK(cudaMemset(a16_, 0, rp * in * 2));
      PEFT_CUDA_CHECK(cudaMemset(bt16_, 0, rp * out * 2));
    }
  }
  void plan_grads(MemoryPlan& m) {
    if (!targeted_) return;
    da_ = m.take<float>(static_cast<std::size_t>(rp_) * base_.shape.in, "lora_A grad");
    dbt_ = m.take<float>(static_cast<std::size_t>(rp_) * base_.shape.out, "lora_B grad");
  }

  void load(WeightSource& src, cudaStream_t stream) { base_.load(src, stream); }
  void base_weights(std::vector<WeightDestination>& out) const { base_.base_weights(out); }
  void widen_masters(cudaStream_t) {}
  void fill_random(std::uint64_t seed, cudaStream_t stream) { base_.fill_random(seed, stream); }

  // PEFT's init, the CPU layer's exact draws: A ~ U(-1/sqrt(in), 1/sqrt(in)) row-major, B = 0.
  void init_adapter(Rng& rng, cudaStream_t stream) {
    if (!targeted_) return;
    const std::size_t in = static_cast<std::size_t>(base_.shape.in);
    const float bound = 1.0f / std::sqrt(static_cast<float>(in));
    std::vector<float> a(static_cast<std::size_t>(rp_) * in, 0.0f);
    for (std::size_t i = 0; i < static_cast<std::size_t>(r_) * in; ++i) a[i] = rng.uniform(-bound, bound);
    PEFT_CUDA_CHECK(cudaMemcpyAsync(a_, a.data(), a.size() * 4, cudaMemcpyHostToDevice, stream));
    PEFT_CUDA_CHECK(cudaMemsetAsync(bt_, 0, static_cast<std::size_t>(rp_) * base_.shape.out * 4, stream));
    copy_to_bf16(a16_, a_, static_cast<long long>(rp_) * base_.shape.in, stream);
    copy_to_bf16(bt16_, bt_, static_cast<long long>(rp_) * base_.shape.out, stream);
    PEFT_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  void parameters(std::vector<DeviceParameter>& out) const {
    if (!targeted_) return;
    const int in = static_cast<int>(base_.shape.in), o = static_cast<int>(base_.shape.out);
    out.push_back({base_.module + ".lora_A.weight", a_, da_, a16_, rp_, in, r_, in, false});
    out.push_back({base_.module + ".lora_B.weight", bt_, dbt_, bt16_, rp_, o, o, r_, true});
  }

  void forward(GemmContext c, const bf16* x, bf16* y, bf16* xa, bf16* drop_buf, int tokens,
               const std::uint64_t* seed) const {
    weights().forward(c, x, y, xa, drop_buf, tokens, seed);
  }

  // dx (= or +=) dy W + (s dy B) A (masked by the forward's dropout); dA, dB^T accumulate.
  // dxa [T, rp] is scratch, and so is drop_buf [T, in] when dropout is on and not fused.
  void backward(GemmContext c, const bf16* x, const bf16* dy, bf16* dx, bool accumulate, const bf16* xa, bf16* dxa,
                bf16* drop_buf, int tokens, const std::uint64_t* seed) const {
    const int in = static_cast<int>(base_.shape.in);
    const ProjectionWeights w = weights();
    // dB^T and dxa need only dy: under c.lora_beside they run beside the input-gradient GEMM.
    const bool beside = runs_beside(c);
    if (beside) {
      const ProfileScope lora = c.part(StepPart::kLora);  // profiled only on one stream
      up_backward(c.beside(), w, dy, xa, dxa, drop_buf, tokens);
    }
    base_.backward_input(c, dy, dx, accumulate, tokens);
    if (!targeted_) return;
    const ProfileScope lora = c.part(StepPart::kLora);
    if (beside)
      c.join();
    else
      up_backward(c, w, dy, xa, dxa, drop_buf, tokens);
    if (w.fuses_dropout(c, seed)) {  // dA += dxa^T drop(x) and dx += (dxa A) * mask in one pass
      lora_dropout_backward(dx, da_, dxa, x, a16_, rp_, tokens, in, seed, dropout_, c.stream);
      return;
    }
    const bool drop = w.drops(seed);
    const long long n = static_cast<long long>(tokens) * in;
    const bf16* xin = x;
    if (drop) {
      dropout_forward(drop_buf, x, n, seed, dropout_, c.stream);
      xin = drop_buf;
    }
    // dA [rp, in] += dxa^T x
    c.gemm.matmul(da_, in, dxa, rp_, true, xin, in, false, rp_, in, tokens, 1.0f, 1.0f, nullptr, c.stream);
    if (!drop) {  // dx += dxa A
      c.gemm.matmul(dx, in, dxa, rp_, false, a16_, in, false, tokens, in, rp_, 1.0f, 1.0f, nullptr, c.stream);
    } else {  // dx += (dxa A) * mask
      c.gemm.matmul(drop_buf, in, dxa, rp_, false, a16_, in, false, tokens, in, rp_, 1.0f, 0.0f, nullptr, c.stream);
      dropout_backward_add(dx, drop_buf, n, seed, dropout_, c.stream);
    }
  }

  ProjectionWeights weights() const {
    return base_.weights().with_adapter(a16_, bt16_, rp_, scaling_, dropout_);
  }
  int padded_rank() const { return rp_; }
  // Whether the backward runs dB^T / dxa beside the base GEMM (and joins before it reads x): not
  // under NF4, whose dequantisation scratch shares drop_buf's memory.
  bool runs_beside(GemmContext c) const {
    return targeted_ && c.lora_beside && std::is_same_v<Base, detail::DenseBase>;
  }
  bool targeted() const { return targeted_; }
  bool reads_input_in_backward() const { return targeted_; }  // dA needs x
  const std::string& module() const { return base_.module; }

 private:
  // dB^T [rp, out] += s xa^T dy and dxa [T, rp] = s dy B: from one pass over dy on tensor cores
  // (drop_buf, idle until the dropout pass, holding the partial dxa sums: StepScratch plans it that
  // large), else two cuBLASLt products.
  void up_backward(GemmContext c, const ProjectionWeights& w, const bf16* dy, const bf16* xa, bf16* dxa, bf16* drop_buf,
                   int tokens) const {
    const int out = static_cast<int>(base_.shape.out);
    if (w.up_on_tensor_cores(c, dy) && (lora_up_backward_scratch_floats(tokens, out, rp_) == 0 || drop_buf)) {
      lora_up_backward(dbt_, dxa, dy, xa, bt16_, rp_, tokens, out, scaling_, reinterpret_cast<float*>(drop_buf), c.stream);
      return;
    }
    // dB^T [rp, out] += s * xa^T dy
    c.gemm.matmul(dbt_, out, xa, rp_, true, dy, out, false, rp_, out, tokens, scaling_, 1.0f, nullptr, c.stream);
    // dxa [T, rp] = s * dy B  (B = (B^T)^T: B^T [rp, out] read transposed)
    c.gemm.matmul(dxa, rp_, dy, out, false, bt16_, out, true, tokens, rp_, out, scaling_, 0.0f, nullptr, c.stream);
  }

  Base base_;  // bf16 (detail::DenseBase) or NF4 (detail::Nf4FrozenBase)
  bool targeted_;
  int r_, rp_;
  float scaling_, dropout_;
  bf16 *a16_ = nullptr, *bt16_ = nullptr;
  float *a_ = nullptr, *bt_ = nullptr, *da_ = nullptr, *dbt_ = nullptr;
};

}  // namespace peft::cuda
