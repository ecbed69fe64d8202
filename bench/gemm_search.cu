// gemm_search: for the 7B decoder layer's base products at a few token counts, every algorithm
// cuBLASLt's heuristic offers (up to 32) and, for each, split-K variants (2..32 splits, with the
// reduction schemes the algorithm supports), timed in a CUDA graph with the weights read from HBM
// (a rotating pool larger than L2). A question to the hardware, not a test: how far the
// heuristic's first choice (what kernels/cuda/gemm.cuh runs) is from the best cuBLASLt has.
//
//   gemm_search [--tokens 64,128,256,2048] [--reps 20] [--x-std 1]
//
// Prints one JSON line per product: the heuristic's first (us), the best found (us) and its
// configuration.
#include <algorithm>
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

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return argv[i + 1];
  return fallback;
}

template <class T>
T config(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
  T v{};
  std::size_t written = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof(v), &written);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> tokens;
  const std::string list = arg(argc, argv, "--tokens", "64,128,256,2048");
  for (const char* p = list.c_str(); *p;) {
    char* end = nullptr;
    tokens.push_back(static_cast<int>(std::strtol(p, &end, 10)));
    p = *end == ',' ? end + 1 : end;
  }
  const int reps = std::atoi(arg(argc, argv, "--reps", "20").c_str());
  const int H = 3584, I = 18944, KV = 512;
  const int maxT = *std::max_element(tokens.begin(), tokens.end());
  cudaStream_t s;
  PEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const std::size_t pool = std::size_t{1} << 30;  // bf16 elements of weights: 2 GB, rotated through
  const std::size_t act = static_cast<std::size_t>(maxT) * I;
  DeviceArena arena((pool + 3 * act) * 2 + (256u << 20));
  const std::size_t ws_bytes = 64u << 20;
  char* ws = arena.alloc<char>(ws_bytes, "workspace");
  // Weights as a 7B's (std 0.02), activations as a normalised hidden state's (std 1).
  const float x_std = std::strtof(arg(argc, argv, "--x-std", "1").c_str(), nullptr);
  auto buf = [&](std::size_t n, const char* what, float std) {
    bf16* p = arena.alloc<bf16>(n, what);
    fill_normal(p, static_cast<long long>(n), 1234 + n, std, s);
    return p;
  };
  bf16 *w = buf(pool, "weights", 0.02f), *x = buf(act, "x", x_std), *y = buf(act, "y", x_std);
  cublasLtHandle_t lt;
  PEFT_CUBLAS_CHECK(cublasLtCreate(&lt));

  // Row-major y[T, n] = x[T, k] W[n, k]^T, as gemm.cuh's matmul_forward (column-major y^T = W x^T).
  // The input gradient dx[T, k] = dy[T, n] W[n, k] is the same call with W not transposed.
  auto search = [&](const std::string& name, int T, int n, int k, bool input_grad, float beta) {
    cublasLtMatmulDesc_t desc;
    PEFT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opw = input_grad ? CUBLAS_OP_N : CUBLAS_OP_T, opx = CUBLAS_OP_N;
    PEFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opw, sizeof(opw)));
    PEFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opx, sizeof(opx)));
    // Output columns (row-major features) N_out, reduction K_red.
    const int n_out = input_grad ? k : n, k_red = input_grad ? n : k;
    cublasLtMatrixLayout_t lw, lx, ly;
    if (input_grad)  // W [n, k] row-major = column-major [k, n]: op N gives [k(out) , n(red)]
      PEFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lw, CUDA_R_16BF, k, n, k));
    else  // W [n, k] row-major = column-major [k, n]; op T gives [n(out), k(red)]
      PEFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lw, CUDA_R_16BF, k, n, k));
    PEFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lx, CUDA_R_16BF, k_red, T, k_red));
    PEFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ly, CUDA_R_16BF, n_out, T, n_out));
    cublasLtMatmulPreference_t pref;
    PEFT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const std::uint64_t wsb = ws_bytes;
    PEFT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
    cublasLtMatmulHeuristicResult_t res[32] = {};
    int found = 0;
    PEFT_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, lw, lx, ly, ly, pref, 32, res, &found));
    const std::size_t wsize = static_cast<std::size_t>(n) * k;
    const int copies = static_cast<int>(std::min<std::size_t>(pool / wsize, 64));
    const float alpha = 1.0f;
    auto time_algo = [&](const cublasLtMatmulAlgo_t& algo) -> double {
      auto call = [&](int r) {
        return cublasLtMatmul(lt, desc, &alpha, w + (r % copies) * wsize, lw, x, lx, &beta, y, ly, y, ly, &algo, ws,
                              ws_bytes, s);
      };
      if (call(0) != CUBLAS_STATUS_SUCCESS) return -1;
      if (cudaStreamSynchronize(s) != cudaSuccess) return -1;
      return peft::bench::us_a_call_in_graph(s, reps, [&](int r) { call(r + 1); });
    };
    auto describe = [&](const cublasLtMatmulAlgo_t& algo) {
      return fmt::format("id {} tile {} stages {} splitk {} red {} swizzle {} cluster {}",
                         config<int>(algo, CUBLASLT_ALGO_CONFIG_ID), config<std::uint32_t>(algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
                         config<std::uint32_t>(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                         config<std::uint32_t>(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
                         config<std::uint32_t>(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME),
                         config<std::uint32_t>(algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING),
                         config<std::uint32_t>(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID));
    };
    const double first = found > 0 ? time_algo(res[0].algo) : -1;
    double best = first;
    std::string best_desc = found > 0 ? describe(res[0].algo) : "";
    int tried = 0;
    for (int i = 0; i < found; ++i) {
      for (int si = 0; si < 10; ++si) {
        constexpr std::uint32_t kSplits[10] = {0u, 2u, 3u, 4u, 6u, 8u, 12u, 16u, 24u, 32u};
        const std::uint32_t split = kSplits[si];
        cublasLtMatmulAlgo_t algo = res[i].algo;
        if (split > 0) {
          if (config<std::uint32_t>(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM) == split) continue;
          if (cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof(split)) !=
              CUBLAS_STATUS_SUCCESS)
            continue;
          // Deterministic reductions only (in the workspace, not atomics in the output).
          const std::uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
          cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme, sizeof(scheme));
          cublasLtMatmulHeuristicResult_t check{};
          if (cublasLtMatmulAlgoCheck(lt, desc, lw, lx, ly, ly, &algo, &check) != CUBLAS_STATUS_SUCCESS) continue;
          if (check.workspaceSize > ws_bytes) continue;
        } else if (i == 0) {
          continue;  // timed above
        }
        const double us = time_algo(algo);
        ++tried;
        if (us > 0 && us < best) best = us, best_desc = describe(algo);
      }
    }
    const double gb = (2.0 * n * k + 2.0 * T * (n + k)) / 1e9;
    fmt::print("{{\"gemm\": \"{}\", \"T\": {}, \"first_us\": {:.1f}, \"best_us\": {:.1f}, \"gain\": {:.2f}, "
               "\"first_TBps\": {:.2f}, \"best_TBps\": {:.2f}, \"heuristic_results\": {}, \"tried\": {}, "
               "\"first\": \"{}\", \"best\": \"{}\"}}\n",
               name, T, first, best, first / best, gb * 1e3 / first, gb * 1e3 / best, found, tried,
               found > 0 ? describe(res[0].algo) : "", best_desc);
    std::fflush(stdout);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(lw);
    cublasLtMatrixLayoutDestroy(lx);
    cublasLtMatrixLayoutDestroy(ly);
    cublasLtMatmulDescDestroy(desc);
  };
  for (const int T : tokens) {
    search("fwd q/o", T, H, H, false, 0.0f);
    search("fwd k/v", T, KV, H, false, 0.0f);
    search("fwd gate/up", T, I, H, false, 0.0f);
    search("fwd down", T, H, I, false, 1.0f);
    search("bwd q/o", T, H, H, true, 0.0f);
    search("bwd k/v (+=)", T, KV, H, true, 1.0f);
    search("bwd gate/up", T, I, H, true, 1.0f);
    search("bwd down", T, H, I, true, 0.0f);
  }
  cublasLtDestroy(lt);
  return 0;
}
