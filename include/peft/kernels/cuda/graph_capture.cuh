// Captures what a function launches on a stream into an instantiated CUDA graph, so a step with a
// shape seen before replays in one launch. An exception thrown inside the capture ends it (and
// frees the partial graph) before it propagates: a stream left capturing fails every later call.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <set>

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

// A step's graphs by shape (Shape: ordered; what the step's launches depend on). A shape runs
// eagerly the first time it is seen (so what it sets up once, such as cuBLASLt's plans, happens
// outside any capture), is captured the second time and replays from then on; past kMaxGraphs
// shapes, new ones run eagerly (packed batches of many lengths would otherwise hold a graph
// each).
template <class Shape>
class GraphCache {
 public:
  static constexpr std::size_t kMaxGraphs = 16;

  GraphCache() = default;
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;
  ~GraphCache() {
    for (auto& [shape, exec] : graphs_) cudaGraphExecDestroy(exec);
  }

  // launch() enqueues the step on `stream`; it runs, is captured or is replayed as above.
  template <class F>
  void run(const Shape& shape, cudaStream_t stream, F&& launch) {
    if (auto it = graphs_.find(shape); it != graphs_.end()) {
      PEFT_CUDA_CHECK(cudaGraphLaunch(it->second, stream));
    } else if (seen_.count(shape) == 0 || graphs_.size() >= kMaxGraphs) {
      seen_.insert(shape);
      launch();
    } else {
      const cudaGraphExec_t exec = capture_graph(stream, launch);
      graphs_.emplace(shape, exec);
      PEFT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    }
  }

 private:
  std::map<Shape, cudaGraphExec_t> graphs_;
  std::set<Shape> seen_;
};

}  // namespace peft::cuda
