// Loading a checkpoint's frozen weights straight into device memory: bf16 bytes go from the
// memory-mapped shards into a ring of pinned staging buffers and from there to the device with
// cudaMemcpyAsync, so reading the next piece overlaps copying the last one.
//
// Why not the WeightSource path: that converts every tensor to an fp32 Eigen matrix, rounds it
// back to bf16 in a pageable vector and copies it synchronously: for the 7B's 15 GB, three passes
// over the data on one thread, and a staging copy inside the driver. Here a bf16 tensor is read
// once (mmap -> pinned, by several threads, which is what bounds the load from page cache) and
// DMA'd once. F32 and F16 tensors (small test models) are converted while staging, to the same
// bits the WeightSource path gives (convert_to_bf16).
//
// The plan (io/safetensors_plan.hpp) resolves and checks every tensor before anything moves: the
// threads below only copy. Buffer b is reused by chunk c only after chunk c - buffers' copy out of
// it has finished (its event), and chunks are claimed in order, so the oldest unfinished chunk
// never waits on a later one.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "peft/kernels/cuda/bf16.cuh"
#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/io/safetensors_plan.hpp"

namespace peft::cuda {

// A bf16 device buffer to fill from the checkpoint tensor `name`, which must have `shape`.
struct WeightDestination {
  std::string name;
  bf16* data = nullptr;
  std::vector<std::int64_t> shape;
};

struct WeightLoaderOptions {
  std::size_t staging_bytes = 16u << 20;  // one pinned buffer (bytes of bf16 output); larger tensors are split
  int buffers = 16;                       // the ring (at least `threads`; twice that lets a thread stage while its copy runs)
  int threads = 8;                        // host threads copying mmap -> pinned: page-cache reads bound the load
};

struct WeightLoadStats {
  std::uint64_t file_bytes = 0, device_bytes = 0;
  std::size_t tensors = 0, chunks = 0;
  double seconds = 0;  // plan, pinned allocation, copies, final synchronisation
};

namespace detail {

// The pinned ring, its events and one stream per thread, released together.
class StagingRing {
 public:
  StagingRing(int buffers, std::size_t bytes, int streams) : bytes_((bytes + 4095) / 4096 * 4096) {
    PEFT_CUDA_CHECK(cudaMallocHost(&host_, bytes_ * static_cast<std::size_t>(buffers)));
    events_.resize(static_cast<std::size_t>(buffers), nullptr);
    for (auto& e : events_) PEFT_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    streams_.resize(static_cast<std::size_t>(streams), nullptr);
    for (auto& s : streams_) PEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  }
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;
  ~StagingRing() {
    for (auto s : streams_)
      if (s) cudaStreamSynchronize(s), cudaStreamDestroy(s);
    for (auto e : events_)
      if (e) cudaEventDestroy(e);
    if (host_) cudaFreeHost(host_);
  }

  std::uint16_t* host(std::size_t b) { return reinterpret_cast<std::uint16_t*>(static_cast<char*>(host_) + b * bytes_); }
  cudaEvent_t event(std::size_t b) const { return events_[b]; }
  cudaStream_t stream(std::size_t t) const { return streams_[t]; }
  void synchronize() {
    for (auto s : streams_) PEFT_CUDA_CHECK(cudaStreamSynchronize(s));
  }

 private:
  std::size_t bytes_;
  void* host_ = nullptr;
  std::vector<cudaEvent_t> events_;
  std::vector<cudaStream_t> streams_;
};

}  // namespace detail

// Fills every destination from `model` and returns when all bytes are on the device. Work already
// queued on `stream` finishes first (it may still be using the destinations).
inline WeightLoadStats load_weights_bf16(const SafetensorsModel& model, std::span<const WeightDestination> dst,
                                         cudaStream_t stream, const WeightLoaderOptions& opt = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  require(opt.threads >= 1 && opt.buffers >= 1 && opt.staging_bytes >= 2,
          "weight loader: threads, buffers and staging_bytes must be positive (got {}, {}, {})", opt.threads,
          opt.buffers, opt.staging_bytes);
  std::vector<TensorRequest> requests;
  requests.reserve(dst.size());
  for (const auto& d : dst) requests.push_back({d.name, d.shape});
  const TensorReadPlan plan = plan_bf16_reads(model, requests);
  const std::vector<ReadChunk> chunks = split_reads(plan, opt.staging_bytes);
  for (const auto& p : plan.reads)
    require(dst[p.request].data != nullptr || p.stored->numel() == 0, "weight loader: no device buffer for '{}'",
            dst[p.request].name);
  WeightLoadStats stats{plan.file_bytes, plan.bf16_bytes, plan.reads.size(), chunks.size(), 0.0};

  PEFT_CUDA_CHECK(cudaStreamSynchronize(stream));
  int device = 0;
  PEFT_CUDA_CHECK(cudaGetDevice(&device));
  const int threads = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(opt.threads), std::max<std::size_t>(chunks.size(), 1)));
  // No more pinned memory than the chunks need (a small model loads through small buffers).
  std::size_t largest = 2;
  for (const auto& ch : chunks) largest = std::max(largest, ch.count * 2);
  const int buffers = std::max(static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(opt.buffers), chunks.size())), threads);
  detail::StagingRing ring(buffers, largest, threads);

  std::atomic<std::size_t> next{0};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<long long> issued(static_cast<std::size_t>(buffers));  // last chunk whose copy left buffer b
  for (int b = 0; b < buffers; ++b) issued[static_cast<std::size_t>(b)] = b - buffers;
  bool failed = false;
  std::exception_ptr error;

  auto work = [&](int t) {
    try {
      PEFT_CUDA_CHECK(cudaSetDevice(device));  // the current device is per host thread
      for (;;) {
        const std::size_t c = next.fetch_add(1);
        if (c >= chunks.size()) return;
        const std::size_t b = c % static_cast<std::size_t>(buffers);
        {
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return failed || issued[b] == static_cast<long long>(c) - buffers; });
          if (failed) return;
        }
        PEFT_CUDA_CHECK(cudaEventSynchronize(ring.event(b)));  // the previous copy out of b is done
        const ReadChunk& ch = chunks[c];
        const PlannedTensor& p = plan.reads[ch.read];
        convert_to_bf16(*p.stored, ch.begin, ch.count, ring.host(b));
        PEFT_CUDA_CHECK(cudaMemcpyAsync(dst[p.request].data + ch.begin, ring.host(b), ch.count * 2,
                                        cudaMemcpyDefault,  // dst may be mapped host memory (host embedding)
                                        ring.stream(static_cast<std::size_t>(t))));
        PEFT_CUDA_CHECK(cudaEventRecord(ring.event(b), ring.stream(static_cast<std::size_t>(t))));
        {
          std::lock_guard lock(mu);
          issued[b] = static_cast<long long>(c);
        }
        cv.notify_all();
      }
    } catch (...) {
      {
        std::lock_guard lock(mu);
        if (!error) error = std::current_exception();
        failed = true;
      }
      cv.notify_all();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  ring.synchronize();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

// The same from a model folder (model.safetensors or model.safetensors.index.json + shards).
inline WeightLoadStats load_weights_bf16(const std::filesystem::path& dir, std::span<const WeightDestination> dst,
                                         cudaStream_t stream, const WeightLoaderOptions& opt = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  const SafetensorsModel model = SafetensorsModel::open(dir);
  WeightLoadStats s = load_weights_bf16(model, dst, stream, opt);
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

}  // namespace peft::cuda
