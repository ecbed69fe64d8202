// One projection on the GPU: a frozen bf16 base W [out, in] (+ bf16 bias) and, when the module is
// targeted, PEFT's LoRA branch, y = x W^T + b + s * (dropout(x) A^T) B^T, s = alpha / r.
//
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
#include <cstdint>
#include <string>
#include <vector>

#include "peft/kernels/cuda/elementwise.cuh"
#include "peft/kernels/cuda/gemm.cuh"
#include "peft/kernels/cuda/memory_plan.cuh"
#include "peft/io/cuda_weight_loader.cuh"
#include "peft/core/dtype.hpp"
#include "peft/core/tensor.hpp"
#include "peft/layers/linear.hpp"
#include "peft/layers/weight_source.hpp"

namespace peft::cuda {

inline int round_rank_up(int r) { return (r + 7) / 8 * 8; }

// A trainable tensor on the device, as the optimizer and the checkpoint writer see it.
struct DeviceParameter {
  std::string name;            // HF/PEFT module path, e.g. ...q_proj.lora_A.weight
  float* value = nullptr;      // fp32 master, stored [rows, cols]
  float* grad = nullptr;       // fp32, same layout
  bf16* value_bf16 = nullptr;  // the copy the GEMMs read
  int rows = 0, cols = 0;      // storage shape (rows padded to the rank's multiple of 8)
  int hf_rows = 0, hf_cols = 0;  // the tensor's shape in PEFT's files
  bool transposed = false;     // storage is the transpose of the HF tensor (lora_B)
  std::int64_t numel() const { return static_cast<std::int64_t>(rows) * cols; }
};

// Host <-> device conversions (setup and checkpoint time only).
inline void upload_bf16(bf16* dst, const Matrix& m, cudaStream_t stream) {
  std::vector<std::uint16_t> h(static_cast<std::size_t>(m.size()));
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = float_to_bf16(m.data()[i]);
  PEFT_CUDA_CHECK(cudaMemcpyAsync(dst, h.data(), h.size() * 2, cudaMemcpyHostToDevice, stream));
  PEFT_CUDA_CHECK(cudaStreamSynchronize(stream));  // h dies here
}

struct GemmContext {
  Gemm& gemm;
  cudaStream_t stream;
};

class CudaLinear {
 public:
  CudaLinear(std::string module, LinearShape s, bool adapter, int r, float scaling, float dropout)
      : module_(std::move(module)), shape_(s), adapter_(adapter), r_(r), rp_(adapter ? round_rank_up(r) : 0),
        scaling_(scaling), dropout_(dropout) {}

  // Weights first (all layers), then gradients (one contiguous block for zero_grad): two calls.
  void plan_weights(MemoryPlan& m) {
    w_ = m.take<bf16>(static_cast<std::size_t>(shape_.out) * shape_.in, "projection weight");
    if (shape_.bias) b_ = m.take<bf16>(static_cast<std::size_t>(shape_.out), "projection bias");
    if (!adapter_) return;
    a_ = m.take<float>(static_cast<std::size_t>(rp_) * shape_.in, "lora_A");
    bt_ = m.take<float>(static_cast<std::size_t>(rp_) * shape_.out, "lora_B");
    a16_ = m.take<bf16>(static_cast<std::size_t>(rp_) * shape_.in, "lora_A bf16");
    bt16_ = m.take<bf16>(static_cast<std::size_t>(rp_) * shape_.out, "lora_B bf16");
    if (m.allocating()) {  // zero until init_adapter or an adapter load (as the CPU layer)
      PEFT_CUDA_CHECK(cudaMemset(a_, 0, static_cast<std::size_t>(rp_) * shape_.in * 4));
      PEFT_CUDA_CHECK(cudaMemset(bt_, 0, static_cast<std::size_t>(rp_) * shape_.out * 4));
      PEFT_CUDA_CHECK(cudaMemset(a16_, 0, static_cast<std::size_t>(rp_) * shape_.in * 2));
      PEFT_CUDA_CHECK(cudaMemset(bt16_, 0, static_cast<std::size_t>(rp_) * shape_.out * 2));
    }
  }
  void plan_grads(MemoryPlan& m) {
    if (!adapter_) return;
    da_ = m.take<float>(static_cast<std::size_t>(rp_) * shape_.in, "lora_A grad");
    dbt_ = m.take<float>(static_cast<std::size_t>(rp_) * shape_.out, "lora_B grad");
  }

  void load(WeightSource& src, cudaStream_t stream) {
    Matrix w(shape_.out, shape_.in);
    src.read(module_ + ".weight", w);
    upload_bf16(w_, w, stream);
    if (shape_.bias) {
      Matrix b(1, shape_.out);
      src.read(module_ + ".bias", b);
      upload_bf16(b_, b, stream);
    }
  }
  // The frozen tensors as checkpoint destinations (weight_loader.cuh), in load()'s order.
  void base_weights(std::vector<WeightDestination>& out) const {
    out.push_back({module_ + ".weight", w_, {shape_.out, shape_.in}});
    if (shape_.bias) out.push_back({module_ + ".bias", b_, {shape_.out}});
  }
  // Random N(0, 1/in) weights and N(0, 0.02^2) bias (RandomWeights' recipe), drawn on the device.
  void fill_random(std::uint64_t seed, cudaStream_t stream) {
    fill_normal(w_, static_cast<long long>(shape_.out) * shape_.in, seed, 1.0f / std::sqrt(static_cast<float>(shape_.in)),
                stream);
    if (shape_.bias) fill_normal(b_, shape_.out, seed ^ 0x5bd1e995ull, 0.02f, stream);
  }

