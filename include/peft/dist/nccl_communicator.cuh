// The GPU transport of data-parallel training: NCCL, what every GPU training stack uses. The ranks
// meet at the rendezvous (dist/rendezvous.hpp), which carries rank 0's ncclUniqueId to the others;
// NCCL then builds its own rings (NVLink, PCIe, InfiniBand) and sums the gradients where they are.
//
// Faults: the communicator is created non-blocking (ncclConfig_t.blocking = 0), and every wait -
// the init, each all-reduce - polls ncclCommGetAsyncError and the stream with a deadline
// (PEFT_NCCL_TIMEOUT seconds, else PEFT_DIST_TIMEOUT). A rank that died or hangs leaves the others'
// collectives unfinished; at the deadline the communicator is aborted (ncclCommAbort frees the
// kernels stuck waiting) and the run stops with an error, where a plain cudaStreamSynchronize
// would wait forever.
//
// Gradients: one bucket. The CUDA model keeps every LoRA gradient in one contiguous block of its
// arena (fp32; about 20M values, 80 MB, for Qwen2.5-7B all-linear r=8), so a step is one
// ncclAllReduce over that block, once per optimizer step (after the last micro-batch: the
// accumulation steps need no communication). Overlapping it with the backward pass (per-layer
// buckets, as DDP does) is where it would pay if the all-reduce were a visible part of the step;
// here it is not: 80 MB over NVLink (~300 GB/s bus bandwidth) is ~0.5 ms against a step of several
// seconds at seq 2048 x GA 16 (docs/multi_gpu.md has the estimate).
//
// libnccl is opened at run time (dlopen), not linked: a single-GPU run and the CPU paths of this
// binary need no NCCL on the machine, and the binary stays copyable to a machine that has only the
// driver. PEFT_NCCL_LIBRARY names the library when it is not on the loader's path.
#pragma once
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <fmt/ranges.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/dist/tcp_communicator.hpp"

namespace peft::cuda {

// The NCCL entry points this file uses, resolved once from libnccl.so.2.
struct NcclLibrary {
  void* handle = nullptr;
  std::string path;
  ncclResult_t (*getVersion)(int*) = nullptr;
  ncclResult_t (*getUniqueId)(ncclUniqueId*) = nullptr;
  ncclResult_t (*commInitRankConfig)(ncclComm_t*, int, ncclUniqueId, int, ncclConfig_t*) = nullptr;
  ncclResult_t (*allReduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*commGetAsyncError)(ncclComm_t, ncclResult_t*) = nullptr;
  ncclResult_t (*commAbort)(ncclComm_t) = nullptr;
  ncclResult_t (*commFinalize)(ncclComm_t) = nullptr;
  ncclResult_t (*commDestroy)(ncclComm_t) = nullptr;
  const char* (*getErrorString)(ncclResult_t) = nullptr;
  const char* (*getLastError)(ncclComm_t) = nullptr;

  static const NcclLibrary& get() {
    static const NcclLibrary lib = load();
    return lib;
  }
  int version() const {
    int v = 0;
    getVersion(&v);
    return v;
  }

 private:
  static NcclLibrary load() {
    NcclLibrary l;
    std::vector<std::string> tried;
    if (const char* p = std::getenv("PEFT_NCCL_LIBRARY"); p && *p) tried.push_back(p);
    tried.insert(tried.end(), {"libnccl.so.2", "libnccl.so", "/usr/local/cuda/lib64/libnccl.so.2"});
    for (const auto& p : tried)
      if ((l.handle = ::dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL)) != nullptr) {
        l.path = p;
        break;
      }
    require(l.handle != nullptr, "NCCL: cannot load libnccl (tried {}): install NCCL, add its lib folder to "
            "LD_LIBRARY_PATH or name the file in PEFT_NCCL_LIBRARY", fmt::join(tried, ", "));
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(l.handle, name));
      require(fn != nullptr, "NCCL: {} has no {} (NCCL 2.14 or newer is needed)", l.path, name);
    };
    sym(l.getVersion, "ncclGetVersion");
    sym(l.getUniqueId, "ncclGetUniqueId");
    sym(l.commInitRankConfig, "ncclCommInitRankConfig");
    sym(l.allReduce, "ncclAllReduce");
    sym(l.commGetAsyncError, "ncclCommGetAsyncError");
    sym(l.commAbort, "ncclCommAbort");
    sym(l.commFinalize, "ncclCommFinalize");
    sym(l.commDestroy, "ncclCommDestroy");
    sym(l.getErrorString, "ncclGetErrorString");
    sym(l.getLastError, "ncclGetLastError");
    return l;
  }
};

