// The fused NF4 GEMM (kernels/cuda/nf4_gemm.cuh), which an NF4 model's projections use from 9 to
// kNf4FusedMaxTokens tokens (forward) and up to it (input gradient), against (1) the CPU:
// nf4::dequantize's weights times the activations in double, plus the bias and beta times the
// output's old value, and (2) the path it replaces: dequantise into bf16, then cuBLASLt with the
// same alpha / beta / bias. T in {9, 17, 64, 100, 333, 512}: a partial token tile at each of the
// three tile heights, several token tiles; with bias and without, beta 0 and 1; with the split
// reduction's workspace and without it. Shapes: small ones (a single tile; several reduction
// steps, so the reduction is split), and (unless --small) the 7B's q/k/v/o, gate/up and down,
// checked against the CPU on the last token's row only (the full product in double would take
// minutes) and in full against cuBLASLt; their times beside the dequantise + cuBLASLt path's are
// printed (not asserted): the measurement behind linear.cuh's kNf4FusedMaxTokens. Bad calls are
// refused, naming the shape.
#include <string>
#include <vector>

#include "cuda_test.cuh"
#include "../support/nf4_cases.hpp"
#include "peft/kernels/cuda/gemm.cuh"
#include "peft/kernels/cuda/graph_capture.cuh"
#include "peft/kernels/cuda/memory_plan.cuh"
#include "peft/kernels/cuda/nf4_gemm.cuh"

