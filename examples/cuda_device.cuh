// Which backend a CUDA program runs on, decided the same way by every such program
// (identity_finetune_cuda, lr_epoch_sweep_cuda, chat_cuda, ...): `--device cuda` needs a GPU and a
// run the CUDA backend can do, `--device auto` (the default) takes the GPU when both hold, and the
// choice is printed as a "[device]" line so a log says where its numbers came from, followed by a
// "[cuda]" line naming the GPU, its compute capability and the kernel family it runs
// (kernels/cuda/kernel_family.hpp), and a "[cuda] attention" line (cuDNN's or ours). A GPU older
// than sm_80 is an error under `--device cuda` and leaves `--device auto` on the CPU, saying why.
#pragma once
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <cstdio>
#include <string>

#include "peft/kernels/cuda/attention.cuh"
#include "peft/kernels/cuda/device_kernels.cuh"
#include "peft/core/error.hpp"

namespace peft::examples {

inline bool cuda_present(std::string* name) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) *name = p.name;
  return true;
}

// `cpu_only`: why this run needs the CPU backend (e.g. "--train_type full is CPU-only"), empty
// when the CUDA backend can do it. Returns true for the CUDA backend. `out`: where the "[device]"
// line goes (chat_cuda keeps stdout for its JSONL).
inline bool choose_cuda(const std::string& device, const std::string& cpu_only, std::FILE* out = stdout) {
  require(device == "auto" || device == "cuda" || device == "cpu", "--device must be auto, cuda or cpu (got '{}')",
          device);
  std::string gpu, kernels, unsupported;
  bool has_gpu = device != "cpu" && cuda_present(&gpu);
  if (has_gpu) {
    try {
      kernels = cuda::describe_device(0);
    } catch (const Error& e) {  // older than sm_80, or not in this binary's architectures
      if (device == "cuda") fail("--device cuda: {}", e.what());
      unsupported = e.what();
      has_gpu = false;
    }
  }
  if (device == "cuda") {
    require(cpu_only.empty(), "--device cuda: {} (use --device cpu)", cpu_only);
    require(has_gpu, "--device cuda: no CUDA device is visible (cudaGetDeviceCount found none)");
  }
  if (device == "cuda" || (device == "auto" && has_gpu && cpu_only.empty())) {
    fmt::print(out, "[device] cuda:0 ({}){}\n", gpu, device == "auto" ? ", chosen by --device auto" : "");
    fmt::print(out, "{}\n{}\n", kernels, cuda::describe_attention());
    return true;
  }
  if (device == "auto")
    fmt::print(out, "[device] cpu ({})\n", has_gpu                ? cpu_only
                                           : !unsupported.empty() ? unsupported
                                                                  : std::string("no CUDA device visible"));
  return false;
}

}  // namespace peft::examples
