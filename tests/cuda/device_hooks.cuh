// The backend hooks a CUDA model's trainer calls (train/backend_hooks.hpp), driven here on a
// hand-built DeviceParameters, so each optimizer's test holds them to its CPU oracle without a
// model: two tensors (the second stored transposed, as lora_B), optimizer_init, then per step
// fresh gradients, clip_grad_norm and optimizer_step (found by argument-dependent lookup, as the
// trainer finds them); after `resume_after` steps the state goes through save_optimizer_state,
// a fresh optimizer_init drops it, and load_optimizer_state brings it back. At that step the
// trainer's checkpoint copies (take_checkpoint_tensors) are also taken twice, staged (queued
// copies that arrive after the step has changed the device's tensors) and without the staging
// (downloaded at once): each must hold the values and buffers of the step it was taken at, bit for
// bit as download gives them.
#pragma once
#include <algorithm>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test.cuh"
#include "peft/io/safetensors.hpp"
#include "peft/optim/cuda/adamw.cuh"
#include "peft/optim/cuda/sgd.cuh"

namespace peft::cuda_test {

struct HookRun {
  std::vector<Floats> init;                 // values before training, storage layout
  std::vector<std::vector<Floats>> grads;   // [step][tensor]
  std::vector<float> clip;                  // the CPU's clip coefficient per step
  std::vector<Floats> trained;              // values after every step, from the device
  std::vector<std::string> saved_names;     // the checkpoint's tensor names
  std::int64_t restored_step = 0;           // the step count load_optimizer_state gave back
  bool staged = false;                      // the checkpoint's copies came through the snapshot staging
  bool staged_exact = false, unstaged_exact = false;  // each held its step's tensors
};

// Whether a checkpoint's tensors equal the copies download made at the same step.
inline bool same_tensors(const CheckpointTensors& got, const HostParameters& values, const OptimizerSnapshot& moments) {
  bool same = got.values.values.size() == values.values.size() && got.values.list.size() == values.list.size() &&
              got.moments && got.moments->names == moments.names && got.moments->step == moments.step &&
              got.moments->buffers.size() == moments.buffers.size();
  for (std::size_t i = 0; same && i < values.values.size(); ++i)
    same = got.values.list[i].name == values.list[i].name && got.values.values[i] == values.values[i];
  for (std::size_t k = 0; same && k < moments.buffers.size(); ++k)
    for (std::size_t i = 0; same && i < moments.buffers[k].size(); ++i)
      same = got.moments->buffers[k][i] == moments.buffers[k][i];
  return same;
}

template <class Opt>
HookRun run_hooks_with_checkpoint(TestContext& t, cuda::DeviceArena& arena, Opt opt, const std::vector<double>& lrs,
                                  int resume_after, double max_norm) {
  cudaStream_t stream;
  PEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cuda::TrainingState st;
  st.arena = &arena;
  st.stream = stream;
  PEFT_CUDA_CHECK(cudaMallocHost(&st.host_norm, sizeof(float)));
  HookRun run;
  const std::vector<std::pair<int, int>> shapes = {{8, 40}, {8, 24}};  // storage [rows, cols]
  std::vector<cuda::DeviceParameter> ps;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const auto [rows, cols] = shapes[i];
    run.init.push_back(t.normal_f32(static_cast<std::size_t>(rows * cols), 0.1f));
    cuda::DeviceParameter p;
    p.name = "layer.t" + std::to_string(i) + ".lora_" + (i == 0 ? "A" : "B") + ".weight";
    p.value = upload_f32(arena, run.init.back());
    p.grad = arena.alloc<float>(run.init.back().size(), "grad");
    p.value_bf16 = arena.alloc<cuda::bf16>(run.init.back().size(), "bf16");
    p.rows = rows, p.cols = cols;
    p.transposed = i == 1;
    p.hf_rows = p.transposed ? cols : rows;
    p.hf_cols = p.transposed ? rows : cols;
    ps.push_back(p);
  }
  const cuda::DeviceParameters params(ps, &st);
  for (std::size_t s = 0; s < lrs.size(); ++s) {
    run.grads.emplace_back();
    for (const auto& v : run.init) run.grads.back().push_back(t.normal_f32(v.size(), 0.05f));
    run.clip.push_back(static_cast<float>(std::min(1.0, max_norm / (ref_global_norm(run.grads.back()) + 1e-6))));
  }
  optimizer_init(opt, params);
  const auto file = std::filesystem::temp_directory_path() / "peft_cuda_test_optimizer.safetensors";
  CheckpointTensors staged, unstaged;
  HostParameters values_then;
  OptimizerSnapshot moments_then;
  for (std::size_t s = 0; s < lrs.size(); ++s) {
    const bool at_checkpoint = static_cast<int>(s) == resume_after;
    if (at_checkpoint) {
      save_optimizer_state(file, opt, params);
      optimizer_init(opt, params);  // the state is gone ...
      load_optimizer_state(file, opt, params);  // ... and back
      run.restored_step = opt.step_count;
      run.saved_names = SafetensorsFile::open(file).names();
      std::filesystem::remove(file);
      values_then = snapshot_parameters(params);
      moments_then = snapshot_optimizer_state(opt, params);
      staged = take_checkpoint_tensors(opt, params, true);
      run.staged = static_cast<bool>(staged.arrive);
      auto kept = std::move(st.snapshot);  // as when the staging would not hold them
      unstaged = take_checkpoint_tensors(opt, params, true);
      st.snapshot = std::move(kept);
    }
    for (std::size_t i = 0; i < ps.size(); ++i)
      PEFT_CUDA_CHECK(cudaMemcpy(ps[i].grad, run.grads[s][i].data(), run.grads[s][i].size() * 4, cudaMemcpyHostToDevice));
    clip_grad_norm(params, max_norm);
    optimizer_step(opt, params, lrs[s]);
    if (at_checkpoint) {  // the step has changed the tensors; the staged copies arrive only now
      run.unstaged_exact = !unstaged.arrive && same_tensors(unstaged, values_then, moments_then);
      staged.receive();
      run.staged_exact = same_tensors(staged, values_then, moments_then);
    }
  }
  for (std::size_t i = 0; i < ps.size(); ++i) run.trained.push_back(download_f32(ps[i].value, run.init[i].size()));
  PEFT_CUDA_CHECK(cudaFreeHost(st.host_norm));
  PEFT_CUDA_CHECK(cudaStreamDestroy(stream));
  return run;
}

}  // namespace peft::cuda_test
