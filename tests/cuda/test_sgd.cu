// Multi-tensor SGD (kernels/cuda/sgd.cuh) against optim/sgd.hpp, torch.optim.SGD's arithmetic:
//   (1) the kernel over three steps with fresh gradients, momentum, weight decay and a clip
//       coefficient read from a device scalar; also the bf16 parameter copy and zero_grad; and
//       momentum 0, where no buffer is kept;
//   (2) the backend hooks a CUDA model's trainer calls (optim/cuda/sgd.cuh) on DeviceParameters
//       (device_hooks.cuh): two steps, save_optimizer_state, a fresh optimizer_init (momentum
//       lost), load_optimizer_state and two more steps must equal four uninterrupted CPU steps;
//       the trainer's checkpoint copies, staged and not, hold the step they were taken at.
// Tolerance 1e-5 (fp32 both sides; the GPU may fuse multiply-adds; the norm is fp32 on the GPU).
#include <algorithm>

#include "cuda_test.cuh"
#include "device_hooks.cuh"
#include "peft/kernels/cuda/sgd.cuh"

namespace peft::cuda_test {

namespace {

void kernel_steps(TestContext& t, cuda::DeviceArena& arena, double momentum) {
  const std::vector<int> sizes = t.small ? std::vector<int>{7, 300} : std::vector<int>{7, 16384, 50001, 8 * 3584};
  const double wd = 0.01;
  const std::vector<double> lrs = {1e-2, 5e-3, 2e-2};
  const std::vector<float> clip = {1.0f, 0.37f, 1.0f};
  std::vector<Floats> params;
  std::vector<std::vector<Floats>> grads(lrs.size());
  for (int n : sizes) params.push_back(t.normal_f32(n, 0.1f));
  for (std::size_t s = 0; s < lrs.size(); ++s)
    for (int n : sizes) grads[s].push_back(t.normal_f32(n, 0.01f * (s + 1)));

  std::vector<cuda::SgdTensor> tensors;
  for (std::size_t i = 0; i < sizes.size(); ++i)
    tensors.push_back({upload_f32(arena, params[i]), arena.alloc<float>(sizes[i], "grad"),
                       alloc_poisoned<cuda::bf16>(arena, sizes[i]), sizes[i]});
  cuda::MultiTensorSgd opt(arena, tensors, {momentum, wd});
  float* scale = arena.alloc<float>(1, "clip scale");
  for (std::size_t s = 0; s < lrs.size(); ++s) {
    for (std::size_t i = 0; i < sizes.size(); ++i)
      PEFT_CUDA_CHECK(cudaMemcpy(tensors[i].grad, grads[s][i].data(), sizes[i] * 4, cudaMemcpyHostToDevice));
    PEFT_CUDA_CHECK(cudaMemcpy(scale, &clip[s], 4, cudaMemcpyHostToDevice));
    opt.step(lrs[s], scale, 0, /*zero_grad=*/true);
  }
  const SgdRef ref = ref_sgd(params, grads, clip, lrs, momentum, wd);
  const std::string m = " (momentum " + std::to_string(momentum).substr(0, 3) + ")";
  bool zeroed = true;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::string tag = " [" + std::to_string(sizes[i]) + "]" + m;
    t.close("params after 3 steps" + tag, download_f32(opt.tensors()[i].param, sizes[i]), ref.params[i], 1e-5);
    t.close("bf16 copy of params" + tag, download_bf16(opt.tensors()[i].param_bf16, sizes[i]), rounded(ref.params[i]), 1e-2);
    if (momentum != 0)
      t.close("momentum buffer" + tag, download_f32(opt.tensors()[i].momentum_buffer, sizes[i]), ref.momentum_buffer[i], 1e-5);
    for (float g : download_f32(opt.tensors()[i].grad, sizes[i])) zeroed = zeroed && g == 0.0f;
  }
  t.expect(zeroed, "zero_grad cleared every gradient" + m);
  t.expect(momentum != 0 || opt.tensors().front().momentum_buffer == nullptr, "no buffer without momentum" + m);
  t.expect(opt.step_count() == static_cast<std::int64_t>(lrs.size()), "step count" + m);
}

void hooks_with_checkpoint(TestContext& t, cuda::DeviceArena& arena) {
  const double momentum = 0.9, wd = 0.01;
  const std::vector<double> lrs = {0.1, 0.08, 0.06, 0.04};
  const HookRun run = run_hooks_with_checkpoint(t, arena, Sgd({momentum, wd}), lrs, 2, 0.05);
  t.expect(run.restored_step == 2, "hooks: step count restored from the checkpoint");
  t.expect(run.staged, "hooks: the checkpoint's copies went through the snapshot staging");
  t.expect(run.staged_exact, "hooks: the staged checkpoint holds its step's values and buffers, arriving after the next step");
  t.expect(run.unstaged_exact, "hooks: without the staging, the checkpoint is downloaded at once, the same");
  t.expect(std::find(run.saved_names.begin(), run.saved_names.end(), "momentum_buffer.layer.t1.lora_B.weight") !=
               run.saved_names.end(), "hooks: the checkpoint holds momentum_buffer.<name>");
  const SgdRef ref = ref_sgd(run.init, run.grads, run.clip, lrs, momentum, wd);
  for (std::size_t i = 0; i < run.trained.size(); ++i)
    t.close("hooks: SGD params after 2 + resume + 2 steps [" + std::to_string(i) + "]", run.trained[i], ref.params[i], 1e-5);
}

}  // namespace

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "sgd (multi-tensor)", [](TestContext& t) {
    cuda::DeviceArena arena(std::size_t{1} << 30);
    kernel_steps(t, arena, 0.9);
    kernel_steps(t, arena, 0.0);
    hooks_with_checkpoint(t, arena);
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
