// RMSNorm forward and backward against kernels/cpu/rms_norm.hpp with the Bf16Mixed layer's
// roundings: y (bf16) and rstd, the residual add fused in (bit for bit the two kernels), dx accumulated onto a non-zero residual gradient, dx overwritten
// (poisoned first), dw accumulated onto a non-zero fp32 gradient. Tolerance 1e-2 for bf16
// outputs, 1e-5 for rstd (fp32 vs the CPU's double mean), 1e-3 for dw: its sums are fp32 on both
// sides, but rstd differs in the last bits, so an xhat now and then rounds to the neighbouring
// bf16 value (seen on the H100: 5.8e-5 at 300 x 3584).
#include "cuda_test.cuh"
#include "peft/kernels/cuda/elementwise.cuh"
#include "peft/kernels/cuda/rms_norm.cuh"

namespace peft::cuda_test {

static void run_case(TestContext& t, cuda::DeviceArena& arena, int rows, int cols) {
  const std::string tag = " [" + std::to_string(rows) + "x" + std::to_string(cols) + "]";
  const float eps = 1e-6f;
  const Floats x = t.normal(rows * cols, 2.0f), w = t.normal(cols, 0.5f), dy = t.normal(rows * cols);
  auto *dx_in = upload_bf16(arena, x), *dw_in = upload_bf16(arena, w), *ddy = upload_bf16(arena, dy);
  auto* y = alloc_poisoned<cuda::bf16>(arena, rows * cols);
  auto* rstd = alloc_poisoned<float>(arena, rows);
  cuda::rms_norm_forward(y, rstd, dx_in, dw_in, rows, cols, eps, 0);
  const RmsNormRef ref = ref_rms_norm_forward(x, w, rows, cols, eps);
  t.close("forward y" + tag, download_bf16(y, rows * cols), ref.y, 1e-2);
  t.close("forward rstd" + tag, download_f32(rstd, rows), ref.rstd, 1e-5);

  // the residual add fused in: bit for bit residual_add then rms_norm_forward
  const Floats r = t.normal(rows * cols, 2.0f);
  auto* dr = upload_bf16(arena, r);
  auto *h = alloc_poisoned<cuda::bf16>(arena, rows * cols), *y2 = alloc_poisoned<cuda::bf16>(arena, rows * cols);
  auto *h_ref = alloc_poisoned<cuda::bf16>(arena, rows * cols), *y_ref = alloc_poisoned<cuda::bf16>(arena, rows * cols);
  auto *rstd2 = alloc_poisoned<float>(arena, rows), *rstd_ref = alloc_poisoned<float>(arena, rows);
  cuda::add_rms_norm_forward(h, y2, rstd2, dx_in, dr, dw_in, rows, cols, eps, 0);
  cuda::residual_add(h_ref, dx_in, dr, static_cast<long long>(rows) * cols, 0);
  cuda::rms_norm_forward(y_ref, rstd_ref, h_ref, dw_in, rows, cols, eps, 0);
  t.close("add + norm: sum == residual_add" + tag, download_bf16(h, rows * cols), download_bf16(h_ref, rows * cols), 0.0);
  t.close("add + norm: y == rms_norm(sum)" + tag, download_bf16(y2, rows * cols), download_bf16(y_ref, rows * cols), 0.0);
  t.close("add + norm: rstd" + tag, download_f32(rstd2, rows), download_f32(rstd_ref, rows), 0.0);

  // dx += ..., dw += ...
  const Floats dx0 = t.normal(rows * cols), dw0 = t.normal_f32(cols);
  auto* dx = upload_bf16(arena, dx0);
  auto* dw = upload_f32(arena, dw0);
  cuda::rms_norm_backward(dx, dw, ddy, dx_in, dw_in, rstd, rows, cols, 0);
  Floats dx_ref = dx0, dw_ref;
  ref_rms_norm_backward(dy, x, w, rows, cols, eps, dx_ref, dw_ref);
  for (int c = 0; c < cols; ++c) dw_ref[c] += dw0[c];
  t.close("backward dx += (residual)" + tag, download_bf16(dx, rows * cols), dx_ref, 1e-2);
  t.close("backward dw += (fp32)" + tag, download_f32(dw, cols), dw_ref, 1e-3);

  // dx overwritten, no dw
  poison(dx, rows * cols);
  cuda::rms_norm_backward(dx, nullptr, ddy, dx_in, dw_in, rstd, rows, cols, 0, false);
  Floats dx_only(rows * cols, 0.0f), unused;
  ref_rms_norm_backward(dy, x, w, rows, cols, eps, dx_only, unused);
  t.close("backward dx = (overwrite)" + tag, download_bf16(dx, rows * cols), dx_only, 1e-2);
}

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "rms_norm", [](TestContext& t) {
    cuda::DeviceArena arena(256u << 20);
    if (t.small) {
      run_case(t, arena, 5, 64);
    } else {
      run_case(t, arena, 37, 896);
      run_case(t, arena, 300, 3584);
      const int rows = 2048, cols = 3584;  // 7B shape at seq 2048: timing only
      const std::size_t n = static_cast<std::size_t>(rows) * cols;
      auto *x = arena.alloc<cuda::bf16>(n, "x"), *y = arena.alloc<cuda::bf16>(n, "y"), *dy = arena.alloc<cuda::bf16>(n, "dy"),
           *dx = arena.alloc<cuda::bf16>(n, "dx"), *w = arena.alloc<cuda::bf16>(cols, "w");
      auto* rstd = arena.alloc<float>(rows, "rstd");
      fill_random_bf16(x, n, 21u, 1.0f);
      fill_random_bf16(dy, n, 22u, 1.0f);
      fill_random_bf16(dx, n, 23u, 1.0f);
      fill_random_bf16(w, cols, 24u, 1.0f);
      const float f = median_ms([&] { cuda::rms_norm_forward(y, rstd, x, w, rows, cols, 1e-6f, 0); });
      const float b = median_ms([&] { cuda::rms_norm_backward(dx, nullptr, dy, x, w, rstd, rows, cols, 0); });
      std::printf("  timing: rms_norm %dx%d forward %.1f us (%.0f GB/s), backward dx+= %.1f us (%.0f GB/s)\n", rows, cols,
                  f * 1e3, 4.0 * n / (f * 1e-3) / 1e9, b * 1e3, 8.0 * n / (b * 1e-3) / 1e9);
    }
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
