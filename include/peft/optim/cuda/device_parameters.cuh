// The trainable parameters of a CUDA model as the trainer sees them, and the trainer's three
// optimizer calls for them. The trainer is written once for every backend: it asks the model
// for its parameter list, then calls clip_grad_norm(params, max), optimizer_init(opt, params),
// optimizer_step(opt, params, lr) and save_adamw_state(file, opt, params) unqualified. For a
// CUDA model the list is a DeviceParameters, so argument-dependent lookup lands here: the norm,
// the clip coefficient and the fused AdamW stay on the device (one launch each, no host copy of
// any parameter); only the norm, one float, comes back per step for the log. The host-side AdamW
// object contributes its hyper-parameters and step count; its moments live in the arena.
//
// Host copies happen only to save (adapter, optimizer state) and to load an adapter.
#pragma once
#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <memory>
#include <string>
#include <vector>

#include "peft/kernels/cuda/adamw.cuh"
#include "peft/kernels/cuda/global_norm.cuh"
#include "peft/layers/cuda/lora_linear.cuh"
#include "peft/core/parameter.hpp"
#include "peft/dist/communicator.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/optim/adamw.hpp"

namespace peft::cuda {

// What the optimizer calls need besides the tensors: the model's arena and stream, and the
// device-side norm and AdamW built at optimizer_init.
struct TrainingState {
  DeviceArena* arena = nullptr;
  cudaStream_t stream = nullptr;
  std::unique_ptr<GlobalGradNorm> norm;
  std::unique_ptr<MultiTensorAdamW> adamw;
  float* host_norm = nullptr;  // pinned
  bool clip_pending = false;
  // Where the optimizer's device state starts and ends in the arena: a second optimizer_init on
  // the same model (lr_epoch_sweep trains one loaded model cell after cell) gives it back first.
  std::size_t optimizer_begin = 0, optimizer_end = 0;
};

// Host copies of device parameters in PEFT's shapes: a ParameterList over owned matrices.
struct HostParameters {
  std::vector<Matrix> values;
  ParameterList list;
};

class DeviceParameters {
 public:
  DeviceParameters(std::vector<DeviceParameter> p, TrainingState* s) : params_(std::move(p)), state_(s) {}

  bool empty() const { return params_.empty(); }
  // Trainable values in PEFT's shapes (the rank padding not counted).
  std::int64_t numel() const {
    std::int64_t n = 0;
    for (const auto& p : params_) n += static_cast<std::int64_t>(p.hf_rows) * p.hf_cols;
    return n;
  }
  std::size_t size() const { return params_.size(); }
  const std::vector<DeviceParameter>& tensors() const { return params_; }
  TrainingState& state() const { return *state_; }

  // Copies the values (or, with `which`, any same-layout device array per tensor) to the host in
  // the HF shape ([r, in] for lora_A, [out, r] for lora_B).
  HostParameters to_host() const {
    return download([](const DeviceParameter& p, std::size_t) { return static_cast<const float*>(p.value); });
  }
  template <class Pick>
  HostParameters download(Pick pick) const {
    HostParameters h;
    h.values.reserve(params_.size());
    PEFT_CUDA_CHECK(cudaStreamSynchronize(state_->stream));
    std::vector<float> buf;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      buf.resize(static_cast<std::size_t>(p.numel()));
      PEFT_CUDA_CHECK(cudaMemcpy(buf.data(), pick(p, i), buf.size() * 4, cudaMemcpyDeviceToHost));
      Matrix m(p.hf_rows, p.hf_cols);
      for (int r = 0; r < p.hf_rows; ++r)
        for (int c = 0; c < p.hf_cols; ++c)
          m(r, c) = p.transposed ? buf[static_cast<std::size_t>(c) * p.cols + r] : buf[static_cast<std::size_t>(r) * p.cols + c];
      h.values.push_back(std::move(m));
    }
    for (std::size_t i = 0; i < params_.size(); ++i)
      h.list.push_back({params_[i].name, &h.values[i], nullptr, params_[i].is_vector});
    return h;
  }
  // Writes host values (HF shapes, same order) into the device masters and their bf16 copies.
  void upload(const ParameterList& host) const {
    require(host.size() == params_.size(), "upload of {} parameters into a model with {}", host.size(), params_.size());
    std::vector<float> buf;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      const Matrix& m = *host[i].value;
      require(host[i].name == p.name && m.rows() == p.hf_rows && m.cols() == p.hf_cols,
              "parameter {} ({} x {}) does not match the model's {} ({} x {})", host[i].name, m.rows(), m.cols(), p.name,
              p.hf_rows, p.hf_cols);
      buf.assign(static_cast<std::size_t>(p.numel()), 0.0f);
      for (int r = 0; r < p.hf_rows; ++r)
        for (int c = 0; c < p.hf_cols; ++c)
          (p.transposed ? buf[static_cast<std::size_t>(c) * p.cols + r] : buf[static_cast<std::size_t>(r) * p.cols + c]) =
              m(r, c);
      PEFT_CUDA_CHECK(cudaMemcpy(p.value, buf.data(), buf.size() * 4, cudaMemcpyHostToDevice));
      copy_to_bf16(p.value_bf16, p.value, p.numel(), state_->stream);
    }
    PEFT_CUDA_CHECK(cudaStreamSynchronize(state_->stream));
  }

 private:
  std::vector<DeviceParameter> params_;
  TrainingState* state_;
};

