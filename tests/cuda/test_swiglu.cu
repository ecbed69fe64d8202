// SwiGLU forward and backward against kernels/cpu/swiglu.hpp, with gate and up as the two halves
// of one fused [rows, 2 * cols] buffer, and the backward written in place over them.
// Tolerance 1e-2 (bf16 outputs; the CPU keeps the backward in fp32).
#include "cuda_test.cuh"
#include "peft/kernels/cuda/swiglu.cuh"

namespace peft::cuda_test {

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "swiglu", [](TestContext& t) {
    cuda::DeviceArena arena(std::size_t{1} << 30);
    const int rows = t.small ? 3 : 129, cols = t.small ? 16 : 4864;
    const Floats gate = t.normal(rows * cols, 2.0f), up = t.normal(rows * cols), dact = t.normal(rows * cols);
    Floats fused(2 * rows * cols);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        fused[r * 2 * cols + c] = gate[r * cols + c];
        fused[r * 2 * cols + cols + c] = up[r * cols + c];
      }
    auto* gu = upload_bf16(arena, fused);
    auto* act = alloc_poisoned<cuda::bf16>(arena, rows * cols);
    cuda::swiglu_forward(act, gu, gu + cols, rows, cols, 2 * cols, 0);
    t.close("forward act (fused gate|up input)", download_bf16(act, rows * cols), ref_swiglu_forward(gate, up), 1e-2);

    auto* ddact = upload_bf16(arena, dact);
    cuda::swiglu_backward(gu, gu + cols, ddact, gu, gu + cols, rows, cols, 2 * cols, 0);  // in place
    Floats dg_ref, du_ref;
    ref_swiglu_backward(dact, gate, up, dg_ref, du_ref);
    const Floats out = download_bf16(gu, 2 * rows * cols);
    Floats dg(rows * cols), du(rows * cols);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        dg[r * cols + c] = out[r * 2 * cols + c];
        du[r * cols + c] = out[r * 2 * cols + cols + c];
      }
    t.close("backward dgate (in place)", dg, dg_ref, 1e-2);
    t.close("backward dup (in place)", du, du_ref, 1e-2);

    auto *g2 = upload_bf16(arena, gate), *u2 = upload_bf16(arena, up);
    auto *dg2 = alloc_poisoned<cuda::bf16>(arena, rows * cols), *du2 = alloc_poisoned<cuda::bf16>(arena, rows * cols);
    cuda::swiglu_backward(dg2, du2, ddact, g2, u2, rows, cols, cols, 0);
    t.close("backward dgate (separate buffers)", download_bf16(dg2, rows * cols), dg_ref, 1e-2);
    t.close("backward dup (separate buffers)", download_bf16(du2, rows * cols), du_ref, 1e-2);

    if (!t.small) {  // 7B MLP at seq 2048, fused gate|up: timing only
      const int r = 2048, c = 18944;
      const std::size_t n = static_cast<std::size_t>(r) * c;
      auto *g = arena.alloc<cuda::bf16>(2 * n, "gate|up"), *a = arena.alloc<cuda::bf16>(n, "act");
      fill_random_bf16(g, 2 * n, 31u, 2.0f);
      fill_random_bf16(a, n, 32u, 1.0f);
      const float f = median_ms([&] { cuda::swiglu_forward(a, g, g + c, r, c, 2 * c, 0); });
      const float b = median_ms([&] { cuda::swiglu_backward(g, g + c, a, g, g + c, r, c, 2 * c, 0); });
      std::printf("  timing: swiglu %dx%d forward %.1f us (%.0f GB/s), backward in place %.1f us (%.0f GB/s)\n", r, c,
                  f * 1e3, 6.0 * n / (f * 1e-3) / 1e9, b * 1e3, 10.0 * n / (b * 1e-3) / 1e9);
    }
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
