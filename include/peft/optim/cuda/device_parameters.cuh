// The trainable parameters of a CUDA model as the trainer sees them, and the backend hooks that
// do not depend on the optimizer (train/backend_hooks.hpp lists them all). The trainer is written
// once for every backend: it asks the model for its parameter list and calls the hooks
// unqualified. For a CUDA model the list is a DeviceParameters, so argument-dependent lookup
// lands here (clip_grad_norm, all_reduce_grads) and in each optimizer's own file
// (optim/cuda/adamw.cuh, optim/cuda/sgd.cuh): the norm, the clip coefficient and the fused update
// stay on the device (one launch each, no host copy of any parameter); only the norm, one float,
// comes back per step for the log. The host optimizer object contributes its hyper-parameters and
// step count; its buffers live in the arena.
//
// Host copies happen only to save (adapter, optimizer state) and to load (adapter, resume).
#pragma once
#include <algorithm>
#include <concepts>
#include <filesystem>
#include <fmt/format.h>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "peft/kernels/cuda/adamw.cuh"
#include "peft/kernels/cuda/global_norm.cuh"
#include "peft/kernels/cuda/host_mapped.cuh"
#include "peft/kernels/cuda/memory_plan.cuh"
#include "peft/kernels/cuda/multi_tensor.cuh"
#include "peft/layers/cuda/lora_linear.cuh"
#include "peft/core/parallel_map.hpp"
#include "peft/core/parameter.hpp"
#include "peft/dist/communicator.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/optim/state_file.hpp"