namespace peft::cuda_test {
namespace {

// bf16 outputs of fp32 sums: each element rounded once (2^-9 relative) and the summation order
// differs from the reference's; 1e-2 relative L2 holds both with margin (the same for cuBLASLt,
// whose own order differs again).
constexpr double kTol = 1e-2;
constexpr int kTokens[] = {9, 17, 64, 100, 333, 512};
constexpr int kTimedTokens[] = {9, 16, 32, 64, 100, 128, 192, 256, 333, 384, 512, 768, 1024};

struct Operands {
  std::int64_t rows, cols;  // W [rows, cols]
  int max_tokens;
  std::vector<float> w;     // the dequantised weight (CPU)
  Floats x, dy, bias, y0, dx0;
  cuda::Nf4DeviceTensor dw;
  bf16 *x_d, *dy_d, *bias_d, *y0_d, *dx0_d, *w16;
  bf16 *y, *y_ref, *dx, *dx_ref;
  float* workspace;  // rows * cols bf16 of room, as the model's weight scratch has
  std::size_t workspace_bytes;
};

// ref[r, o] = beta * init[r, o] + bias[o] + sum_k w(o, k) in[r, k]  (forward: w(o, k) = W[o, k];
// input gradient: w(o, k) = W[k, o]), for the token rows in `rows`.
Floats cpu_product(const Operands& op, bool input_grad, const Floats& in, const Floats& init, const Floats* bias,
                   float beta, const std::vector<int>& token_rows) {
  const std::int64_t n_out = input_grad ? op.cols : op.rows, n_red = input_grad ? op.rows : op.cols;
  Floats ref;
  for (int r : token_rows)
    for (std::int64_t o = 0; o < n_out; ++o) {
      double s = beta * static_cast<double>(init[static_cast<std::size_t>(r * n_out + o)]);
      if (bias) s += (*bias)[static_cast<std::size_t>(o)];
      for (std::int64_t k = 0; k < n_red; ++k) {
        const std::size_t wi = static_cast<std::size_t>(input_grad ? k * op.cols + o : o * op.cols + k);
        s += static_cast<double>(op.w[wi]) * in[static_cast<std::size_t>(r * n_red + k)];
      }
      ref.push_back(static_cast<float>(s));
    }
  return ref;
}

Floats rows_of(const Floats& all, std::int64_t width, const std::vector<int>& token_rows) {
  Floats out;
  for (int r : token_rows)
    out.insert(out.end(), all.begin() + r * width, all.begin() + (r + 1) * width);
  return out;
}

void run_fused(Operands& op, bool input_grad, int tokens, bool with_bias, float beta, bool workspace,
               int ctas_per_sm = cuda::detail::kNf4GemmCtasPerSm, cudaStream_t stream = 0) {
  float* ws = workspace ? op.workspace : nullptr;
  const std::size_t bytes = workspace ? op.workspace_bytes : 0;
  if (input_grad)
    cuda::nf4_gemm_input_grad(op.dx, op.dy_d, tokens, op.dw, beta, ws, bytes, stream, ctas_per_sm);
  else
    cuda::nf4_gemm_forward(op.y, op.x_d, tokens, op.dw, with_bias ? op.bias_d : nullptr, beta, ws, bytes, stream,
                           ctas_per_sm);
}

void run_split(Operands& op, cuda::Gemm& gemm, bool input_grad, int tokens, bool with_bias, float beta, bf16* out,
               cudaStream_t stream = 0) {
  const int rows = static_cast<int>(op.rows), cols = static_cast<int>(op.cols);
  cuda::dequantize_bf16(op.w16, op.dw, stream);
  if (input_grad)
    cuda::matmul_backward_input(gemm, out, op.dy_d, op.w16, tokens, rows, cols, stream, 1.0f, beta);
  else
    cuda::matmul_forward(gemm, out, op.x_d, op.w16, with_bias ? op.bias_d : nullptr, tokens, rows, cols, stream,
                         1.0f, beta);
}

// Microseconds a call takes on the GPU: kGraphRepeats calls captured into one CUDA graph (as the
// model's steps are), the median graph launch divided by the count, so the host's launch cost
// (larger than the kernels' time at the small shapes) is not measured.
constexpr int kGraphRepeats = 10;
template <class Fn>
double graph_us(cudaStream_t stream, Fn&& call) {
  cudaGraphExec_t exec = cuda::capture_graph(stream, [&] {
    for (int i = 0; i < kGraphRepeats; ++i) call();
  });
  const float ms = median_ms([&] { PEFT_CUDA_CHECK(cudaGraphLaunch(exec, stream)); }, 2, 7);
  PEFT_CUDA_CHECK(cudaGraphExecDestroy(exec));
  return ms * 1e3 / kGraphRepeats;
}

void check_case(TestContext& t, Operands& op, cuda::Gemm& gemm, const std::string& shape, bool input_grad, int tokens,
                bool with_bias, float beta, bool workspace, bool big) {
  const std::int64_t n_out = input_grad ? op.cols : op.rows;
  const std::size_t n = static_cast<std::size_t>(tokens * n_out);
  bf16* out = input_grad ? op.dx : op.y;
  bf16* ref_out = input_grad ? op.dx_ref : op.y_ref;
  const bf16* init = input_grad ? op.dx0_d : op.y0_d;
  // beta 0: the output starts poisoned (NaN), so an element read or left unwritten fails.
  for (bf16* o : {out, ref_out}) {
    if (beta != 0.0f)
      PEFT_CUDA_CHECK(cudaMemcpy(o, init, n * 2, cudaMemcpyDeviceToDevice));
    else
      poison(o, n);
  }
  run_fused(op, input_grad, tokens, with_bias, beta, workspace);
  run_split(op, gemm, input_grad, tokens, with_bias, beta, ref_out);
  const Floats got = download_bf16(out, n);
  const std::string what = shape + (input_grad ? " dx" : " y") + ", T " + std::to_string(tokens) +
                           (with_bias ? ", bias" : "") + ", beta " + std::to_string(static_cast<int>(beta)) +
                           (workspace ? "" : ", no workspace");
  t.close(what + " vs dequantise + cuBLASLt", got, download_bf16(ref_out, n), kTol);
  std::vector<int> token_rows;
  if (big)
    token_rows = {tokens - 1};
  else
    for (int r = 0; r < tokens; ++r) token_rows.push_back(r);
  const Floats ref = cpu_product(op, input_grad, input_grad ? op.dy : op.x, input_grad ? op.dx0 : op.y0,
                                 with_bias ? &op.bias : nullptr, beta, token_rows);
  t.close(what + " vs CPU" + (big ? " (last row)" : ""), rows_of(got, n_out, token_rows), ref, kTol);
}

void check_shape(TestContext& t, std::int64_t rows, std::int64_t cols, bool big) {
  const std::string shape = std::to_string(rows) + "x" + std::to_string(cols);
  Operands op{rows, cols, big ? kTimedTokens[std::size(kTimedTokens) - 1] : kTokens[std::size(kTokens) - 1]};
  const auto T = static_cast<std::size_t>(op.max_tokens);
  const auto R = static_cast<std::size_t>(rows), C = static_cast<std::size_t>(cols);
  std::mt19937 rng(t.rng());
  const nf4::Nf4Tensor q = nf4::quantize(test::nf4_normal(rng, rows * cols, 0.02f), shape);
  op.w.resize(R * C);
  nf4::dequantize(q, op.w.data());
  op.x = t.normal(T * C);
  op.dy = t.normal(T * R);
  op.bias = t.normal(R, 0.02f);
  op.y0 = t.normal(T * R, 0.1f);
  op.dx0 = t.normal(T * C, 0.1f);

  cuda::MemoryPlan counting;
  cuda::plan_nf4_tensor(counting, rows, cols, "w");
  op.workspace_bytes = R * C * 2;
  const std::size_t bytes = counting.bytes() + 2 * op.workspace_bytes + 2 * T * (C + R) * 4 + R * 2 + (64u << 20) +
                            32 * cuda::DeviceArena::kAlignment;
  cuda::DeviceArena arena(bytes);
  cuda::MemoryPlan allocating(arena);
  op.dw = cuda::plan_nf4_tensor(allocating, rows, cols, "w");
  cuda::upload_nf4(op.dw, q, shape);
  op.x_d = upload_bf16(arena, op.x);
  op.dy_d = upload_bf16(arena, op.dy);
  op.bias_d = upload_bf16(arena, op.bias);
  op.y0_d = upload_bf16(arena, op.y0);
  op.dx0_d = upload_bf16(arena, op.dx0);
  op.y = alloc_poisoned<bf16>(arena, T * R);
  op.y_ref = alloc_poisoned<bf16>(arena, T * R);
  op.dx = alloc_poisoned<bf16>(arena, T * C);
  op.dx_ref = alloc_poisoned<bf16>(arena, T * C);
  op.w16 = arena.alloc<bf16>(R * C, "dequantised w");
  op.workspace = arena.alloc<float>(op.workspace_bytes / 4, "split workspace");
  cuda::Gemm gemm(arena);

  for (bool input_grad : {false, true})
    for (int tokens : kTokens)
      for (bool with_bias : {false, true})
        for (float beta : {0.0f, 1.0f}) {
          if (input_grad && with_bias) continue;  // the input gradient has no bias
          check_case(t, op, gemm, shape, input_grad, tokens, with_bias, beta, true, big);
          if (!big && with_bias == input_grad && beta == 1.0f)  // the unsplit kernel's own epilogue
            check_case(t, op, gemm, shape, input_grad, tokens, with_bias, beta, false, big);
        }
  if (!big) return;

  // The fused kernel at its default split and (in brackets) with the reduction split for 2, 4 and
  // 16 CTAs an SM; beta 1, as the model's adapter-first forward and accumulated dx call it.
  cudaStream_t stream;
  PEFT_CUDA_CHECK(cudaStreamCreate(&stream));
  for (bool input_grad : {false, true})
    for (int tokens : kTimedTokens) {
      const double fused = graph_us(stream, [&] { run_fused(op, input_grad, tokens, false, 1.0f, true, cuda::detail::kNf4GemmCtasPerSm, stream); });
      double alt[3];
      const int per_sm[3] = {2, 4, 16};
      for (int i = 0; i < 3; ++i)
        alt[i] = graph_us(stream, [&] { run_fused(op, input_grad, tokens, false, 1.0f, true, per_sm[i], stream); });
      bf16* ref_out = input_grad ? op.dx_ref : op.y_ref;
      const double split = graph_us(stream, [&] { run_split(op, gemm, input_grad, tokens, false, 1.0f, ref_out, stream); });
      std::printf("  timing %-10s %-2s T %4d: fused %7.1f us [%.1f %.1f %.1f]  dequantise + cuBLASLt %7.1f us  %s\n",
                  shape.c_str(), input_grad ? "dx" : "y", tokens, fused, alt[0], alt[1], alt[2], split,
                  fused < split ? "fused" : "split");
    }
  PEFT_CUDA_CHECK(cudaStreamDestroy(stream));
}

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "nf4 gemm", [](TestContext& t) {
    check_shape(t, 64, 64, false);    // one tile, one reduction step (no split)
    check_shape(t, 320, 640, false);  // forward: 5 output tiles x 10 steps (split); dx: 10 x 5
    check_shape(t, 640, 256, false);  // dx: 4 output tiles x 10 steps (split)
    if (!t.small) {
      check_shape(t, 3584, 3584, true);   // q_proj / o_proj
      check_shape(t, 512, 3584, true);    // k_proj / v_proj
      check_shape(t, 18944, 3584, true);  // gate_proj / up_proj
      check_shape(t, 3584, 18944, true);  // down_proj
    }

    // Bad calls: a dimension that is not whole tiles, a misaligned pointer.
    cuda::DeviceArena arena(1u << 20);
    cuda::MemoryPlan plan(arena);
    cuda::Nf4DeviceTensor w = cuda::plan_nf4_tensor(plan, 64, 128, "w");
    cuda::Nf4DeviceTensor odd = cuda::plan_nf4_tensor(plan, 176, 64, "odd");
    auto* x = alloc_poisoned<bf16>(arena, 64 * 256);
    auto* y = alloc_poisoned<bf16>(arena, 64 * 256);
    auto refused = [&](auto&& call) {
      std::string msg;
      try {
        call();
      } catch (const Error& e) {
        msg = e.what();
      }
      return msg;
    };
    t.expect(refused([&] { cuda::nf4_gemm_forward(y, x, 9, odd, nullptr, 0.0f, nullptr, 0, 0); })
                     .find("9 tokens against a [176, 64] NF4 weight") != std::string::npos,
             "176 rows are refused, naming the shape");
    t.expect(refused([&] { cuda::nf4_gemm_input_grad(y + 1, x, 9, w, 0.0f, nullptr, 0, 0); }).find("16-byte aligned") !=
                 std::string::npos,
             "a misaligned output is refused");
    t.expect(cuda::nf4_gemm_fits(w) && !cuda::nf4_gemm_fits(odd), "nf4_gemm_fits: whole 64-wide tiles");
  });
}

}  // namespace
}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
