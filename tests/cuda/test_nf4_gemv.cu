// The fused NF4 GEMV (kernels/cuda/nf4_gemv.cuh), which an NF4 model's projections use at 1-8
// tokens (decode), against (1) the CPU: nf4::dequantize's weights times x in double, plus the
// bias, and (2) the path it replaces: dequantise into bf16, then cuBLASLt. Shapes: a single row,
// rows that do not fill a block's warps, a width that is not a multiple of the warp's 256-weight
// stride, and (unless --small) the 7B's q, gate and down shapes, whose times are printed beside
// the dequantise-then-GEMM path's (not asserted). Bad calls are refused, naming the shape.
#include <string>

#include "../support/nf4_cases.hpp"
#include "cuda_test.cuh"
#include "peft/kernels/cuda/gemm.cuh"
#include "peft/kernels/cuda/memory_plan.cuh"
#include "peft/kernels/cuda/nf4_gemv.cuh"

namespace peft::cuda_test {
namespace {

// bf16 output: each element is rounded once (2^-9 relative), the sums' order differs from the
// double reference by fp32 rounding; 3e-3 relative L2 holds both with margin.
constexpr double kTol = 3e-3;

void check_shape(TestContext& t, std::int64_t rows, std::int64_t cols, bool time_it) {
  const std::string shape = std::to_string(rows) + "x" + std::to_string(cols);
  std::mt19937 rng(t.rng());
  const std::vector<float> weight = test::nf4_normal(rng, rows * cols, 0.02f);
  const nf4::Nf4Tensor q = nf4::quantize(weight, shape);
  std::vector<float> w(weight.size());
  nf4::dequantize(q, w.data());
  const Floats bias = t.normal(static_cast<std::size_t>(rows), 0.02f);
  const int max_tokens = cuda::kNf4GemvMaxTokens;
  const Floats x = t.normal(static_cast<std::size_t>(max_tokens * cols));

  cuda::MemoryPlan counting;
  cuda::plan_nf4_tensor(counting, rows, cols, "w");
  const std::size_t extra = static_cast<std::size_t>(rows * cols) * 2 + static_cast<std::size_t>(max_tokens) *
                                (static_cast<std::size_t>(cols) + 2 * static_cast<std::size_t>(rows)) * 2 +
                            (64u << 20);
  cuda::DeviceArena arena(counting.bytes() + extra + 16 * cuda::DeviceArena::kAlignment);
  cuda::MemoryPlan allocating(arena);
  cuda::Nf4DeviceTensor dw = cuda::plan_nf4_tensor(allocating, rows, cols, "w");
  cuda::upload_nf4(dw, q, shape);
  bf16* dx = upload_bf16(arena, x);
  bf16* db = upload_bf16(arena, bias);
  auto* y = alloc_poisoned<bf16>(arena, static_cast<std::size_t>(max_tokens * rows));
  auto* y_gemm = alloc_poisoned<bf16>(arena, static_cast<std::size_t>(max_tokens * rows));
  auto* w16 = arena.alloc<bf16>(static_cast<std::size_t>(rows * cols), "dequantised w");
  cuda::Gemm gemm(arena);
  cuda::dequantize_bf16(w16, dw, 0);

  for (int tokens : {1, 3, max_tokens})
    for (bool with_bias : {false, true}) {
      const std::string what = shape + ", " + std::to_string(tokens) + " token" + (tokens > 1 ? "s" : "") +
                               (with_bias ? ", bias" : "");
      const std::size_t n = static_cast<std::size_t>(tokens * rows);
      poison(y, n);
      cuda::nf4_gemv(y, dx, tokens, dw, with_bias ? db : nullptr, 0);
      Floats ref(n);
      for (int r = 0; r < tokens; ++r)
        for (std::int64_t o = 0; o < rows; ++o) {
          double s = with_bias ? bias[static_cast<std::size_t>(o)] : 0.0;
          for (std::int64_t k = 0; k < cols; ++k)
            s += static_cast<double>(w[static_cast<std::size_t>(o * cols + k)]) * x[static_cast<std::size_t>(r * cols + k)];
          ref[static_cast<std::size_t>(r * rows + o)] = static_cast<float>(s);
        }
      const Floats got = download_bf16(y, n);
      t.close(what + " vs CPU", got, ref, kTol);
      if (rows % 8 == 0) {  // cuBLASLt's 16-byte leading dimensions (the model's shapes all are)
        cuda::matmul_forward(gemm, y_gemm, dx, w16, with_bias ? db : nullptr, tokens, static_cast<int>(rows),
                             static_cast<int>(cols), cudaStream_t{0});
        t.close(what + " vs dequantise + cuBLASLt", got, download_bf16(y_gemm, n), kTol);
      }
    }

  if (time_it) {
    const float fused = median_ms([&] { cuda::nf4_gemv(y, dx, 1, dw, nullptr, 0); });
    const float split = median_ms([&] {
      cuda::dequantize_bf16(w16, dw, 0);
      cuda::matmul_forward(gemm, y_gemm, dx, w16, nullptr, 1, static_cast<int>(rows), static_cast<int>(cols),
                           cudaStream_t{0});
    });
    const double bytes = static_cast<double>(nf4::storage_bytes(rows * cols));
    std::printf("  timing %s, 1 token: fused %.1f us (%.0f GB/s of NF4 codes), dequantise + cuBLASLt %.1f us\n",
                shape.c_str(), fused * 1e3, bytes / (fused * 1e-3) / 1e9, split * 1e3);
  }
}

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "nf4 gemv", [](TestContext& t) {
    check_shape(t, 1, 64, false);
    check_shape(t, 13, 200, false);    // fewer rows than a block has warps; 200 = 25 chunks
    check_shape(t, 296, 1032, false);  // rows over several blocks; a partial last stride of lanes
    if (!t.small) {
      check_shape(t, 3584, 3584, true);   // q_proj / o_proj
      check_shape(t, 18944, 3584, true);  // gate_proj / up_proj
      check_shape(t, 3584, 18944, true);  // down_proj
    }

    // Bad calls: too many rows of x, a width that is not whole chunks.
    cuda::DeviceArena arena(1u << 20);
    cuda::MemoryPlan plan(arena);
    cuda::Nf4DeviceTensor w = cuda::plan_nf4_tensor(plan, 4, 64, "w");
    cuda::Nf4DeviceTensor odd = cuda::plan_nf4_tensor(plan, 3, 5, "odd");
    auto* x = alloc_poisoned<bf16>(arena, 1024);
    auto* y = alloc_poisoned<bf16>(arena, 1024);
    auto refused = [&](const cuda::Nf4DeviceTensor& wt, int tokens) {
      std::string msg;
      try {
        cuda::nf4_gemv(y, x, tokens, wt, nullptr, 0);
      } catch (const Error& e) {
        msg = e.what();
      }
      return msg;
    };
    t.expect(refused(w, 9).find("9 rows of x against a [4, 64] weight") != std::string::npos,
             "9 rows of x are refused, naming the shape");
    t.expect(refused(odd, 1).find("[3, 5] weight") != std::string::npos, "a width of 5 is refused, naming the shape");
    t.expect(cuda::nf4_gemv_fits(w, 8) && !cuda::nf4_gemv_fits(w, 0) && !cuda::nf4_gemv_fits(odd, 1),
             "nf4_gemv_fits: 1-8 rows, whole chunks");
  });
}

}  // namespace
}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