namespace peft::cuda {

// Pinned staging that holds every download of a checkpoint at once (values and the optimizer's
// buffers), and the event after the copies into it: DeviceParameters::stage_downloads.
struct SnapshotStaging {
  HostMappedBuffer buffer;
  cudaEvent_t copied = nullptr;
  explicit SnapshotStaging(std::size_t bytes) : buffer(bytes, "checkpoint snapshot staging") {
    PEFT_CUDA_CHECK(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
  }
  ~SnapshotStaging() {
    if (copied) cudaEventDestroy(copied);  // no throw from a destructor
  }
  SnapshotStaging(const SnapshotStaging&) = delete;
  SnapshotStaging& operator=(const SnapshotStaging&) = delete;
};

// What the optimizer calls need besides the tensors: the model's arena and stream, and the
// device-side norm and optimizer (the one --optim chose) built at optimizer_init.
struct TrainingState {
  DeviceArena* arena = nullptr;
  cudaStream_t stream = nullptr;
  std::unique_ptr<GlobalGradNorm> norm;
  std::unique_ptr<MultiTensorOptimizer> optimizer;  // the fused update --optim chose
  float* host_norm = nullptr;  // pinned
  HostMappedBuffer staging;    // pinned: checkpoint downloads (DeviceParameters::download), grown on demand
  float* staging_floats(std::size_t n) {
    if (staging.bytes() < n * 4) staging = HostMappedBuffer(n * 4, "checkpoint download staging");
    return static_cast<float*>(staging.host());
  }
  // A checkpoint's downloads all at once, when they fit in kSnapshotStagingLimit (end_optimizer_state):
  // rank 32's 0.97 GB at 7B does, rank 64's 1.9 GB is downloaded at the save instead.
  std::unique_ptr<SnapshotStaging> snapshot;
  static constexpr std::size_t kSnapshotStagingLimit = std::size_t{1} << 30;
  bool clip_pending = false;
  // Where the optimizer's device state starts and ends in the arena: a second optimizer_init on
  // the same model (lr_epoch_sweep trains one loaded model cell after cell) gives it back first.
  std::size_t optimizer_begin = 0, optimizer_end = 0;
};

// Host copies of device parameters in PEFT's shapes: a ParameterList over owned matrices.
using peft::HostParameters;

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
  // A checkpoint downloads every trained tensor three times (values and two moments): the tensors'
  // storage goes by asynchronous copies into pinned staging (TrainingState::staging), up to
  // `staging_bytes` a batch with one wait each, then into host matrices in HF's shape (a prefix of
  // the storage as it is, lora_B transposed, a padded tensor row by row). A tensor larger than the
  // staging is copied by itself through pageable memory (full training's embedding: 2 GB at 7B).
  static constexpr std::size_t kStagingBytes = std::size_t{256} << 20;
  // The staging a download of these tensors takes, allocated now (optimizer_init: set-up, not a step).
  void reserve_staging() const { state_->staging_floats(std::min(total_copied_floats(), kStagingBytes / 4)); }
  template <class Pick>
  HostParameters download(Pick pick, std::size_t staging_bytes = kStagingBytes) const {
    HostParameters h;
    h.values.resize(params_.size());
    PEFT_CUDA_CHECK(cudaStreamSynchronize(state_->stream));
    const std::size_t stage_floats = std::min(total_copied_floats(), staging_bytes / 4);
    std::size_t first = 0;   // the batch: tensors [first, i)
    std::size_t staged = 0;  // its floats
    auto flush = [&](std::size_t end) {
      PEFT_CUDA_CHECK(cudaStreamSynchronize(state_->stream));
      const float* stage = state_->staging_floats(0);
      for (std::size_t off = 0; first < end; off += copied_floats(params_[first]), ++first)
        h.values[first] = to_hf_shape(params_[first], stage + off);
      staged = 0;
    };
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const std::size_t n = copied_floats(params_[i]);
      if (n * 4 > staging_bytes) {  // alone, through pageable memory
        flush(i);
        std::vector<float> buf(n);
        PEFT_CUDA_CHECK(cudaMemcpy(buf.data(), pick(params_[i], i), n * 4, cudaMemcpyDeviceToHost));
        h.values[i] = to_hf_shape(params_[i], buf.data());
        first = i + 1;
        continue;
      }
      if ((staged + n) * 4 > staging_bytes) flush(i);
      float* stage = state_->staging_floats(stage_floats);  // grows only here, before a batch's first copy
      PEFT_CUDA_CHECK(cudaMemcpyAsync(stage + staged, pick(params_[i], i), n * 4, cudaMemcpyDeviceToHost,
                                      state_->stream));
      staged += n;
    }
    flush(params_.size());
    h.name_values(params_);
    return h;
  }
  // A checkpoint's downloads at once, without a wait (take_checkpoint_tensors): sources[k][i] is
  // the k-th download's array for tensor i (the values, then each optimizer buffer). The copies go
  // into TrainingState's snapshot staging on the model's stream, in order before the steps queued
  // after them, and an event follows them. What comes back, run once on any thread (the trainer's
  // write thread), waits for that event and makes each download's HF-shaped host matrices as
  // download does. The staging is its until then: the trainer takes the next checkpoint only after
  // the write before it is done. Empty when the staging was not made or is too small for them.
  std::function<std::vector<std::vector<Matrix>>()> stage_downloads(
      const std::vector<std::vector<const float*>>& sources) const {
    SnapshotStaging* stage = state_->snapshot.get();
    const std::size_t per_download = total_copied_floats();
    if (!stage || sources.size() * per_download * 4 > stage->buffer.bytes()) return {};
    float* dst = static_cast<float*>(stage->buffer.host());
    for (const auto& download : sources)
      for (std::size_t i = 0; i < params_.size(); ++i) {
        const std::size_t n = copied_floats(params_[i]);
        PEFT_CUDA_CHECK(cudaMemcpyAsync(dst, download[i], n * 4, cudaMemcpyDeviceToHost, state_->stream));
        dst += n;
      }
    PEFT_CUDA_CHECK(cudaEventRecord(stage->copied, state_->stream));
    int device = 0;
    PEFT_CUDA_CHECK(cudaGetDevice(&device));
    return [stage, device, params = params_, downloads = sources.size(), per_download] {
      PEFT_CUDA_CHECK(cudaSetDevice(device));  // a fresh thread's current device is the first
      PEFT_CUDA_CHECK(cudaEventSynchronize(stage->copied));
      // On all cores: one thread took ~40 ms a download at 7B rank 8 (new pages and transposes; the
      // development machine), and the run waits for its last checkpoint (bench/RESULTS.md).
      std::vector<std::size_t> offset(params.size(), 0);
      for (std::size_t i = 1; i < params.size(); ++i) offset[i] = offset[i - 1] + copied_floats(params[i - 1]);
      const float* base = static_cast<const float*>(stage->buffer.host());
      std::vector<Matrix> flat = parallel_map(downloads * params.size(), worker_threads(), [&](std::size_t j) {
        const std::size_t k = j / params.size(), i = j % params.size();
        return to_hf_shape(params[i], base + k * per_download + offset[i]);
      });
      std::vector<std::vector<Matrix>> host(downloads);
      for (std::size_t j = 0; j < flat.size(); ++j) host[j / params.size()].push_back(std::move(flat[j]));
      return host;
    };
  }
  // The snapshot staging for `downloads` downloads, made now (optimizer_init: set-up, not a step)
  // when they fit in TrainingState::kSnapshotStagingLimit; a staging already large enough is kept.
  void reserve_snapshot_staging(std::size_t downloads) const {
    const std::size_t bytes = downloads * total_copied_floats() * 4;
    if (bytes > TrainingState::kSnapshotStagingLimit || (state_->snapshot && state_->snapshot->buffer.bytes() >= bytes)) return;
    state_->snapshot.reset();
    state_->snapshot = std::make_unique<SnapshotStaging>(bytes);
  }

