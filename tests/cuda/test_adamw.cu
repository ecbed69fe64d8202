// Multi-tensor AdamW against optim/adamw.hpp (torch's arithmetic) over three steps with fresh
// gradients, weight decay, and a clip coefficient read from a device scalar; also the bf16
// parameter copy and zero_grad. Tolerance 1e-5 (fp32 both sides; the GPU may fuse multiply-adds).
// Also times one update of the 7B's LoRA tensors. Then the backend hooks a CUDA model's trainer
// calls for AdamW (optim/cuda/adamw.cuh, through device_hooks.cuh): two steps, a checkpoint of
// the moments, a fresh optimizer_init, the checkpoint loaded back and two more steps must equal
// four uninterrupted CPU steps, the file holding exp_avg.<name> / exp_avg_sq.<name> as the CPU's;
// and the trainer's checkpoint copies, staged and not, hold the step they were taken at.
#include <algorithm>

#include "cuda_test.cuh"
#include "device_hooks.cuh"
#include "peft/kernels/cuda/adamw.cuh"

namespace peft::cuda_test {

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "adamw (multi-tensor)", [](TestContext& t) {
    cuda::DeviceArena arena(std::size_t{1} << 30);
    const std::vector<int> sizes = t.small ? std::vector<int>{7, 300} : std::vector<int>{7, 16384, 50001, 8 * 3584};
    const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
    const int steps = 3;
    std::vector<Floats> params;
    std::vector<std::vector<Floats>> grads(steps);
    const std::vector<float> clip = {1.0f, 0.37f, 1.0f};
    for (int n : sizes) params.push_back(t.normal_f32(n, 0.1f));
    for (int s = 0; s < steps; ++s)
      for (int n : sizes) grads[s].push_back(t.normal_f32(n, 0.01f * (s + 1)));

    std::vector<cuda::AdamWTensor> tensors;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      cuda::AdamWTensor at;
      at.param = upload_f32(arena, params[i]);
      at.grad = arena.alloc<float>(sizes[i], "grad");
      at.param_bf16 = alloc_poisoned<cuda::bf16>(arena, sizes[i]);
      at.numel = sizes[i];
      tensors.push_back(at);
    }
    cuda::MultiTensorAdamW opt(arena, tensors, {b1, b2, eps, wd});
    float* scale = arena.alloc<float>(1, "clip scale");
    for (int s = 0; s < steps; ++s) {
      for (std::size_t i = 0; i < sizes.size(); ++i)
        PEFT_CUDA_CHECK(cudaMemcpy(tensors[i].grad, grads[s][i].data(), sizes[i] * 4, cudaMemcpyHostToDevice));
      PEFT_CUDA_CHECK(cudaMemcpy(scale, &clip[s], 4, cudaMemcpyHostToDevice));
      opt.step(lr, scale, 0, /*zero_grad=*/true);
    }
    const AdamWRef ref = ref_adamw(params, grads, clip, lr, b1, b2, eps, wd);
    bool zeroed = true;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const std::string tag = " [" + std::to_string(sizes[i]) + "]";
      t.close("params after 3 steps" + tag, download_f32(tensors[i].param, sizes[i]), ref.params[i], 1e-5);
      t.close("bf16 copy of params" + tag, download_bf16(tensors[i].param_bf16, sizes[i]), rounded(ref.params[i]), 1e-2);
      for (float g : download_f32(tensors[i].grad, sizes[i])) zeroed = zeroed && g == 0.0f;
    }
    t.expect(zeroed, "zero_grad cleared every gradient");
    t.expect(opt.step_count() == steps, "step count");

    if (!t.small) {  // one update of the 7B's LoRA r=8 tensors (392 tensors, 20.2M parameters)
      std::vector<cuda::AdamWTensor> lora;
      std::int64_t total = 0;
      for (std::int64_t n : lora_7b_tensor_sizes()) {
        cuda::AdamWTensor at;
        at.param = arena.alloc<float>(n, "param");
        at.grad = arena.alloc<float>(n, "grad");
        at.param_bf16 = arena.alloc<cuda::bf16>(n, "param bf16");
        at.numel = n;
        fill_random_f32(at.param, n, 11u, 0.1f);
        fill_random_f32(at.grad, n, 12u, 0.01f);
        lora.push_back(at);
        total += n;
      }
      cuda::MultiTensorAdamW big(arena, lora, {b1, b2, eps, wd});
      const float ms = median_ms([&] { big.step(lr, nullptr, 0); });
      const double bytes = 34.0 * total;  // p, g, m, v read; p, m, v written; bf16 copy
      std::printf("  timing: AdamW over %zu tensors, %lld params: %.3f ms, %.0f GB/s\n", lora.size(),
                  static_cast<long long>(total), ms, bytes / (ms * 1e-3) / 1e9);
    }

    const HookRun run = run_hooks_with_checkpoint(t, arena, AdamW({b1, b2, eps, wd}), std::vector<double>(4, lr), 2, 0.05);
    t.expect(run.restored_step == 2, "hooks: step count restored from the checkpoint");
    t.expect(run.staged, "hooks: the checkpoint's copies went through the snapshot staging");
    t.expect(run.staged_exact, "hooks: the staged checkpoint holds its step's values and buffers, arriving after the next step");
    t.expect(run.unstaged_exact, "hooks: without the staging, the checkpoint is downloaded at once, the same");
    for (const char* name : {"exp_avg.layer.t1.lora_B.weight", "exp_avg_sq.layer.t0.lora_A.weight"})
      t.expect(std::find(run.saved_names.begin(), run.saved_names.end(), name) != run.saved_names.end(),
               std::string("hooks: the checkpoint holds ") + name);
    const AdamWRef hooks_ref = ref_adamw(run.init, run.grads, run.clip, lr, b1, b2, eps, wd);
    for (std::size_t i = 0; i < run.trained.size(); ++i)
      t.close("hooks: AdamW params after 2 + resume + 2 steps [" + std::to_string(i) + "]", run.trained[i],
              hooks_ref.params[i], 1e-5);
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
