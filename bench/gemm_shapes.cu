// gemm_shapes: the 7B decoder layer's base GEMMs at one packed sequence, timed one by one through
// the library's cuBLASLt wrapper (kernels/cuda/gemm.cuh), against the same work with q/k/v and
// gate/up stored contiguously, one GEMM a group (issue 14, item 3). A question to the hardware, not
// a test: whether the grouped layout is worth what it costs the model, measured before building it.
//
//   gemm_shapes [--tokens 2048] [--reps 50]
//
// Prints one JSON line per product (us a call, TFLOP/s), then the layer's sums for the two layouts.
// Every product runs `reps` times in a CUDA graph after a warm-up; weights are a few copies so the
// operands come from HBM as in a step (each layer's weights are read once).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "peft/kernels/cuda/elementwise.cuh"
#include "peft/kernels/cuda/gemm.cuh"
#include "graph_timing.cuh"

using namespace peft::cuda;

namespace {

struct Timed {
  std::string name;
  double us;
  double flop;
};

int arg(int argc, char** argv, const std::string& name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return std::atoi(argv[i + 1]);
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int T = arg(argc, argv, "--tokens", 2048), reps = arg(argc, argv, "--reps", 50);
  const int H = 3584, I = 18944, KV = 512, QKV = H + 2 * KV;
  cudaStream_t s;
  PEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const std::size_t t = T;
  const std::size_t elems = 2 * t * 2 * I + 4 * static_cast<std::size_t>(I) * 2 * H + 8 * t * H + (64u << 20);
  DeviceArena arena(elems * 2 + (64u << 20));
  Gemm gemm(arena);
  auto buf = [&](std::size_t n, const char* what) {
    bf16* p = arena.alloc<bf16>(n, what);
    fill_normal(p, static_cast<long long>(n), 1234 + n, 0.02f, s);
    return p;
  };
  // Activations: x [T, H], the MLP input [T, I], outputs and gradients of the widest shapes.
  bf16 *x = buf(t * H, "x"), *act = buf(t * I, "act"), *y = buf(t * 2 * I, "y"), *dy = buf(t * 2 * I, "dy"),
       *dx = buf(t * I, "dx");
  bf16* w = buf(static_cast<std::size_t>(2 * I) * H, "weights");  // room for gate|up, the largest group
  bf16* bias = buf(QKV, "bias");
  std::vector<Timed> rows;

  auto time = [&](const std::string& name, double flop, auto&& call) {
    call();  // plan + heuristic outside the graph
    PEFT_CUDA_CHECK(cudaStreamSynchronize(s));
    const double us = peft::bench::us_a_call_in_graph(s, reps, [&](int) { call(); }, 1);
    rows.push_back({name, us, flop});
    fmt::print("{{\"gemm\": \"{}\", \"us\": {:.1f}, \"tflops\": {:.0f}}}\n", name, us, flop / us * 1e-6);
  };
  auto fl = [&](int n, int k) { return 2.0 * T * n * k; };
  // Forward y = x W^T (+ b), backward dx (+)= dy W; separate projections, then grouped.
  time("fwd q", fl(H, H), [&] { matmul_forward(gemm, y, x, w, bias, T, H, H, s); });
  time("fwd k", fl(KV, H), [&] { matmul_forward(gemm, y, x, w, bias, T, KV, H, s); });
  time("fwd qkv grouped", fl(QKV, H), [&] { matmul_forward(gemm, y, x, w, bias, T, QKV, H, s); });
  time("fwd o", fl(H, H), [&] { matmul_forward(gemm, y, x, w, static_cast<const bf16*>(nullptr), T, H, H, s); });
  time("fwd gate", fl(I, H), [&] { matmul_forward(gemm, y, x, w, static_cast<const bf16*>(nullptr), T, I, H, s); });
  time("fwd gate|up grouped", fl(2 * I, H),
       [&] { matmul_forward(gemm, y, x, w, static_cast<const bf16*>(nullptr), T, 2 * I, H, s); });
  time("fwd down", fl(H, I), [&] { matmul_forward(gemm, y, act, w, static_cast<const bf16*>(nullptr), T, H, I, s); });
  time("bwd q (=)", fl(H, H), [&] { matmul_backward_input(gemm, dx, dy, w, T, H, H, s); });
  time("bwd k (+=)", fl(KV, H), [&] { matmul_backward_input(gemm, dx, dy, w, T, KV, H, s, 1.0f, 1.0f); });
  time("bwd qkv grouped", fl(QKV, H), [&] { matmul_backward_input(gemm, dx, dy, w, T, QKV, H, s); });
  time("bwd o", fl(H, H), [&] { matmul_backward_input(gemm, dx, dy, w, T, H, H, s); });
  time("bwd gate (=)", fl(I, H), [&] { matmul_backward_input(gemm, dx, dy, w, T, I, H, s); });
  time("bwd up (+=)", fl(I, H), [&] { matmul_backward_input(gemm, dx, dy, w, T, I, H, s, 1.0f, 1.0f); });
  time("bwd gate|up grouped", fl(2 * I, H), [&] { matmul_backward_input(gemm, dx, dy, w, T, 2 * I, H, s); });
  time("bwd down", fl(H, I), [&] { matmul_backward_input(gemm, dx, dy, w, T, H, I, s); });

  auto us = [&](const std::string& n) {
    for (const auto& r : rows)
      if (r.name == n) return r.us;
    return 0.0;
  };
  const double separate = us("fwd q") + 2 * us("fwd k") + 2 * us("fwd gate") + us("bwd q (=)") + 2 * us("bwd k (+=)") +
                          us("bwd gate (=)") + us("bwd up (+=)");
  const double grouped = us("fwd qkv grouped") + us("fwd gate|up grouped") + us("bwd qkv grouped") +
                         us("bwd gate|up grouped");
  fmt::print("{{\"tokens\": {}, \"qkv+gate/up separate_us\": {:.1f}, \"grouped_us\": {:.1f}, "
             "\"saved_per_step_ms_28_layers\": {:.2f}}}\n",
             T, separate, grouped, 28 * (separate - grouped) / 1000.0);
  return 0;
}