  // Writes host values (HF shapes, same order) into the device masters and their bf16 copies.
  void upload(const ParameterList& host) const {
    require(host.size() == params_.size(), "upload of {} parameters into a model with {}", host.size(), params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      const Matrix& m = *host[i].value;
      require(host[i].name == p.name && m.rows() == p.hf_rows && m.cols() == p.hf_cols,
              "parameter {} ({} x {}) does not match the model's {} ({} x {})", host[i].name, m.rows(), m.cols(), p.name,
              p.hf_rows, p.hf_cols);
    }
    std::vector<Matrix> values;
    for (const auto& h : host) values.push_back(*h.value);
    upload_into(values, [](const DeviceParameter& p, std::size_t) { return p.value; });
    for (const auto& p : params_) copy_to_bf16(p.value_bf16, p.value, p.numel(), state_->stream);
    PEFT_CUDA_CHECK(cudaStreamSynchronize(state_->stream));
  }
  // Writes host matrices (HF shapes, same order) into any same-layout device array per tensor
  // (`pick`, as download's); the rank padding gets zeros.
  template <class Pick>
  void upload_into(const std::vector<Matrix>& host, Pick pick) const {
    std::vector<float> buf;
    PEFT_CUDA_CHECK(cudaStreamSynchronize(state_->stream));
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      const Matrix& m = host[i];
      buf.assign(static_cast<std::size_t>(p.numel()), 0.0f);
      for (int r = 0; r < p.hf_rows; ++r)
        for (int c = 0; c < p.hf_cols; ++c)
          (p.transposed ? buf[static_cast<std::size_t>(c) * p.cols + r] : buf[static_cast<std::size_t>(r) * p.cols + c]) =
              m(r, c);
      PEFT_CUDA_CHECK(cudaMemcpy(pick(p, i), buf.data(), buf.size() * 4, cudaMemcpyHostToDevice));
    }
  }

 private:
  // What download copies of a tensor: the HF-shaped prefix where it is one, else all its storage.
  static std::size_t copied_floats(const DeviceParameter& p) {
    return static_cast<std::size_t>(p.hf_prefix() ? static_cast<std::int64_t>(p.hf_rows) * p.hf_cols : p.numel());
  }
  std::size_t total_copied_floats() const {
    std::size_t n = 0;
    for (const auto& p : params_) n += copied_floats(p);
    return n;
  }
  // The HF-shaped matrix of a tensor's copied floats.
  static Matrix to_hf_shape(const DeviceParameter& p, const float* src) {
    if (p.hf_prefix() && !p.transposed) return ConstMatrixMap(src, p.hf_rows, p.hf_cols);
    if (p.hf_prefix()) return ConstMatrixMap(src, p.hf_cols, p.hf_rows).transpose();
    Matrix m(p.hf_rows, p.hf_cols);
    for (int r = 0; r < p.hf_rows; ++r)
      for (int c = 0; c < p.hf_cols; ++c)
        m(r, c) = p.transposed ? src[static_cast<std::size_t>(c) * p.cols + r] : src[static_cast<std::size_t>(r) * p.cols + c];
    return m;
  }

  std::vector<DeviceParameter> params_;
  TrainingState* state_;
};

// ---- the hooks every optimizer shares --------------------------------------------------------

