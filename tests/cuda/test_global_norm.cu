// Global gradient norm and clip coefficient against train/grad_norm.hpp over tensors of assorted
// sizes (chunk edges included), and against a double-precision sum: the GPU sums each 16k chunk
// in fp32 as a tree and the chunks in double, so it must sit within 1e-6 of the exact norm; the
// CPU oracle accumulates each whole tensor in fp32 (Eigen's squaredNorm), whose own error on a
// 1M-element tensor reaches ~1e-5, so the oracle comparison uses 1e-4. Also
// determinism (same bits twice) and the no-clip cases (max_norm above the norm, max_norm = 0).
#include <cstring>

#include "cuda_test.cuh"
#include "peft/kernels/cuda/global_norm.cuh"

namespace peft::cuda_test {

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "global_norm", [](TestContext& t) {
    cuda::DeviceArena arena(256u << 20);
    const std::vector<int> sizes =
        t.small ? std::vector<int>{5, 100} : std::vector<int>{1, 16383, 16384, 16385, 1000000, 8 * 3584};
    std::vector<Floats> grads;
    std::vector<cuda::GradTensor> list;
    for (int n : sizes) {
      grads.push_back(t.normal_f32(n, 0.01f));
      list.push_back({upload_f32(arena, grads.back()), n});
    }
    cuda::GlobalGradNorm norm(arena, list);
    const double ref = ref_global_norm(grads);
    double exact_sq = 0.0;
    for (const auto& g : grads)
      for (float x : g) exact_sq += static_cast<double>(x) * x;
    const double exact = std::sqrt(exact_sq);
    std::printf("    norm: cpu oracle %.9g, exact (double) %.9g\n", ref, exact);
    const double max_norm = exact / 3.0;
    norm.compute(static_cast<float>(max_norm), 0);
    const float n1 = download_f32(norm.norm(), 1)[0], c1 = download_f32(norm.clip_scale(), 1)[0];
    t.close("norm vs exact double sum", {n1}, {static_cast<float>(exact)}, 1e-6);
    t.close("norm vs CPU oracle (fp32 per tensor)", {n1}, {static_cast<float>(ref)}, 1e-4);
    t.close("clip coefficient max_norm / (norm + 1e-6)", {c1}, {static_cast<float>(max_norm / (exact + 1e-6))}, 1e-6);
    norm.compute(static_cast<float>(max_norm), 0);
    const float n2 = download_f32(norm.norm(), 1)[0];
    t.expect(std::memcmp(&n1, &n2, 4) == 0, "deterministic: same norm bits on a second run");
    norm.compute(static_cast<float>(exact * 2), 0);
    t.expect(download_f32(norm.clip_scale(), 1)[0] == 1.0f, "no clipping when the norm is under max_norm");
    norm.compute(0.0f, 0);
    t.expect(download_f32(norm.clip_scale(), 1)[0] == 1.0f, "no clipping when max_norm = 0");

    if (!t.small) {  // the 7B's LoRA r=8 gradients (392 tensors)
      std::vector<cuda::GradTensor> lora;
      std::int64_t total = 0;
      for (std::int64_t n : lora_7b_tensor_sizes()) {
        float* g = arena.alloc<float>(n, "grad");
        fill_random_f32(g, n, 13u, 0.01f);
        lora.push_back({g, n});
        total += n;
      }
      cuda::GlobalGradNorm big(arena, lora);
      const float ms = median_ms([&] { big.compute(1.0f, 0); });
      std::printf("  timing: global norm over %zu tensors, %lld floats: %.3f ms, %.0f GB/s\n", lora.size(),
                  static_cast<long long>(total), ms, 4.0 * total / (ms * 1e-3) / 1e9);
    }
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
