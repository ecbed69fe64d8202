// What data-parallel training needs from the ranks' transport, and nothing more: sum a buffer
// over the ranks (gradients, the step's loss), wait for all (barrier), rank and world size. The
// trainer holds a Communicator* (nullptr: the single-process path, exactly as before - no call,
// no cost). Implementations:
//   - TcpCommunicator (dist/tcp_communicator.hpp): the CPU backend's transport (what gloo is to
//     torch), over the rendezvous sockets; also what CI tests the multi-process path with;
//   - NcclCommunicator (dist/nccl_communicator.cuh): the GPU transport, for device buffers.
// A virtual interface, not a template parameter: one all-reduce per optimizer step costs nothing
// next to the step, and the Trainer's type (and every program instantiating it) stays as it was.
#pragma once
#include <algorithm>
#include <cstddef>
#include <vector>

#include "peft/core/error.hpp"
#include "peft/core/parameter.hpp"

namespace peft::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual const char* name() const = 0;
  // In place, every rank ends with the same sum (summed in rank order: deterministic).
  virtual void all_reduce_sum(float* host, std::size_t n) = 0;
  virtual void all_reduce_sum(double* host, std::size_t n) = 0;
  // A device buffer on `stream` (a cudaStream_t); only a GPU transport has one.
  virtual void all_reduce_sum_device(float* /*device*/, std::size_t /*n*/, void* /*stream*/) {
    fail("the {} communicator sums host buffers only: a CUDA model needs NCCL (PEFT_DIST_BACKEND=nccl)", name());
  }
  virtual void barrier() = 0;

  double all_reduce_sum(double x) {
    all_reduce_sum(&x, 1);
    return x;
  }
};

// World 1: every call returns at once. For code that wants a communicator object either way.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  const char* name() const override { return "single-process"; }
  void all_reduce_sum(float*, std::size_t) override {}
  void all_reduce_sum(double*, std::size_t) override {}
  void all_reduce_sum_device(float*, std::size_t, void*) override {}
  void barrier() override {}
  using Communicator::all_reduce_sum;
};

// The host model's gradients (a ParameterList of Eigen matrices): one bucket - packed into one
// buffer, summed in one call, unpacked - since LoRA's few million values are one message.
// A device parameter list overloads this (dist/nccl_communicator.cuh), found by ADL as the
// trainer's clip_grad_norm is.
inline void all_reduce_grads(Communicator& c, const ParameterList& params) {
  std::size_t n = 0;
  for (const auto& p : params) n += static_cast<std::size_t>(p.grad->size());
  static thread_local std::vector<float> bucket;
  bucket.resize(n);
  std::size_t at = 0;
  for (const auto& p : params) {
    std::copy(p.grad->data(), p.grad->data() + p.grad->size(), bucket.data() + at);
    at += static_cast<std::size_t>(p.grad->size());
  }
  c.all_reduce_sum(bucket.data(), n);
  at = 0;
  for (const auto& p : params) {
    std::copy(bucket.data() + at, bucket.data() + at + p.grad->size(), p.grad->data());
    at += static_cast<std::size_t>(p.grad->size());
  }
}

}  // namespace peft::dist