// Counts the optimizer's device memory in a model's plan, before the optimizer exists (its
// optimizer_init takes it from the arena later): two fp32 moments a parameter, each 256-byte
// aligned, and the grad norm's and the fused update's chunk tables (one entry per 16K values each,
// and a partial sum: 18 MB for a 7B model's fully trained MLPs, more than the arena's slack).
inline void count_optimizer_state(MemoryPlan& m, const DeviceParameters& params) {
  std::size_t moments = 0, chunks = 0;
  for (const auto& p : params.tensors()) {
    moments += 2 * (static_cast<std::size_t>(p.numel()) * 4 + 256);
    chunks += static_cast<std::size_t>((p.numel() + ChunkTable::kChunkElements - 1) / ChunkTable::kChunkElements);
  }
  m.take<char>(moments, "AdamW moments");
  m.take<char>(chunks * (2 * sizeof(TensorChunk) + sizeof(float)) +
                   params.tensors().size() * (sizeof(AdamWTensor) + sizeof(GradTensor)) + 5 * 256,
               "optimizer chunk tables");
}

// The start of every optimizer_init: a second one on the same model (lr_epoch_sweep trains one
// loaded model cell after cell) gives the previous optimizer's device state back first (only when
// nothing was taken after it: the arena is a stack; else the new state goes on top), then the
// grad-norm chunk table is built. The optimizer then takes its buffers, and end_optimizer_state
// marks where they end.
inline TrainingState& begin_optimizer_state(const DeviceParameters& params) {
  TrainingState& s = params.state();
  if (s.norm) {
    s.norm.reset();
    s.optimizer.reset();
    if (s.arena->used() == s.optimizer_end) s.arena->release(s.optimizer_begin);
  }
  s.optimizer_begin = s.arena->mark();
  std::vector<GradTensor> grads;
  for (const auto& p : params.tensors()) grads.push_back({p.grad, p.numel()});
  s.norm = std::make_unique<GlobalGradNorm>(*s.arena, grads);
  return s;
}
// The pinned staging a checkpoint goes through is made here too: all of it at once when it fits
// (take_checkpoint_tensors), else one batch of downloads (DeviceParameters::download).
inline void end_optimizer_state(const DeviceParameters& params) {
  TrainingState& s = params.state();
  s.optimizer_end = s.arena->mark();
  s.clip_pending = false;
  params.reserve_snapshot_staging(1 + s.optimizer->buffers().size());
  if (!s.snapshot) params.reserve_staging();
}

// torch's clip_grad_norm_: the norm comes back for the log; the clip coefficient stays on the
// device and the next optimizer step multiplies the gradients by it as it reads them.
inline double clip_grad_norm(const DeviceParameters& params, double max_norm) {
  TrainingState& s = params.state();
  require(s.norm != nullptr, "clip_grad_norm on CUDA parameters before optimizer_init");
  s.norm->compute(static_cast<float>(max_norm), s.stream);
  PEFT_CUDA_CHECK(cudaMemcpyAsync(s.host_norm, s.norm->norm(), sizeof(float), cudaMemcpyDeviceToHost, s.stream));
  PEFT_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  s.clip_pending = true;
  return static_cast<double>(*s.host_norm);
}

// The clip coefficient for this step's update (null: no clip_grad_norm since the last update).
inline const float* take_clip_scale(TrainingState& s) {
  const float* scale = s.clip_pending ? s.norm->clip_scale() : nullptr;
  s.clip_pending = false;
  return scale;
}

// Resume: the buffers a checkpoint saved (on either backend) back onto the device.
inline std::int64_t load_device_optimizer_state(const std::filesystem::path& file, const DeviceParameters& params,
                                                const std::vector<OptimizerBuffer>& buffers) {
  const HostParameters shapes = params.to_host();
  std::vector<std::vector<Matrix>> host(buffers.size(), shapes.values);
  std::vector<LoadedBuffers> loaded;
  for (std::size_t k = 0; k < buffers.size(); ++k) loaded.push_back({buffers[k].name, &host[k]});
  const std::int64_t step = read_optimizer_state(file, loaded, shapes.list);
  for (std::size_t k = 0; k < buffers.size(); ++k)
    params.upload_into(host[k], [&](const DeviceParameter&, std::size_t i) { return buffers[k].per_tensor[i]; });
  return step;
}

