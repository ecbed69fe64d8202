// cuda::ModelWeight<Trainable>: a weight outside the seven projections (the token embedding, an
// RMSNorm weight, an untied lm_head) as the CUDA model holds it. The kernels always read a bf16
// copy; when the layout trains it (FullModel / --train_type full: train_embedding, train_norms,
// lm_head = Full) it also has an fp32 master, which the optimizer updates and then rounds into the
// bf16 copy, and an fp32 gradient, as cuda::Linear<Full> holds a projection's weight
// (full_linear.cuh). The CPU layers round the same way (Embedding, RmsNorm under Bf16Mixed).
// A frozen weight read only by row gathers (an untied embedding) may live in pinned host memory
// instead of the arena (plan_weights(m, true): kernels/cuda/host_mapped.cuh); its bf16_copy() is
// then the device alias of that memory, so every reader is unchanged.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "peft/kernels/cuda/host_mapped.cuh"
#include "peft/kernels/cuda/trained_weight.cuh"
#include "peft/layers/cuda/linear.cuh"

namespace peft::cuda {

template <bool Trainable>
class ModelWeight {
 public:
  // is_vector: a 1-D tensor in HF files (a norm weight), stored as one row here.
  ModelWeight(std::string name, std::int64_t rows, std::int64_t cols, bool is_vector)
      : name_(std::move(name)), rows_(rows), cols_(cols), is_vector_(is_vector) {}

  // on_host: pinned, mapped host memory (frozen only), allocated on the plan's allocating pass and
  // not counted in the arena.
  void plan_weights(MemoryPlan& m, bool on_host = false) {
    if (on_host) {
      if constexpr (Trainable) throw Error(name_ + ": a trained weight cannot live in host memory");
      if (m.allocating()) {
        host_ = HostMappedBuffer(host_bytes(), name_ + " (host embedding)",
                               "CudaModelOptions::embedding = EmbeddingHome::device keeps it on the GPU");
        w_ = static_cast<bf16*>(host_.device());
      }
      return;
    }
    w_ = m.take<bf16>(static_cast<std::size_t>(numel()), "model weight (bf16)");
    if constexpr (Trainable) w32_ = m.take<float>(static_cast<std::size_t>(numel()), "model weight master");
  }
  void plan_grads(MemoryPlan& m) {
    if constexpr (Trainable) dw_ = m.take<float>(static_cast<std::size_t>(numel()), "model weight grad");
  }
  // The fp32 values from a weight source: the master (when trained) and the bf16 copy's rounding.
  void upload(const Matrix& v, cudaStream_t stream) {
    if constexpr (Trainable) {
      upload_f32(w32_, v, stream);
      copy_to_bf16(w_, w32_, static_cast<long long>(numel()), stream);
    } else {
      upload_bf16(w_, v, stream);
    }
  }
  // After the loader (or a random fill) wrote the bf16 copy directly: the master takes its values.
  void widen_master(cudaStream_t stream) {
    if constexpr (Trainable) copy_to_f32(w32_, w_, static_cast<long long>(numel()), stream);
  }
  void parameters(std::vector<DeviceParameter>& out) const {
    if constexpr (Trainable) {
      const int r = static_cast<int>(rows_), c = static_cast<int>(cols_);
      out.push_back({name_, w32_, dw_, w_, r, c, r, c, false, is_vector_});
    }
  }
  WeightDestination destination() const {
    return {name_, w_, is_vector_ ? std::vector<std::int64_t>{cols_} : std::vector<std::int64_t>{rows_, cols_}};
  }

  bf16* bf16_copy() const { return w_; }
  float* grad() const { return dw_; }  // null when frozen: the kernels then skip the weight gradient
  long long numel() const { return static_cast<long long>(rows_) * cols_; }
  std::size_t host_bytes() const { return static_cast<std::size_t>(numel()) * sizeof(bf16); }

 private:
  std::string name_;
  std::int64_t rows_, cols_;
  bool is_vector_;
  bf16* w_ = nullptr;
  float *w32_ = nullptr, *dw_ = nullptr;
  HostMappedBuffer host_;  // the bf16 values when planned on the host
};

}  // namespace peft::cuda
