// cuda::Linear<Full>: the weight (and bias) train. The fp32 master is the parameter; the GEMMs
// read its bf16 copy, which the optimizer refreshes after every update (the multi-tensor AdamW
// writes both), as a bf16 model holds its weight (the CPU Linear<Full, Bf16Mixed> rounds the same
// way). Gradients are fp32: dW += dy^T x by one GEMM with fp32 output (matmul_backward_weight),
// db += the column sums of dy (trained_weight.cuh).
#pragma once
#include "peft/core/rng.hpp"
#include "peft/kernels/cuda/trained_weight.cuh"
#include "peft/layers/cuda/linear.cuh"

namespace peft::cuda {

template <>
class Linear<Full> {
 public:
  Linear(std::string module, LinearShape s, const LoraConfig&) : base_{std::move(module), s} {}

  void plan_weights(MemoryPlan& m) {
    base_.plan(m);
    w32_ = m.take<float>(base_.numel(), "full weight master");
    if (base_.shape.bias) b32_ = m.take<float>(static_cast<std::size_t>(base_.shape.out), "full bias master");
  }
  void plan_grads(MemoryPlan& m) {
    dw_ = m.take<float>(base_.numel(), "full weight grad");
    if (base_.shape.bias) db_ = m.take<float>(static_cast<std::size_t>(base_.shape.out), "full bias grad");
  }

  // The fp32 values of the source become the masters (exactly the CPU layer's), the bf16 copy
  // their rounding.
  void load(WeightSource& src, cudaStream_t stream) {
    Matrix wm, bm;
    base_.read(src, wm, bm);
    upload_f32(w32_, wm, stream);
    if (base_.shape.bias) upload_f32(b32_, bm, stream);
    refresh_bf16(stream);
    PEFT_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  void base_weights(std::vector<WeightDestination>& out) const { base_.base_weights(out); }
  // After the loader (or fill_random) wrote the bf16 tensors directly: the masters are their values.
  void widen_masters(cudaStream_t stream) {
    copy_to_f32(w32_, base_.w, static_cast<long long>(base_.numel()), stream);
    if (base_.shape.bias) copy_to_f32(b32_, base_.b, base_.shape.out, stream);
  }
  void fill_random(std::uint64_t seed, cudaStream_t stream) {
    base_.fill_random(seed, stream);
    widen_masters(stream);
  }
  void init_adapter(Rng&, cudaStream_t) {}

  void parameters(std::vector<DeviceParameter>& out) const {
    const int in = static_cast<int>(base_.shape.in), o = static_cast<int>(base_.shape.out);
    out.push_back({base_.module + ".weight", w32_, dw_, base_.w, o, in, o, in, false, false});
    if (base_.shape.bias) out.push_back({base_.module + ".bias", b32_, db_, base_.b, 1, o, 1, o, false, true});
  }

  void forward(GemmContext c, const bf16* x, bf16* y, bf16*, bf16*, int tokens, const std::uint64_t*) const {
    weights().forward(c, x, y, nullptr, nullptr, tokens, nullptr);
  }
  // dx (= or +=) dy W (the bf16 copy); dW += dy^T x; db += sum_t dy.
  void backward(GemmContext c, const bf16* x, const bf16* dy, bf16* dx, bool accumulate, const bf16*, bf16*, bf16*,
                int tokens, const std::uint64_t*) const {
    const int in = static_cast<int>(base_.shape.in), out = static_cast<int>(base_.shape.out);
    base_.backward_input(c, dy, dx, accumulate, tokens);
    const ProfileScope base = c.part(StepPart::kBaseGemm);  // the weight gradient too
    matmul_backward_weight(c.gemm, dw_, dy, x, tokens, out, in, c.stream, 1.0f, 1.0f);
    if (base_.shape.bias) bias_grad_accumulate(db_, dy, tokens, out, c.stream);
  }

  ProjectionWeights weights() const { return base_.weights(); }
  int padded_rank() const { return 0; }
  bool reads_input_in_backward() const { return true; }  // dW needs x
  const std::string& module() const { return base_.module; }

 private:
  void refresh_bf16(cudaStream_t stream) {
    copy_to_bf16(base_.w, w32_, static_cast<long long>(base_.numel()), stream);
    if (base_.shape.bias) copy_to_bf16(base_.b, b32_, base_.shape.out, stream);
  }

  detail::DenseBase base_;
  float *w32_ = nullptr, *b32_ = nullptr, *dw_ = nullptr, *db_ = nullptr;
};

}  // namespace peft::cuda
