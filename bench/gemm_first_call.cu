// gemm_first_call: what a packed step of a length not seen before pays in its GEMMs before they
// run, against the same products at a length seen before. The recipe's packed steps are a length of
// their own each (16 samples of ~30-60 tokens), and its first ten steps train at ~2/3 of the
// later ones' speed (bench/RESULTS.md, 2026-12-07): this asks whether cuBLASLt's plans (heuristic
// query) or the first launch of a kernel not loaded yet (CUDA's lazy module loading) is why.
// A question to the hardware, not a test; built by tools/gpu/gpu_build.sh's build_cuda_bench. Its
// answer (H100, 2026-12-07; bench/RESULTS.md "The recipe's new lengths"): the heuristic, 3-40 ms a new
// length, not the loading of kernels.
//
//   gemm_first_call [--from 600] [--lengths 24] [--stride 13]   (run it with CUDA_MODULE_LOADING=LAZY / EAGER)
//
// For each length M: the 7B decoder layer's distinct base products (forward and input gradient)
// and lm_head's, issued once at the new M (plans made now), then again at the same M. Prints a
// JSON line per length (host ms to issue, wall ms to finish: first and second pass; the products'
// GPU time at that M, a mean of 5 passes) and the sums.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "peft/kernels/cuda/elementwise.cuh"
#include "peft/kernels/cuda/gemm.cuh"

using namespace peft::cuda;

namespace {

int arg(int argc, char** argv, const std::string& name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return std::atoi(argv[i + 1]);
  return fallback;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int from = arg(argc, argv, "--from", 600), lengths = arg(argc, argv, "--lengths", 24),
            stride = arg(argc, argv, "--stride", 13);
  const int H = 3584, I = 18944, KV = 512, V = 152064;
  const int T = from + stride * lengths;
  cudaStream_t s;
  PEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const std::size_t t = T;
  const std::size_t elems = 2 * t * I + 2 * t * V + static_cast<std::size_t>(V) * H + H;
  DeviceArena arena(elems * 2 + (128u << 20));
  Gemm gemm(arena);
  // One random pool holds every operand: x [T, I], y and dy [T, V], dx [T, I], the weights (lm_head's,
  // the largest) and a bias.
  bf16* x = arena.alloc<bf16>(elems, "operands");
  fill_normal(x, static_cast<long long>(elems), 99, 0.02f, s);
  bf16 *y = x + t * I, *dy = y + t * V, *dx = dy + t * V, *w = dx + t * I, *bias = w + static_cast<std::size_t>(V) * H;
  const bf16* none = nullptr;
  auto products = [&](int M) {
    matmul_forward(gemm, y, x, w, bias, M, H, H, s);   // q
    matmul_forward(gemm, y, x, w, bias, M, KV, H, s);  // k, v
    matmul_forward(gemm, y, x, w, none, M, H, H, s);   // o
    matmul_forward(gemm, y, x, w, none, M, I, H, s);   // gate, up
    matmul_forward(gemm, y, x, w, none, M, H, I, s);   // down
    matmul_forward(gemm, y, x, w, none, M, V, H, s);   // lm_head
    matmul_backward_input(gemm, dx, dy, w, M, H, H, s);              // q, o
    matmul_backward_input(gemm, dx, dy, w, M, KV, H, s, 1.0f, 1.0f);  // k, v
    matmul_backward_input(gemm, dx, dy, w, M, I, H, s);              // gate
    matmul_backward_input(gemm, dx, dy, w, M, I, H, s, 1.0f, 1.0f);   // up
    matmul_backward_input(gemm, dx, dy, w, M, H, I, s);              // down
    matmul_backward_input(gemm, dx, dy, w, M, V, H, s);              // lm_head
  };
  products(from - 64);  // cuBLASLt's own first-use costs, outside the lengths measured
  PEFT_CUDA_CHECK(cudaStreamSynchronize(s));
  double sum[5] = {};
  cudaEvent_t ev[2];
  for (auto& e : ev) PEFT_CUDA_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < lengths; ++i) {
    const int M = from + stride * i;
    double host[2], wall[2];
    for (int pass = 0; pass < 2; ++pass) {
      const auto t0 = std::chrono::steady_clock::now();
      products(M);
      host[pass] = ms_since(t0);
      PEFT_CUDA_CHECK(cudaStreamSynchronize(s));
      wall[pass] = ms_since(t0);
    }
    // The products' GPU time at this M, 5 passes between two events (the algorithm's speed).
    PEFT_CUDA_CHECK(cudaEventRecord(ev[0], s));
    for (int r = 0; r < 5; ++r) products(M);
    PEFT_CUDA_CHECK(cudaEventRecord(ev[1], s));
    PEFT_CUDA_CHECK(cudaEventSynchronize(ev[1]));
    float gpu = 0;
    PEFT_CUDA_CHECK(cudaEventElapsedTime(&gpu, ev[0], ev[1]));
    sum[0] += host[0], sum[1] += wall[0], sum[2] += host[1], sum[3] += wall[1], sum[4] += gpu / 5;
    fmt::print("{{\"M\": {}, \"first_host_ms\": {:.2f}, \"first_wall_ms\": {:.2f}, \"second_host_ms\": {:.2f}, "
               "\"second_wall_ms\": {:.2f}, \"gpu_ms\": {:.3f}}}\n",
               M, host[0], wall[0], host[1], wall[1], gpu / 5);
  }
  fmt::print("{{\"lengths\": {}, \"first_host_ms\": {:.1f}, \"first_wall_ms\": {:.1f}, \"second_host_ms\": {:.1f}, "
             "\"second_wall_ms\": {:.1f}, \"gpu_ms\": {:.2f}, \"module_loading\": \"{}\"}}\n",
             lengths, sum[0], sum[1], sum[2], sum[3], sum[4],
             std::getenv("CUDA_MODULE_LOADING") ? std::getenv("CUDA_MODULE_LOADING") : "(default)");
  return 0;
}
