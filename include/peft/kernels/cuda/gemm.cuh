// Matrix products through cuBLASLt: bf16 operands, fp32 accumulation, output in bf16
// (activations) or fp32 (parameter gradients, which are fp32 masters). Our tensors are row-major
// ([tokens, features], weights [out, in] as in safetensors) and cuBLAS is column-major; a
// row-major C = A B is the column-major C^T = B^T A^T, so `matmul` swaps the operands once here
// and every caller speaks row-major.
//
// One Gemm object per device owns the cuBLASLt handle and its workspace (taken from the arena at
// setup: no cudaMalloc in a step) and caches, per shape, the descriptors and the algorithm the
// heuristic picked, so a step pays neither descriptor creation nor the heuristic again.
// Pointers must be 16-byte aligned and leading dimensions multiples of 16 bytes: the heuristic is
// told so, and the checks below say which operand breaks it.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/device_arena.cuh"

namespace peft::cuda {

class Gemm {
 public:
  static constexpr std::size_t kDefaultWorkspaceBytes = 32u << 20;  // what a model plans for its Gemm

  explicit Gemm(DeviceArena& arena, std::size_t workspace_bytes = kDefaultWorkspaceBytes)
      : workspace_bytes_(workspace_bytes), workspace_(arena.alloc<char>(workspace_bytes, "cuBLASLt workspace")) {
    PEFT_CUBLAS_CHECK(cublasLtCreate(&handle_));
  }
  ~Gemm() {
    for (auto& [key, plan] : plans_) destroy(plan);
    if (handle_) cublasLtDestroy(handle_);
  }
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // Row-major C[M,N] = alpha * op(A) op(B) + beta * C (+ bias[N] broadcast over rows), where
  // op(A) is [M,K] (A stored [K,M] when trans_a) and op(B) is [K,N] (B stored [N,K] when trans_b).
  template <class Out>
  void matmul(Out* c, int ldc, const bf16* a, int lda, bool trans_a, const bf16* b, int ldb, bool trans_b, int m,
              int n, int k, float alpha, float beta, const bf16* bias, cudaStream_t stream) {
    static_assert(std::is_same_v<Out, bf16> || std::is_same_v<Out, float>, "Gemm output is bf16 or fp32");
    if (m == 0 || n == 0) return;
    check_operand("A", a, lda, trans_a ? m : k, sizeof(bf16), m, n, k);
    check_operand("B", b, ldb, trans_b ? k : n, sizeof(bf16), m, n, k);
    check_operand("C", c, ldc, n, sizeof(Out), m, n, k);
    if (bias) check_operand("bias", bias, 8, 0, sizeof(bf16), m, n, k);
    const Key key{m, n, k, lda, ldb, ldc, trans_a, trans_b, std::is_same_v<Out, float>, bias != nullptr};
    Plan& plan = plan_for(key);
    if (bias)
      PEFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                       sizeof(bias)));
    // Column-major view: D^T[N,M] = op(B)^T op(A)^T, so B is cuBLAS's first operand.
    PEFT_CUBLAS_CHECK(cublasLtMatmul(handle_, plan.desc, &alpha, b, plan.first, a, plan.second, &beta, c, plan.out, c,
                                     plan.out, &plan.algo, workspace_, workspace_bytes_, stream));
  }

 private:
  using Key = std::tuple<int, int, int, int, int, int, bool, bool, bool, bool>;
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t first = nullptr, second = nullptr, out = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };

  static void check_operand(const char* name, const void* p, int ld, int min_ld, std::size_t elem, int m, int n,
                            int k) {
    const std::string shape = " (matmul M=" + std::to_string(m) + " N=" + std::to_string(n) + " K=" + std::to_string(k) + ")";
    if (p == nullptr) throw Error(std::string("matmul: operand ") + name + " is null" + shape);
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0)
      throw Error(std::string("matmul: operand ") + name + " is not 16-byte aligned" + shape);
    if (ld < min_ld || (static_cast<std::size_t>(ld) * elem) % 16 != 0)
      throw Error(std::string("matmul: leading dimension of ") + name + " is " + std::to_string(ld) +
                  "; it must be at least " + std::to_string(min_ld) + " and a multiple of 16 bytes" + shape);
  }

  Plan& plan_for(const Key& key) {
    if (auto it = plans_.find(key); it != plans_.end()) return it->second;
    const auto [m, n, k, lda, ldb, ldc, trans_a, trans_b, out_f32, has_bias] = key;
    const cudaDataType_t out_type = out_f32 ? CUDA_R_32F : CUDA_R_16BF;
    Plan p;
    PEFT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    // First cuBLAS operand is our B: row-major B [K,N] is column-major [N,K], already op(B)^T.
    const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    PEFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
    PEFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
    if (has_bias) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      const cudaDataType_t bias_type = CUDA_R_16BF;
      PEFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
      PEFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                       sizeof(bias_type)));
    }
    PEFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.first, CUDA_R_16BF, trans_b ? k : n, trans_b ? n : k, ldb));
    PEFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.second, CUDA_R_16BF, trans_a ? m : k, trans_a ? k : m, lda));
    PEFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.out, out_type, n, m, ldc));

    cublasLtMatmulPreference_t pref = nullptr;
    PEFT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const std::uint64_t ws = workspace_bytes_;
    const std::uint32_t align = 16;
    PEFT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      PEFT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.first, p.second, p.out, p.out, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
      destroy(p);
      throw Error("cuBLASLt found no algorithm for matmul M=" + std::to_string(m) + " N=" + std::to_string(n) +
                  " K=" + std::to_string(k) + (out_f32 ? " (fp32 out)" : " (bf16 out)"));
    }
    p.algo = result.algo;
    return plans_.emplace(key, p).first->second;
  }

  static void destroy(Plan& p) {
    if (p.first) cublasLtMatrixLayoutDestroy(p.first);
    if (p.second) cublasLtMatrixLayoutDestroy(p.second);
    if (p.out) cublasLtMatrixLayoutDestroy(p.out);
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  }

  cublasLtHandle_t handle_ = nullptr;
  std::size_t workspace_bytes_;
  char* workspace_;
  std::map<Key, Plan> plans_;
};