// ---- the trainer's calls ------------------------------------------------------------------------

// Sizes the device state: the grad-norm chunk table and AdamW's moments (zeroed), from the arena.
inline void optimizer_init(AdamW& opt, const DeviceParameters& params) {
  TrainingState& s = params.state();
  if (s.adamw) {
    // Only when nothing was taken after it (the arena is a stack); else the new state goes on top.
    s.norm.reset();
    s.adamw.reset();
    if (s.arena->used() == s.optimizer_end) s.arena->release(s.optimizer_begin);
  }
  s.optimizer_begin = s.arena->mark();
  std::vector<GradTensor> grads;
  std::vector<AdamWTensor> tensors;
  for (const auto& p : params.tensors()) {
    grads.push_back({p.grad, p.numel()});
    tensors.push_back({p.value, p.grad, p.value_bf16, p.numel(), true});  // torch AdamW decays every tensor
  }
  s.norm = std::make_unique<GlobalGradNorm>(*s.arena, grads);
  s.adamw = std::make_unique<MultiTensorAdamW>(
      *s.arena, tensors, AdamWHyper{opt.opt.beta1, opt.opt.beta2, opt.opt.eps, opt.opt.weight_decay});
  s.optimizer_end = s.arena->mark();
  opt.step_count = 0;
  opt.exp_avg.clear();
  opt.exp_avg_sq.clear();
  s.clip_pending = false;
}

// torch's clip_grad_norm_: the norm comes back for the log; the clip coefficient stays on the
// device and the next optimizer_step multiplies the gradients by it as it reads them.
inline double clip_grad_norm(const DeviceParameters& params, double max_norm) {
  TrainingState& s = params.state();
  require(s.norm != nullptr, "clip_grad_norm on CUDA parameters before optimizer_init");
  s.norm->compute(static_cast<float>(max_norm), s.stream);
  PEFT_CUDA_CHECK(cudaMemcpyAsync(s.host_norm, s.norm->norm(), sizeof(float), cudaMemcpyDeviceToHost, s.stream));
  PEFT_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  s.clip_pending = true;
  return static_cast<double>(*s.host_norm);
}

inline void optimizer_step(AdamW& opt, const DeviceParameters& params, double lr) {
  TrainingState& s = params.state();
  require(s.adamw != nullptr, "optimizer_step on CUDA parameters before optimizer_init");
  s.adamw->step(lr, s.clip_pending ? s.norm->clip_scale() : nullptr, s.stream);
  s.clip_pending = false;
  opt.step_count = s.adamw->step_count();
}

