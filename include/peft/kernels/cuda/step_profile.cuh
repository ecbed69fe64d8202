// Where a training step's device time goes, by kind of work: CUDA event pairs recorded on the
// step's stream around each call (the layers open a scope through their GemmContext), summed per
// part after the step. Meant for an instrumented, eager run (a captured graph has no events
// between its kernels); with no profile attached a scope is one null test, so the ordinary step
// pays nothing. Time on the stream outside every scope (host gaps, uploads, synchronisation)
// is reported as "other/idle": the step's first-to-last event span minus the parts.
#pragma once
#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::cuda {

enum class StepPart { kBaseGemm, kLora, kAttention, kElementwise, kLmHeadCe, kOptimizer, kCount };

inline const char* step_part_name(StepPart p) {
  constexpr std::array<const char*, static_cast<std::size_t>(StepPart::kCount)> names{
      "base GEMMs", "LoRA branch", "attention", "elementwise (norms, RoPE, SwiGLU, residual, embedding)",
      "lm_head + cross entropy", "optimizer (clip, AdamW, zero_grad)"};
  return names[static_cast<std::size_t>(p)];
}

class StepProfile {
 public:
  static constexpr std::size_t kParts = static_cast<std::size_t>(StepPart::kCount);
  StepProfile() = default;
  ~StepProfile() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  StepProfile(const StepProfile&) = delete;
  StepProfile& operator=(const StepProfile&) = delete;

  // A step's span: every scope between these two is one step's.
  void step_begin(cudaStream_t s) {
    used_ = 0;
    spans_.clear();
    step_start_ = record(s);
  }
  void step_end(cudaStream_t s) { step_stop_ = record(s); }

  void begin(StepPart p, cudaStream_t s) { spans_.push_back({p, record(s), 0}); }
  void end(cudaStream_t s) { spans_.back().stop = record(s); }

  // Waits for the step and adds its parts (ms) to the running sums.
  void collect() {
    PEFT_CUDA_CHECK(cudaEventSynchronize(events_[step_stop_]));
    float total = 0;
    PEFT_CUDA_CHECK(cudaEventElapsedTime(&total, events_[step_start_], events_[step_stop_]));
    total_ms_ += total;
    for (const Span& sp : spans_) {
      float ms = 0;
      PEFT_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[sp.start], events_[sp.stop]));
      part_ms_[static_cast<std::size_t>(sp.part)] += ms;
    }
    ++steps_;
    scopes_ = spans_.size();
  }

  // Drops the sums (e.g. after a first step that created the events).
  void reset() {
    part_ms_ = {};
    total_ms_ = 0;
    steps_ = 0;
  }

  int steps() const { return steps_; }
  std::size_t scopes_per_step() const { return scopes_; }
  // Mean ms per step of a part, and of the whole step.
  double part_ms(StepPart p) const { return steps_ ? part_ms_[static_cast<std::size_t>(p)] / steps_ : 0.0; }
  double total_ms() const { return steps_ ? total_ms_ / steps_ : 0.0; }
  double other_ms() const {
    double parts = 0;
    for (std::size_t i = 0; i < kParts; ++i) parts += part_ms(static_cast<StepPart>(i));
    return total_ms() - parts;
  }

 private:
  struct Span {
    StepPart part;
    std::size_t start, stop;
  };
  // Events are reused from step to step (created on first need: outside any capture).
  std::size_t record(cudaStream_t s) {
    if (used_ == events_.size()) {
      cudaEvent_t e = nullptr;
      PEFT_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    PEFT_CUDA_CHECK(cudaEventRecord(events_[used_], s));
    return used_++;
  }

  std::vector<cudaEvent_t> events_;
  std::size_t used_ = 0, step_start_ = 0, step_stop_ = 0, scopes_ = 0;
  std::vector<Span> spans_;
  std::array<double, kParts> part_ms_{};
  double total_ms_ = 0;
  int steps_ = 0;
};

// RAII event pair around one part's calls; a null profile records nothing.
class ProfileScope {
 public:
  ProfileScope(StepProfile* p, StepPart part, cudaStream_t s) : p_(p), s_(s) {
    if (p_) p_->begin(part, s_);
  }
  ~ProfileScope() {
    if (p_) p_->end(s_);
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  StepProfile* p_;
  cudaStream_t s_;
};

}  // namespace peft::cuda
