// Captures what a function launches on a stream into an instantiated CUDA graph, so a step with a
// shape seen before replays in one launch. An exception thrown inside the capture ends it (and
// frees the partial graph) before it propagates: a stream left capturing fails every later call.
#pragma once
#include <cuda_runtime.h>

#include "peft/kernels/cuda/cuda_check.cuh"

namespace peft::cuda {

template <class F>
cudaGraphExec_t capture_graph(cudaStream_t stream, F&& launch, cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed) {
  cudaGraph_t graph = nullptr;
  PEFT_CUDA_CHECK(cudaStreamBeginCapture(stream, mode));
  try {
    launch();
  } catch (...) {
    cudaStreamEndCapture(stream, &graph);
    if (graph) cudaGraphDestroy(graph);
    throw;
  }
  PEFT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  // The nodes keep their streams' priorities (a side stream below the main one: side_stream.cuh).
  const cudaError_t st = cudaGraphInstantiate(&exec, graph, cudaGraphInstantiateFlagUseNodePriority);
  cudaGraphDestroy(graph);
  PEFT_CUDA_CHECK(st);
  return exec;
}

}  // namespace peft::cuda