// ----------------------------------------------------------------------------------------------
// The three products of a linear layer y = x W^T + b, W [out, in], row-major, contiguous.

// y[M,N] = alpha * x[M,K] W[N,K]^T + beta * y (+ bias[N]).
template <class Out>
void matmul_forward(Gemm& g, Out* y, const bf16* x, const bf16* w, const bf16* bias, int m, int n, int k,
                    cudaStream_t stream, float alpha = 1.0f, float beta = 0.0f) {
  g.matmul(y, n, x, k, false, w, k, true, m, n, k, alpha, beta, bias, stream);
}

// dx[M,K] = alpha * dy[M,N] W[N,K] + beta * dx.
template <class Out>
void matmul_backward_input(Gemm& g, Out* dx, const bf16* dy, const bf16* w, int m, int n, int k, cudaStream_t stream,
                           float alpha = 1.0f, float beta = 0.0f) {
  g.matmul(dx, k, dy, n, false, w, k, false, m, k, n, alpha, beta, nullptr, stream);
}

// dW[N,K] = alpha * dy[M,N]^T x[M,K] + beta * dW; beta = 1 accumulates (gradient accumulation).
template <class Out>
void matmul_backward_weight(Gemm& g, Out* dw, const bf16* dy, const bf16* x, int m, int n, int k, cudaStream_t stream,
                            float alpha = 1.0f, float beta = 1.0f) {
  g.matmul(dw, k, dy, n, true, x, k, false, n, k, m, alpha, beta, nullptr, stream);
}

}  // namespace peft::cuda
