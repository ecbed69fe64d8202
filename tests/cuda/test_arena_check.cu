// The device arena's bump allocation, marks and high-water mark, and the error checks: a failing
// CUDA call, a bad launch and an exhausted arena each throw a message naming what failed and where.
#include <string>

#include "cuda_test.cuh"
#include "peft/kernels/cuda/device_arena.cuh"

namespace peft::cuda_test {

__global__ void fill_kernel(int* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = i;
}

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "arena and error checks", [](TestContext& t) {
    cuda::DeviceArena arena(1 << 20);
    t.expect(arena.capacity() == (1 << 20), "capacity rounded to the alignment");
    auto* a = arena.alloc<float>(10, "a");
    auto* b = arena.alloc<int>(1000, "b");
    t.expect(reinterpret_cast<std::uintptr_t>(a) % 256 == 0 && reinterpret_cast<std::uintptr_t>(b) % 256 == 0,
             "blocks are 256-byte aligned");
    if (!arena.separate_allocations())
      t.expect(reinterpret_cast<char*>(b) - reinterpret_cast<char*>(a) == 256, "bump allocation is contiguous");
    t.expect(arena.used() == 256 + 4096, "used bytes count aligned blocks");
    const std::size_t m = arena.mark();
    arena.alloc<char>(100000, "scratch");
    const std::size_t peak = arena.used();
    arena.release(m);
    t.expect(arena.used() == m && arena.high_water() == peak, "release keeps the high-water mark");

    fill_kernel<<<4, 256>>>(b, 1000);
    PEFT_CUDA_CHECK_LAUNCH("fill_kernel");
    std::vector<int> h(1000);
    PEFT_CUDA_CHECK(cudaMemcpy(h.data(), b, 4000, cudaMemcpyDeviceToHost));
    t.expect(h[999] == 999 && h[0] == 0, "memory from the arena is usable by kernels");

    std::string msg;
    try {
      arena.alloc<char>(2 << 20, "the oversized buffer");
    } catch (const Error& e) {
      msg = e.what();
    }
    t.expect(msg.find("the oversized buffer") != std::string::npos, "exhausted arena names the buffer: " + msg.substr(0, 60));

    msg.clear();
    try {
      PEFT_CUDA_CHECK(cudaSetDevice(9999));
    } catch (const Error& e) {
      msg = e.what();
    }
    t.expect(msg.find("cudaSetDevice(9999)") != std::string::npos && msg.find("test_arena_check.cu:") != std::string::npos,
             "failed call names the call, file and line");
    std::printf("    (%s)\n", msg.c_str());

    msg.clear();
    try {
      fill_kernel<<<1, 4096>>>(b, 1000);  // more threads than a block can have
      PEFT_CUDA_CHECK_LAUNCH("fill_kernel");
    } catch (const Error& e) {
      msg = e.what();
    }
    t.expect(msg.find("launch of fill_kernel") != std::string::npos, "bad launch names the kernel");
    std::printf("    (%s)\n", msg.c_str());
    PEFT_CUDA_CHECK(cudaDeviceSynchronize());
  });
}

}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
