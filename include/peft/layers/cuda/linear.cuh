// cuda::Linear<Policy>: one projection y = x W^T (+ b) on the GPU, declared once here; each
// policy's implementation is a specialization in its own header, as on the CPU (layers/linear.hpp):
//   frozen_linear.cuh  Linear<Frozen>    bf16 W (+ b), no gradient buffers
//   lora_linear.cuh    Linear<Lora<R>>   frozen bf16 base + PEFT's LoRA branch (R: compile-time
//                                        rank, or kDynamicRank: --lora_rank at run time)
//   full_linear.cuh    Linear<Full>      fp32 master W (+ b) the optimizer updates, bf16 copy the
//                                        GEMMs read, fp32 dW (+ db)
// The second template argument is where the frozen base W lives: detail::DenseBase (bf16, below)
// or detail::Nf4FrozenBase (NF4, layers/cuda/nf4_base.cuh, for the Nf4Base precision: QLoRA);
// the policies hold it as `base_` and never look inside.
// Every specialization offers the same members, which the decoder layer (decoder_layer.cuh) calls:
//   Linear(module_path, LinearShape, const LoraConfig&)
//   plan_weights(MemoryPlan&), plan_grads(MemoryPlan&)   weights first (all layers), then gradients
//   load(WeightSource&, stream), base_weights(dests), widen_masters(stream), fill_random(seed, stream)
//   init_adapter(Rng&, stream), parameters(std::vector<DeviceParameter>&)
//   forward(ctx, x, y, xa, drop_buf, tokens, seed)       y overwritten
//   backward(ctx, x, dy, dx, accumulate, xa, dxa, drop_buf, tokens, seed)
//                                                        dx written (=) or added (+=); parameter
//                                                        gradients accumulate (+=, fp32)
//   weights()                                            what a forward reads (ProjectionWeights)
//   padded_rank(), reads_input_in_backward()
//
// The forward is the same for every policy once it has its bf16 operands, so it is written once,
// in ProjectionWeights (the generation path, models/cuda/decode.cuh, reads the same view).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "peft/core/dtype.hpp"
#include "peft/core/tensor.hpp"
#include "peft/io/cuda_weight_loader.cuh"
#include "peft/kernels/cuda/elementwise.cuh"
#include "peft/kernels/cuda/gemm.cuh"
#include "peft/kernels/cuda/lora_dropout.cuh"
#include "peft/kernels/cuda/lora_up_mma.cuh"
#include "peft/kernels/cuda/memory_plan.cuh"
#include "peft/kernels/cuda/nf4_gemm.cuh"
#include "peft/kernels/cuda/nf4_gemv.cuh"
#include "peft/kernels/cuda/nf4_tensor.cuh"
#include "peft/kernels/cuda/side_stream.cuh"
#include "peft/kernels/cuda/step_profile.cuh"
#include "peft/layers/linear.hpp"
#include "peft/layers/lora_kernels.hpp"
#include "peft/io/lora_config.hpp"
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
  bool is_vector = false;      // a bias: 1-D in HF files (Parameter::is_vector)
  std::int64_t numel() const { return static_cast<std::int64_t>(rows) * cols; }
  // The HF tensor is a contiguous prefix of the storage (in its transpose when `transposed`): its
  // rows span the storage's width, the rank padding's rows follow.
  bool hf_prefix() const { return cols == (transposed ? hf_rows : hf_cols); }
};