// The optimizer hooks once optimizer_init has built the fused update (each optimizer's own file,
// optim/cuda/adamw.cuh or sgd.cuh, adds only its optimizer_init): the step, and the checkpoint of
// its buffers under the names its host twin writes, so a checkpoint resumes on either backend.
// Opt is the host optimizer: it keeps the hyper-parameters and the step count.
template <class Opt>
  requires std::same_as<decltype(Opt::step_count), std::int64_t>
MultiTensorOptimizer& fused_optimizer(const Opt&, const DeviceParameters& params, const char* hook) {
  require(params.state().optimizer != nullptr, "{} on CUDA parameters before optimizer_init", hook);
  return *params.state().optimizer;
}

template <class Opt>
void optimizer_step(Opt& opt, const DeviceParameters& params, double lr) {
  MultiTensorOptimizer& fused = fused_optimizer(opt, params, "optimizer_step");
  TrainingState& s = params.state();
  fused.step(lr, take_clip_scale(s), s.stream);
  opt.step_count = fused.step_count();
}

// A checkpoint's copies of a CUDA model's trained values and optimizer state, taken at this step
// (train/trainer.hpp writes them while training goes on).
inline HostParameters snapshot_parameters(const DeviceParameters& params) { return params.to_host(); }
template <class Opt>
OptimizerSnapshot snapshot_optimizer_state(const Opt& opt, const DeviceParameters& params) {
  OptimizerSnapshot snap{.step = opt.step_count};
  for (const auto& b : fused_optimizer(opt, params, "snapshot_optimizer_state").buffers()) {
    snap.names.push_back(b.name);
    snap.buffers.push_back(
        params.download([&](const DeviceParameter&, std::size_t i) { return b.per_tensor[i]; }).values);
  }
  return snap;
}

// The trainer's checkpoint of a CUDA model (train/backend_hooks.hpp): the values and, with
// `moments`, the optimizer's buffers, queued for the host in one go when the snapshot staging
// holds them, so the steps go on at once and the copies arrive on the write thread (optim/
// state_file.hpp's CheckpointTensors); otherwise downloaded now.
template <class Opt>
CheckpointTensors take_checkpoint_tensors(const Opt& opt, const DeviceParameters& params, bool moments) {
  OptimizerSnapshot shell{.step = opt.step_count};
  std::vector<std::vector<const float*>> sources(1);
  for (const auto& p : params.tensors()) sources[0].push_back(p.value);
  if (moments)
    for (const auto& b : fused_optimizer(opt, params, "take_checkpoint_tensors").buffers()) {
      shell.names.push_back(b.name);
      sources.emplace_back(b.per_tensor.begin(), b.per_tensor.end());
    }
  auto later = params.stage_downloads(sources);
  if (!later) {
    CheckpointTensors now{.values = snapshot_parameters(params)};
    if (moments) now.moments = snapshot_optimizer_state(opt, params);
    return now;
  }
  CheckpointTensors t;
  t.arrive = [later = std::move(later), shell = std::move(shell), moments, like = params.tensors()](
                 CheckpointTensors& c) mutable {
    std::vector<std::vector<Matrix>> host = later();
    c.values.values = std::move(host[0]);
    c.values.name_values(like);
    if (!moments) return;
    for (std::size_t k = 1; k < host.size(); ++k) shell.buffers.push_back(std::move(host[k]));
    c.moments = std::move(shell);
  };
  return t;
}

// Saves the buffers through the same writer as the host optimizers (optim/state_file.hpp); the
// values give the names, and the masters when asked.
template <class Opt>
void save_optimizer_state(const std::filesystem::path& file, const Opt& opt, const DeviceParameters& params,
                          bool masters = false) {
  snapshot_optimizer_state(opt, params).write(file, snapshot_parameters(params).list, masters);
}

template <class Opt>
void load_optimizer_state(const std::filesystem::path& file, Opt& opt, const DeviceParameters& params) {
  MultiTensorOptimizer& fused = fused_optimizer(opt, params, "load_optimizer_state");
  opt.step_count = load_device_optimizer_state(file, params, fused.buffers());
  fused.set_step_count(opt.step_count);
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

}  // namespace peft::cuda
