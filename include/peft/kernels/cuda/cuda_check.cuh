// Every CUDA runtime and cuBLASLt call is checked where it is made, and a failure throws
// peft::Error naming the call, the file and the line: an asynchronous kernel fault otherwise
// surfaces calls later, far from its cause. Kernel launches are checked with
// PEFT_CUDA_CHECK_LAUNCH right after the <<<...>>>; defining PEFT_CUDA_SYNC_CHECKS makes that
// check also synchronise the device, so a fault is reported at the launch that caused it (slow:
// for debugging and tests, never with graph capture).
//
// Messages are built without fmt's compile-time format strings, which nvcc 13's front end
// rejects (fmt 9 disables constexpr under __NVCC__ but keeps consteval). Translation units that
// include both these headers and code using peft::fail / peft::require must be compiled with
// -DFMT_USE_CONSTEXPR=1 (see docs/cuda_backend.md).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "peft/core/error.hpp"

namespace peft::cuda::detail {

inline std::string where(const char* call, const char* file, int line) {
  return std::string(call) + " at " + file + ":" + std::to_string(line);
}

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw Error(std::string("CUDA error ") + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) +
              ") in " + where(call, file, line));
}

inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw Error(std::string("cuBLAS error ") + cublasLtGetStatusName(status) + " (" + cublasLtGetStatusString(status) +
              ") in " + where(call, file, line));
}

inline void check_launch(const char* kernel, const char* file, int line) {
  check_cuda(cudaGetLastError(), (std::string("launch of ") + kernel).c_str(), file, line);
#ifdef PEFT_CUDA_SYNC_CHECKS
  check_cuda(cudaDeviceSynchronize(), (std::string("execution of ") + kernel).c_str(), file, line);
#endif
}

}  // namespace peft::cuda::detail

#define PEFT_CUDA_CHECK(call) ::peft::cuda::detail::check_cuda((call), #call, __FILE__, __LINE__)
#define PEFT_CUBLAS_CHECK(call) ::peft::cuda::detail::check_cublas((call), #call, __FILE__, __LINE__)
#define PEFT_CUDA_CHECK_LAUNCH(kernel_name) ::peft::cuda::detail::check_launch(kernel_name, __FILE__, __LINE__)
