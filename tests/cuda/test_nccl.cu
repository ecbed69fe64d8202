// The NCCL communicator (dist/nccl_communicator.cuh) on what one GPU can show; two ranks
// need two GPUs (NCCL refuses two ranks on one device), so the 2-GPU checks live in
// bench/run_multi_gpu.sh two-gpu. Here:
//   (1) a 1-rank communicator: rendezvous, non-blocking ncclCommInitRankConfig, and an all-reduce
//       of a device buffer, which over one rank must leave every value as it was (bit for bit);
//   (2) the trainer's gradient all-reduce over an arena block of tensors with alignment gaps:
//       merged into one bucket, values unchanged; tensors far apart: one bucket each;
//   (3) the hang path: a kernel spinning on a host flag holds the stream, so the all-reduce queued
//       behind it cannot finish, as when a peer hangs; with PEFT_NCCL_TIMEOUT=1 the call must throw
//       "not finished after" within 5 s and abort the communicator. A thread releases the flag
//       after 3 s: ncclCommAbort cancels NCCL's own kernels (what a real hung peer leaves), not
//       this stand-in, and may wait for the stream (the first GPU run, with the flag released only
//       after the call returned, hung here until killed at 90 s);
//   (4) a rank that never comes: world size 2 with no rank 1 fails the rendezvous within 5 s.
#include <chrono>
#include <cstdlib>
#include <thread>
#include <string>
#include <vector>

#include "cuda_test.cuh"
#include "peft/dist/nccl_communicator.cuh"
#include "peft/optim/cuda/device_parameters.cuh"

using namespace peft;
using peft::cuda_test::Floats;
using peft::cuda_test::TestContext;

namespace {

peft::dist::LaunchEnv one_rank(double timeout_s) {
  peft::dist::LaunchEnv e;
  e.rank_given = true;
  e.backend = "nccl";
  e.master_port = 0;  // rank 0 listens on any free port; nobody else needs it at world size 1
  e.timeout_s = timeout_s;
  return e;
}

__global__ void spin_until(volatile int* flag) {
  while (*flag == 0) __nanosleep(1000);
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // a test killed by a timeout still shows how far it got
  TestContext t(argc, argv, "nccl communicator");
  try {
    peft::cuda::DeviceArena arena(64 << 20);
    cudaStream_t stream;
    PEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    {
      peft::cuda::NcclCommunicator comm(one_rank(30));
      std::printf("  %s, rank %d of %d\n", comm.library().c_str(), comm.rank(), comm.world_size());
      // (1)
      const Floats v = t.normal_f32(1 << 20);
      float* d = cuda_test::upload_f32(arena, v);
      comm.all_reduce_sum_device(d, v.size(), stream);
      t.expect(cuda_test::download_f32(d, v.size()) == v, "1-rank all-reduce leaves 1M values unchanged");
      // (2) an arena block: sizes that leave alignment gaps between tensors
      std::vector<peft::cuda::DeviceParameter> ps;
      std::vector<Floats> vals;
      for (int n : {1000, 4096, 77, 12345}) {
        vals.push_back(t.normal_f32(static_cast<std::size_t>(n)));
        peft::cuda::DeviceParameter p;
        p.name = "t" + std::to_string(ps.size());
        p.grad = cuda_test::upload_f32(arena, vals.back());
        p.rows = 1, p.cols = n, p.hf_rows = 1, p.hf_cols = n;
        ps.push_back(p);
      }
      peft::cuda::TrainingState st;
      st.stream = stream;
      peft::cuda::all_reduce_grads(comm, peft::cuda::DeviceParameters(ps, &st));
      bool same = true;
      for (std::size_t i = 0; i < ps.size(); ++i)
        same = same && cuda_test::download_f32(ps[i].grad, vals[i].size()) == vals[i];
      t.expect(same, "gradient all-reduce over an arena block (one bucket)");
      // Far apart (another arena): one bucket each, still unchanged.
      peft::cuda::DeviceArena other(1 << 20);
      ps[1].grad = cuda_test::upload_f32(other, vals[1]);
      peft::cuda::all_reduce_grads(comm, peft::cuda::DeviceParameters(ps, &st));
      t.expect(cuda_test::download_f32(ps[1].grad, vals[1].size()) == vals[1], "gradient all-reduce over two blocks");
    }
    {
      // (3)
      ::setenv("PEFT_NCCL_TIMEOUT", "1", 1);
      peft::cuda::NcclCommunicator comm(one_rank(30));
      int* flag = nullptr;
      PEFT_CUDA_CHECK(cudaHostAlloc(&flag, sizeof(int), cudaHostAllocMapped));
      *flag = 0;
      int* dflag = nullptr;
      PEFT_CUDA_CHECK(cudaHostGetDevicePointer(&dflag, flag, 0));
      float* d = arena.alloc<float>(1024, "hang test buffer");
      spin_until<<<1, 1, 0, stream>>>(dflag);
      PEFT_CUDA_CHECK_LAUNCH("spin_until");
      std::thread release([flag] {
        std::this_thread::sleep_for(std::chrono::seconds(3));
        *reinterpret_cast<volatile int*>(flag) = 1;
      });
      std::printf("  (3) all-reduce behind a spinning kernel, PEFT_NCCL_TIMEOUT=1 ...\n");
      const auto t0 = std::chrono::steady_clock::now();
      const std::string msg = error_of([&] { comm.all_reduce_sum_device(d, 1024, stream); });
      const double took = since(t0);
      release.join();
      PEFT_CUDA_CHECK(cudaStreamSynchronize(stream));
      std::printf("  stuck all-reduce: %.2f s: %s\n", took, msg.c_str());
      t.expect(msg.find("not finished after") != std::string::npos && msg.find("aborted") != std::string::npos,
               "a stuck all-reduce ends in an error and an abort");
      t.expect(took < 5.0, "... within 5 s at PEFT_NCCL_TIMEOUT=1");
      PEFT_CUDA_CHECK(cudaFreeHost(flag));
      ::unsetenv("PEFT_NCCL_TIMEOUT");
    }
    {
      // (4)
      peft::dist::LaunchEnv e = one_rank(1);
      e.world_size = 2;
      const auto t0 = std::chrono::steady_clock::now();
      const std::string msg = error_of([&] { peft::cuda::NcclCommunicator comm(e); });
      std::printf("  missing rank 1: %.2f s: %s\n", since(t0), msg.c_str());
      t.expect(msg.find("not every rank connected") != std::string::npos && since(t0) < 5.0,
               "a missing rank fails the rendezvous within 5 s");
    }
    PEFT_CUDA_CHECK(cudaStreamDestroy(stream));
  } catch (const std::exception& e) {
    std::printf("  unexpected error: %s\n", e.what());
    t.expect(false, "no unexpected error");
  }
  return t.finish();
}