  // PEFT's init, the CPU layer's exact draws: A ~ U(-1/sqrt(in), 1/sqrt(in)) row-major, B = 0.
  void init_adapter(Rng& rng, cudaStream_t stream) {
    if (!adapter_) return;
    const float bound = 1.0f / std::sqrt(static_cast<float>(shape_.in));
    std::vector<float> a(static_cast<std::size_t>(rp_) * shape_.in, 0.0f);
    for (std::size_t i = 0; i < static_cast<std::size_t>(r_) * shape_.in; ++i) a[i] = rng.uniform(-bound, bound);
    PEFT_CUDA_CHECK(cudaMemcpyAsync(a_, a.data(), a.size() * 4, cudaMemcpyHostToDevice, stream));
    PEFT_CUDA_CHECK(cudaMemsetAsync(bt_, 0, static_cast<std::size_t>(rp_) * shape_.out * 4, stream));
    refresh_bf16(stream);
    PEFT_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  void refresh_bf16(cudaStream_t stream) {
    if (!adapter_) return;
    copy_to_bf16(a16_, a_, static_cast<long long>(rp_) * shape_.in, stream);
    copy_to_bf16(bt16_, bt_, static_cast<long long>(rp_) * shape_.out, stream);
  }

  void parameters(std::vector<DeviceParameter>& out) const {
    if (!adapter_) return;
    out.push_back({module_ + ".lora_A.weight", a_, da_, a16_, rp_, static_cast<int>(shape_.in), r_,
                   static_cast<int>(shape_.in), false});
    out.push_back({module_ + ".lora_B.weight", bt_, dbt_, bt16_, rp_, static_cast<int>(shape_.out),
                   static_cast<int>(shape_.out), r_, true});
  }

  // y [T, out] = x W^T + b + s * (drop(x) A^T) B^T. xa [T, rp] is kept for the backward;
  // drop_buf [T, in] is scratch when dropout is on (seed: a device scalar; null = no dropout).
  void forward(GemmContext c, const bf16* x, bf16* y, bf16* xa, bf16* drop_buf, int tokens,
               const std::uint64_t* seed) const {
    const int in = static_cast<int>(shape_.in), out = static_cast<int>(shape_.out);
    matmul_forward(c.gemm, y, x, w_, b_, tokens, out, in, c.stream);
    if (!adapter_) return;
    const bf16* xin = x;
    if (seed && dropout_ > 0.0f) {
      dropout_forward(drop_buf, x, static_cast<long long>(tokens) * in, seed, dropout_, c.stream);
      xin = drop_buf;
    }
    matmul_forward(c.gemm, xa, xin, a16_, nullptr, tokens, rp_, in, c.stream);  // xa = x A^T
    // y += s * xa B^T  (B^T stored [rp, out]: a plain [T, rp] x [rp, out] product)
    c.gemm.matmul(y, out, xa, rp_, false, bt16_, out, false, tokens, out, rp_, scaling_, 1.0f, nullptr, c.stream);
  }

  // dx (= or +=) dy W + (s dy B) A (masked by the forward's dropout); dA, dB^T accumulate.
  // dxa [T, rp] and drop_buf [T, in] are scratch.
  void backward(GemmContext c, const bf16* x, const bf16* dy, bf16* dx, bool accumulate, const bf16* xa, bf16* dxa,
                bf16* drop_buf, int tokens, const std::uint64_t* seed) const {
    const int in = static_cast<int>(shape_.in), out = static_cast<int>(shape_.out);
    matmul_backward_input(c.gemm, dx, dy, w_, tokens, out, in, c.stream, 1.0f, accumulate ? 1.0f : 0.0f);
    if (!adapter_) return;
    // dB^T [rp, out] += s * xa^T dy
    c.gemm.matmul(dbt_, out, xa, rp_, true, dy, out, false, rp_, out, tokens, scaling_, 1.0f, nullptr, c.stream);
    // dxa [T, rp] = s * dy B  (B = (B^T)^T: B^T [rp, out] read transposed)
    c.gemm.matmul(dxa, rp_, dy, out, false, bt16_, out, true, tokens, rp_, out, scaling_, 0.0f, nullptr, c.stream);
    const bool drop = seed && dropout_ > 0.0f;
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

  bool adapter() const { return adapter_; }
  int padded_rank() const { return rp_; }
  const LinearShape& shape() const { return shape_; }
  const std::string& module() const { return module_; }
  const bf16* weight() const { return w_; }
  // The decode step's one-row products read these directly (model/decode.cuh).
  const bf16* bias() const { return b_; }
  const bf16* lora_a_bf16() const { return a16_; }
  const bf16* lora_bt_bf16() const { return bt16_; }
  float scaling() const { return scaling_; }

 private:
  std::string module_;
  LinearShape shape_;
  bool adapter_;
  int r_, rp_;
  float scaling_, dropout_;
  bf16 *w_ = nullptr, *b_ = nullptr, *a16_ = nullptr, *bt16_ = nullptr;
  float *a_ = nullptr, *bt_ = nullptr, *da_ = nullptr, *dbt_ = nullptr;
};

}  // namespace peft::cuda
