// What the GEMM benches (gemm_shapes.cu, gemm_search.cu) share: `reps` calls captured in one CUDA
// graph and timed as a whole, so a short kernel's time is not its launch's.
#pragma once
#include <algorithm>

#include <cuda_runtime.h>

#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::bench {

// us a call: call(r) for r = 0..reps-1 captured on `s`, the graph launched once to warm up, then
// `launches` times; the median launch over reps. The caller runs call once before (plans made
// outside the capture).
template <class Call>
double us_a_call_in_graph(cudaStream_t s, int reps, Call&& call, int launches = 3) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  PEFT_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int r = 0; r < reps; ++r) call(r);
  PEFT_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  PEFT_CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  PEFT_CUDA_CHECK(cudaGraphLaunch(ge, s));
  cudaEvent_t a, b;
  PEFT_CUDA_CHECK(cudaEventCreate(&a));
  PEFT_CUDA_CHECK(cudaEventCreate(&b));
  float ms[9] = {};
  launches = std::clamp(launches, 1, 9);
  for (int i = 0; i < launches; ++i) {
    PEFT_CUDA_CHECK(cudaEventRecord(a, s));
    PEFT_CUDA_CHECK(cudaGraphLaunch(ge, s));
    PEFT_CUDA_CHECK(cudaEventRecord(b, s));
    PEFT_CUDA_CHECK(cudaEventSynchronize(b));
    PEFT_CUDA_CHECK(cudaEventElapsedTime(&ms[i], a, b));
  }
  std::sort(ms, ms + launches);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return 1000.0 * ms[launches / 2] / reps;
}

}  // namespace peft::bench