// The trainer's gradient all-reduce for a CUDA model (found by ADL, like clip_grad_norm; the
// transport is any Communicator with device sums, NCCL in practice): the
// gradients sorted by address and merged into contiguous spans - one span, one call, for the
// arena's single gradient block; the gaps between tensors are alignment padding (zeroed with
// the block, summed harmlessly). PEFT_CUDA_ARENA_DEBUG's separate allocations give one span each.
inline void all_reduce_grads(dist::Communicator& c, const DeviceParameters& params) {
  struct Span {
    char* begin;
    char* end;
  };
  std::vector<Span> spans;
  for (const auto& p : params.tensors())
    spans.push_back({reinterpret_cast<char*>(p.grad), reinterpret_cast<char*>(p.grad + p.numel())});
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  constexpr std::ptrdiff_t kMaxGap = 256;  // the arena's alignment
  std::vector<Span> merged;
  for (const auto& s : spans) {
    if (!merged.empty() && s.begin >= merged.back().end && s.begin - merged.back().end <= kMaxGap)
      merged.back().end = std::max(merged.back().end, s.end);
    else
      merged.push_back(s);
  }
  static bool told = false;  // once per process: the log says how the gradients travel
  if (!told && c.rank() == 0) {
    std::size_t values = 0;
    for (const auto& s : merged) values += static_cast<std::size_t>(s.end - s.begin) / sizeof(float);
    fmt::print(stderr, "[dist] gradient all-reduce: {} tensors, {} fp32 values ({:.1f} MB) in {} bucket(s)\n",
               params.size(), values, static_cast<double>(values) * 4e-6, merged.size());
    told = true;
  }
  for (const auto& s : merged)
    c.all_reduce_sum_device(reinterpret_cast<float*>(s.begin), static_cast<std::size_t>(s.end - s.begin) / sizeof(float),
                            params.state().stream);
}

// The moments under the same names and shapes as the CPU trainer writes (train/checkpoint.hpp).
// LoRA tensors are their own fp32 masters (the adapter file holds them exactly), so `masters`,
// which asks for the masters of non-LoRA tensors, has nothing to add here.
inline void save_adamw_state(const std::filesystem::path& file, const AdamW& opt, const DeviceParameters& params,
                             bool /*masters*/ = false) {
  TrainingState& s = params.state();
  require(s.adamw != nullptr, "save_adamw_state on CUDA parameters before optimizer_init");
  const auto& t = s.adamw->tensors();
  const HostParameters m = params.download([&](const DeviceParameter&, std::size_t i) { return t[i].exp_avg; });
  const HostParameters v = params.download([&](const DeviceParameter&, std::size_t i) { return t[i].exp_avg_sq; });
  SafetensorsWriter w;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto n = static_cast<std::size_t>(m.values[i].size());
    w.add_f32("exp_avg." + m.list[i].name, shape_of(m.values[i]), std::span<const float>(m.values[i].data(), n));
    w.add_f32("exp_avg_sq." + v.list[i].name, shape_of(v.values[i]), std::span<const float>(v.values[i].data(), n));
  }
  w.set_metadata("step", std::to_string(opt.step_count));
  w.write(file);
}

// Resume: the moments saved by save_adamw_state back into the device state, and the step count.
inline void load_adamw_state(const std::filesystem::path& file, AdamW& opt, const DeviceParameters& params) {
  TrainingState& s = params.state();
  require(s.adamw != nullptr, "load_adamw_state on CUDA parameters before optimizer_init");
  require(std::filesystem::exists(file), "{}: missing (checkpoint saved with --save_only_model?): cannot resume the "
          "optimizer", file.string());
  const auto st = SafetensorsFile::open(file);
  const auto& t = s.adamw->tensors();
  std::vector<float> buf;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const DeviceParameter& p = params.tensors()[i];
    for (const char* which : {"exp_avg.", "exp_avg_sq."}) {
      const std::string key = which + p.name;
      require(st.contains(key), "{}: no moments for '{}' (a checkpoint of another model or layout?)", file.string(),
              p.name);
      const auto v = st.read_f32(key, std::vector<std::int64_t>{p.hf_rows, p.hf_cols});
      buf.assign(static_cast<std::size_t>(p.numel()), 0.0f);
      for (int r = 0; r < p.hf_rows; ++r)
        for (int c = 0; c < p.hf_cols; ++c)
          (p.transposed ? buf[static_cast<std::size_t>(c) * p.cols + r] : buf[static_cast<std::size_t>(r) * p.cols + c]) =
              v[static_cast<std::size_t>(r) * p.hf_cols + c];
      float* dst = std::string(which) == "exp_avg." ? t[i].exp_avg : t[i].exp_avg_sq;
      PEFT_CUDA_CHECK(cudaMemcpy(dst, buf.data(), buf.size() * 4, cudaMemcpyHostToDevice));
    }
  }
  const auto it = st.metadata().find("step");
  require(it != st.metadata().end(), "{}: no 'step' in the metadata", file.string());
  opt.step_count = std::stoll(it->second);
  s.adamw->set_step_count(opt.step_count);
}

}  // namespace peft::cuda