// Host <-> device conversions (setup and checkpoint time only).
inline void upload_bf16(bf16* dst, const Matrix& m, cudaStream_t stream) {
  std::vector<std::uint16_t> h(static_cast<std::size_t>(m.size()));
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = float_to_bf16(m.data()[i]);
  // Default (unified addressing): dst may also be mapped host memory (a host embedding).
  PEFT_CUDA_CHECK(cudaMemcpyAsync(dst, h.data(), h.size() * 2, cudaMemcpyDefault, stream));
  PEFT_CUDA_CHECK(cudaStreamSynchronize(stream));  // h dies here
}
inline void upload_f32(float* dst, const Matrix& m, cudaStream_t stream) {
  PEFT_CUDA_CHECK(
      cudaMemcpyAsync(dst, m.data(), static_cast<std::size_t>(m.size()) * 4, cudaMemcpyHostToDevice, stream));
  PEFT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

// weight_scratch: where a quantised base (NF4) is dequantised to bf16 right before its GEMM (or, at
// few tokens, where the fused NF4 GEMM puts its split reduction's partial sums), one
// projection at a time (the model plans one, the size of its largest projection; null when the
// base is bf16). Every use is on `stream`, so one projection's GEMM has read it before the next
// write overwrites it: the next dequantisation, or the dropout buffer that shares its memory
// (StepScratch, decoder_layer.cuh).
//
// profile: when set (an instrumented, eager step: bench/train_bench --breakdown), each call opens a
// ProfileScope for its kind of work (step_profile.cuh); null in every ordinary step.
// lora: how a LoRA branch runs (LoraKernels, layers/lora_kernels.hpp); the fastest by default.
//
// lora_beside (a training step's fused LoRA kernels, CudaModelOptions::lora_side_stream, up to
// kSideStreamMaxTokens): an adapter's x A^T and its backward's dB^T / dxa are arranged to run beside
// the base GEMM, on `side` (kernels/cuda/side_stream.cuh) or, when that is null (a profiled step),
// in the same order on `stream`: the same results either way.
struct GemmContext {
  Gemm& gemm;
  cudaStream_t stream;
  bf16* weight_scratch = nullptr;
  StepProfile* profile = nullptr;
  LoraKernels lora = LoraKernels::kFused;
  bool lora_beside = false;
  const SideStream* side = nullptr;

  ProfileScope part(StepPart p) const { return {profile, p, stream}; }
  // Where the passes beside the base GEMM go: the side stream after everything queued so far here
  // (join() waits for them), or this stream.
  GemmContext beside() const {
    return side ? GemmContext{side->gemm(), side->fork(stream), nullptr, nullptr, lora} : *this;
  }
  void join() const {
    if (side) side->join(stream);
  }
};

// Whether projection `l`'s backward joins c's side stream before it reads its input (LoRA over a
// bf16 base: lora_linear.cuh), so the layer may rebuild that input on the side stream.
template <class Lin>
bool runs_beside(const Lin& l, GemmContext c) {
  if constexpr (requires { l.runs_beside(c); })
    return l.runs_beside(c);
  else
    return false;
}

// Where an NF4 base's products run, by token count T (H200, 7B shapes; docs/qlora.md):
//   T <= 8 (decode, forward only)  nf4_gemv: the codes multiplied as they are read
//   T <= kNf4FusedMaxTokens        nf4_gemm: the codes decoded tile by tile inside a tensor-core
//                                  GEMM (forward and input gradient), the weight scratch only as
//                                  its split reduction's fp32 workspace
//   above                          dequantise into the weight scratch, then cuBLASLt
// The bound is where the fused GEMM stops beating dequantise + cuBLASLt summed over a layer's seven
// 7B projections (tests/cuda/test_nf4_gemm.cu's timing lines: H200, GPU time in a CUDA graph, us,
// fused vs dequantise + cuBLASLt, forward; input gradients alike): at T = 64 q/o 21.8 vs 18.6,
// k/v 11.2 vs 11.1, gate/up 78.8 vs 91.3, down 83.9 vs 97.0, a layer ~31 us faster; at T = 100 q/o
// 30.2 vs 19.4, k/v 12.8 vs 11.1, gate/up 109.7 vs 92.9, down 118.4 vs 98.4, ~79 us slower. Past
// a few dozen tokens the tensor-core work (mma.sync with the weight decode on the same SM, far
// below the H200's bf16 peak) is what costs, and cuBLASLt does it faster than the pass costs.
inline constexpr int kNf4FusedMaxTokens = 64;

// What a projection's forward reads: the base W [out, in] (+ b) in bf16, or in NF4 (see
// kNf4FusedMaxTokens for which kernel multiplies it), and, when it carries a LoRA adapter, A [rp, in] and
// B^T [rp, out] in bf16 (rp = 0: none). Pointers into the model's arena.
class ProjectionWeights {
 public:
  ProjectionWeights() = default;
  ProjectionWeights(LinearShape s, const bf16* w, const bf16* b, const bf16* a16 = nullptr, const bf16* bt16 = nullptr,
                    int rp = 0, float scaling = 0.0f, float dropout = 0.0f)
      : shape_(s), w_(w), b_(b), a16_(a16), bt16_(bt16), rp_(rp), scaling_(scaling), dropout_(dropout) {}
  // An NF4 base (the tensor is the layer's: its offset is set when the checkpoint loads).
  ProjectionWeights(LinearShape s, const Nf4DeviceTensor* w, const bf16* b) : shape_(s), nf4_(w), b_(b) {}
  // The same base with a LoRA adapter.
  ProjectionWeights with_adapter(const bf16* a16, const bf16* bt16, int rp, float scaling, float dropout) const {
    ProjectionWeights p = *this;
    p.a16_ = a16;
    p.bt16_ = bt16;
    p.rp_ = rp;
    p.scaling_ = scaling;
    p.dropout_ = dropout;
    return p;
  }

  // dx (= or +=) dy W for an NF4 base (Nf4FrozenBase::backward_input).
  void nf4_backward_input(GemmContext c, const bf16* dy, bf16* dx, float beta, int tokens) const {
    if (fused_nf4(tokens))
      nf4_gemm_input_grad(dx, dy, tokens, *nf4_, beta, fused_workspace(c), fused_workspace_bytes(c), c.stream);
    else
      matmul_backward_input(c.gemm, dx, dy, base_for_gemm(c), tokens, static_cast<int>(shape_.out),
                            static_cast<int>(shape_.in), c.stream, 1.0f, beta);
  }

  // y [T, out] = x W^T + b (+ s * (drop(x) A^T) B^T). xa [T, rp] is kept for the backward;
  // drop_buf [T, in] is scratch when dropout is on and not fused (seed: a device scalar; null = no
  // dropout).
  void forward(GemmContext c, const bf16* x, bf16* y, bf16* xa, bf16* drop_buf, int tokens,
               const std::uint64_t* seed) const {
    const int out = static_cast<int>(shape_.out);
    // NF4 at 1-8 tokens (decode): the codes multiplied as they are read (nf4_gemv.cuh); it writes
    // y, so the adapter's term is added after it.
    // Base first (y = x W^T + b, then the adapter adds onto it) without an adapter, for kSeparate, for
    // the GEMV, and with x A^T beside the base GEMM (c.lora_beside; not under NF4, whose weight
    // scratch shares drop_buf's memory); else the adapter's term first and the base GEMM
    // accumulates (beta 1), which spares y's read-modify-write.
    const bool gemv = nf4_ && nf4_gemv_fits(*nf4_, tokens);
    const bool beside = adapter() && c.lora_beside && !nf4_;
    const bool base_first = !adapter() || c.lora == LoraKernels::kSeparate || gemv || beside;
    if (beside) {
      const ProfileScope lora = c.part(StepPart::kLora);  // profiled only on one stream
      down_project(c.beside(), x, xa, drop_buf, tokens, seed);
    }
    if (base_first) {
      const ProfileScope base = c.part(StepPart::kBaseGemm);
      if (gemv)
        nf4_gemv(y, x, tokens, *nf4_, b_, c.stream);
      else
        base_product(c, x, y, tokens, 0.0f);
    }
    if (!adapter()) return;
    {
      const ProfileScope lora = c.part(StepPart::kLora);
      if (beside)
        c.join();
      else
        down_project(c, x, xa, drop_buf, tokens, seed);
      // y (+)= s * xa B^T  (B^T stored [rp, out]: a plain [T, rp] x [rp, out] product)
      if (up_on_tensor_cores(c, y))
        lora_up_forward(y, xa, bt16_, rp_, tokens, out, scaling_, base_first, c.stream);
      else
        c.gemm.matmul(y, out, xa, rp_, false, bt16_, out, false, tokens, out, rp_, scaling_, base_first ? 1.0f : 0.0f,
                      nullptr, c.stream);
    }
    if (base_first) return;
    const ProfileScope base = c.part(StepPart::kBaseGemm);
    base_product(c, x, y, tokens, 1.0f);  // y += x W^T + b
  }

  // Whether a step with this seed drops the adapter's input, and whether in the fused kernels
  // (dropout inside the LoRA passes, no dropout buffer). At padded rank 8 always; above it only on
  // tensor cores: the FMA kernels lose there to dropout + cuBLASLt (H200, 7B shapes at seq 2048,
  // rank 64: q_proj forward 90 vs 33 us, backward 109 vs 70; bench/RESULTS.md).
  bool drops(const std::uint64_t* seed) const { return adapter() && seed && dropout_ > 0.0f; }
  bool fuses_dropout(GemmContext c, const std::uint64_t* seed) const {
    if (!drops(seed) || c.lora != LoraKernels::kFused) return false;
    return rp_ == 8 ? lora_dropout_fusable(rp_) : lora_dropout_on_tensor_cores(rp_);
  }

  // Whether the up projection's products (y += s xa B^T; dB^T and dxa from dy) run on the
  // tensor-core kernels (lora_up_mma.cuh: at padded rank 8 and 16, where they win) rather than
  // cuBLASLt; y is y or dy.
  bool up_on_tensor_cores(GemmContext c, const bf16* y) const {
    return c.lora == LoraKernels::kFused && lora_up_wins(rp_) &&
           lora_up_fits(rp_, static_cast<int>(shape_.out), y, bt16_);
  }

  bool adapter() const { return rp_ > 0; }
  int padded_rank() const { return rp_; }
  const LinearShape& shape() const { return shape_; }
  const bf16* weight() const { return w_; }  // null for an NF4 base (quantised())
  bool quantised() const { return nf4_ != nullptr; }
  const bf16* bias() const { return b_; }
  const bf16* lora_a_bf16() const { return a16_; }
  const bf16* lora_bt_bf16() const { return bt16_; }
  float scaling() const { return scaling_; }

 private:
  // The bf16 W a GEMM on c.stream reads: the weight itself, or (NF4) its dequantisation into
  // c.weight_scratch, valid until the stream's next write there (see GemmContext).
  const bf16* base_for_gemm(GemmContext c) const {
    if (!nf4_) return w_;
    if (!c.weight_scratch)
      throw Error("an NF4 projection needs the model's weight scratch (GemmContext::weight_scratch is null)");
    dequantize_bf16(c.weight_scratch, *nf4_, c.stream);
    return c.weight_scratch;
  }
  // Whether an NF4 base's GEMMs at this token count run fused (nf4_gemm.cuh) instead.
  bool fused_nf4(int tokens) const { return nf4_ && tokens <= kNf4FusedMaxTokens && nf4_gemm_fits(*nf4_); }
  // The fused GEMM's split-reduction workspace: the weight scratch, which holds this projection in
  // bf16 (out x in x 2 bytes) on the dequantising path, so it has at least that room.
  float* fused_workspace(GemmContext c) const { return reinterpret_cast<float*>(c.weight_scratch); }
  std::size_t fused_workspace_bytes(GemmContext c) const {
    return c.weight_scratch ? static_cast<std::size_t>(shape_.out) * static_cast<std::size_t>(shape_.in) * 2 : 0;
  }
  // y = x W^T + b + beta y: fused (NF4 at kNf4FusedMaxTokens or fewer) or through cuBLASLt.
  void base_product(GemmContext c, const bf16* x, bf16* y, int tokens, float beta) const {
    const int in = static_cast<int>(shape_.in), out = static_cast<int>(shape_.out);
    if (fused_nf4(tokens))
      nf4_gemm_forward(y, x, tokens, *nf4_, b_, beta, fused_workspace(c), fused_workspace_bytes(c), c.stream);
    else
      matmul_forward(c.gemm, y, x, base_for_gemm(c), b_, tokens, out, in, c.stream, 1.0f, beta);
  }

  // xa [T, rp] = drop(x) A^T.
  void down_project(GemmContext c, const bf16* x, bf16* xa, bf16* drop_buf, int tokens, const std::uint64_t* seed) const {
    const int in = static_cast<int>(shape_.in);
    if (fuses_dropout(c, seed)) {  // drop_buf ([tokens, in] bf16, idle here) holds the row splits' partials
      lora_down_dropout(xa, x, a16_, rp_, tokens, in, seed, dropout_, c.stream, reinterpret_cast<float*>(drop_buf),
                        drop_buf ? static_cast<std::size_t>(tokens) * in / 2 : 0);
      return;
    }
    const bf16* xin = x;
    if (drops(seed)) {
      dropout_forward(drop_buf, x, static_cast<long long>(tokens) * in, seed, dropout_, c.stream);
      xin = drop_buf;
    }
    matmul_forward(c.gemm, xa, xin, a16_, nullptr, tokens, rp_, in, c.stream);
  }

  LinearShape shape_;
  const bf16* w_ = nullptr;
  const Nf4DeviceTensor* nf4_ = nullptr;
  const bf16 *b_ = nullptr, *a16_ = nullptr, *bt16_ = nullptr;
  int rp_ = 0;
  float scaling_ = 0.0f, dropout_ = 0.0f;
};

namespace detail {
struct DenseBase;
}  // namespace detail

template <LinearPolicy Policy, class Base = detail::DenseBase>
class Linear;

namespace detail {

// The bf16 base every policy holds: W [out, in] and the optional bias [out], by HF name.
struct DenseBase {
  std::string module;
  LinearShape shape;
  bf16 *w = nullptr, *b = nullptr;

  std::size_t numel() const { return static_cast<std::size_t>(shape.out) * static_cast<std::size_t>(shape.in); }
  void plan(MemoryPlan& m) {
    w = m.take<bf16>(numel(), "projection weight");
    if (shape.bias) b = m.take<bf16>(static_cast<std::size_t>(shape.out), "projection bias");
  }
  // Reads W (and b) in fp32 from the source; a caller keeping fp32 masters uploads these too.
  void read(WeightSource& src, Matrix& wm, Matrix& bm) const {
    wm.resize(shape.out, shape.in);
    src.read(module + ".weight", wm);
    if (shape.bias) {
      bm.resize(1, shape.out);
      src.read(module + ".bias", bm);
    }
  }
  void load(WeightSource& src, cudaStream_t stream) {
    Matrix wm, bm;
    read(src, wm, bm);
    upload_bf16(w, wm, stream);
    if (shape.bias) upload_bf16(b, bm, stream);
  }
  // The bf16 tensors as checkpoint destinations (weight_loader.cuh), in load()'s order.
  void base_weights(std::vector<WeightDestination>& out) const {
    out.push_back({module + ".weight", w, {shape.out, shape.in}});
    if (shape.bias) out.push_back({module + ".bias", b, {shape.out}});
  }
  // Random N(0, 1/in) weights and N(0, 0.02^2) bias (RandomWeights' recipe), drawn on the device.
  void fill_random(std::uint64_t seed, cudaStream_t stream) {
    fill_normal(w, static_cast<long long>(numel()), seed, 1.0f / std::sqrt(static_cast<float>(shape.in)), stream);
    fill_bias(seed, stream);
  }
  void fill_bias(std::uint64_t seed, cudaStream_t stream) {
    if (shape.bias) fill_normal(b, shape.out, seed ^ 0x5bd1e995ull, 0.02f, stream);
  }
  // dx (= or +=) dy W.
  void backward_input(GemmContext c, const bf16* dy, bf16* dx, bool accumulate, int tokens) const {
    const ProfileScope base = c.part(StepPart::kBaseGemm);
    matmul_backward_input(c.gemm, dx, dy, w, tokens, static_cast<int>(shape.out), static_cast<int>(shape.in), c.stream,
                          1.0f, accumulate ? 1.0f : 0.0f);
  }
  ProjectionWeights weights() const { return {shape, w, b}; }
};

}  // namespace detail
}  // namespace peft::cuda