class NcclCommunicator final : public dist::Communicator {
 public:
  // Joins the run: rendezvous (rank 0's unique id to everyone), then the NCCL communicator on the
  // current CUDA device. Host sums (the step's loss) go over the rendezvous's TCP connections.
  explicit NcclCommunicator(const dist::LaunchEnv& env) : lib_(NcclLibrary::get()), timeout_s_(env.timeout_s) {
    if (const char* t = std::getenv("PEFT_NCCL_TIMEOUT"); t && *t) {
      timeout_s_ = std::atof(t);
      require(timeout_s_ > 0, "PEFT_NCCL_TIMEOUT='{}': a positive number of seconds", t);
    }
    std::vector<std::uint8_t> blob;
    if (env.rank == 0) {
      ncclUniqueId id{};
      check(lib_.getUniqueId(&id), "ncclGetUniqueId");
      blob.assign(reinterpret_cast<const std::uint8_t*>(&id), reinterpret_cast<const std::uint8_t*>(&id) + sizeof id);
    }
    dist::Rendezvous rv = dist::rendezvous(env, blob);
    require(rv.blob.size() == sizeof(ncclUniqueId), "rendezvous: rank 0 sent {} bytes, an ncclUniqueId has {}",
            rv.blob.size(), sizeof(ncclUniqueId));
    ncclUniqueId id{};
    std::memcpy(&id, rv.blob.data(), sizeof id);
    host_ = std::make_unique<dist::TcpCommunicator>(std::move(rv), env.timeout_s);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const ncclResult_t r = lib_.commInitRankConfig(&comm_, env.world_size, id, env.rank, &config);
    if (r != ncclInProgress) check(r, "ncclCommInitRankConfig");
    wait_ready("ncclCommInitRankConfig (every rank must reach it)");
    PEFT_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;
  ~NcclCommunicator() override {
    if (done_) cudaEventDestroy(done_);
    if (!comm_) return;
    // Finalize (non-blocking: poll it, bounded), then destroy; anything else ends in an abort.
    ncclResult_t st = lib_.commFinalize(comm_);
    const auto deadline = dist::deadline_after(std::min(timeout_s_, 30.0));
    while (st == ncclInProgress && dist::Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      lib_.commGetAsyncError(comm_, &st);
    }
    if (st == ncclSuccess) lib_.commDestroy(comm_);
    else lib_.commAbort(comm_);
  }

  int rank() const override { return host_->rank(); }
  int world_size() const override { return host_->world_size(); }
  const char* name() const override { return "nccl"; }
  void all_reduce_sum(float* x, std::size_t n) override { host_->all_reduce_sum(x, n); }
  void all_reduce_sum(double* x, std::size_t n) override { host_->all_reduce_sum(x, n); }
  void barrier() override { host_->barrier(); }
  using Communicator::all_reduce_sum;
  std::string library() const {
    const int v = lib_.version();  // major * 10000 + minor * 100 + patch since NCCL 2.9
    return fmt::format("{} (NCCL {}.{}.{})", lib_.path, v / 10000, v / 100 % 100, v % 100);
  }

  // In place on the device; returns once the sum is there (bounded: see the top of the file).
  void all_reduce_sum_device(float* x, std::size_t n, void* stream) override {
    const auto s = static_cast<cudaStream_t>(stream);
    const ncclResult_t r = lib_.allReduce(x, x, n, ncclFloat32, ncclSum, comm_, s);
    if (r == ncclInProgress) wait_ready("ncclAllReduce (enqueue)");
    else check(r, "ncclAllReduce");
    PEFT_CUDA_CHECK(cudaEventRecord(done_, s));
    const auto deadline = dist::deadline_after(timeout_s_);
    for (;;) {
      const cudaError_t q = cudaEventQuery(done_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) PEFT_CUDA_CHECK(q);
      poll_async("ncclAllReduce");
      if (dist::Clock::now() > deadline) abort_with("ncclAllReduce of the gradients");
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  void check(ncclResult_t r, const char* what) {
    if (r == ncclSuccess) return;
    fail("NCCL {}: {} ({})", what, lib_.getErrorString(r), comm_ ? lib_.getLastError(comm_) : "");
  }
  void poll_async(const char* what) {
    ncclResult_t st = ncclSuccess;
    lib_.commGetAsyncError(comm_, &st);
    if (st != ncclSuccess && st != ncclInProgress) {
      const std::string msg = lib_.getErrorString(st);
      lib_.commAbort(comm_);
      comm_ = nullptr;
      fail("NCCL {}: {} (a peer rank failed?); communicator aborted", what, msg);
    }
  }
  void wait_ready(const char* what) {
    const auto deadline = dist::deadline_after(timeout_s_);
    for (;;) {
      ncclResult_t st = ncclInProgress;
      lib_.commGetAsyncError(comm_, &st);
      if (st == ncclSuccess) return;
      if (st != ncclInProgress) {
        const std::string msg = lib_.getErrorString(st);
        lib_.commAbort(comm_);
        comm_ = nullptr;
        fail("NCCL {}: {}; communicator aborted", what, msg);
      }
      if (dist::Clock::now() > deadline) abort_with(what);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  [[noreturn]] void abort_with(const char* what) {
    lib_.commAbort(comm_);
    comm_ = nullptr;
    fail("NCCL {}: not finished after {} s (PEFT_NCCL_TIMEOUT): a rank died or hangs; communicator aborted", what,
         timeout_s_);
  }

  const NcclLibrary& lib_;
  double timeout_s_;
  std::unique_ptr<dist::TcpCommunicator> host_;
  ncclComm_t comm_ = nullptr;
  cudaEvent_t done_ = nullptr;
};

}  // namespace peft::cuda
