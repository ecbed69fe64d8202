// NF4 dequantisation on the GPU (kernels/cuda/nf4_dequant.cuh through nf4_tensor.cuh's
// container) against the CPU quantiser's own dequantisation (peft::nf4, pinned to bitsandbytes),
// bit for bit: the weights of tests/support/nf4_cases.hpp (odd counts, several double-quant
// groups, zero / outlier / constant / tiny blocks, all scales 0) and, unless --small, the 7B's
// 3584 x 18944 down_proj shape, whose bandwidth is printed (not asserted). Each is planned through
// MemoryPlan (counted, then allocated), uploaded, dequantised whole and by row ranges (start a
// multiple of 8 or not, the tail, empty), and the 8 bf16 after each output must stay poisoned.
#include <bit>
#include <string>

#include "../support/nf4_cases.hpp"
#include "cuda_test.cuh"
#include "peft/kernels/cuda/memory_plan.cuh"
#include "peft/kernels/cuda/nf4_tensor.cuh"

namespace peft::cuda_test {
namespace {

constexpr std::uint32_t kPoisonBits = 0xFFFF0000u;  // a 0xFFFF bf16 read back as fp32
constexpr std::int64_t kGuard = 8;                  // poisoned bf16 after each output

// gpu[0, n) must equal cpu[first, first + n) bit for bit and gpu[n, n + kGuard) be untouched.
void expect_bits(TestContext& t, const std::string& what, const Floats& gpu, const Floats& cpu, std::int64_t first,
                 std::int64_t n) {
  std::int64_t differ = 0, first_bad = -1, overrun = 0;
  for (std::int64_t i = 0; i < n; ++i)
    if (std::bit_cast<std::uint32_t>(gpu[static_cast<std::size_t>(i)]) !=
        std::bit_cast<std::uint32_t>(cpu[static_cast<std::size_t>(first + i)])) {
      if (first_bad < 0) first_bad = i;
      ++differ;
    }
  for (std::int64_t i = n; i < n + kGuard; ++i)
    overrun += std::bit_cast<std::uint32_t>(gpu[static_cast<std::size_t>(i)]) != kPoisonBits ? 1 : 0;
  if (first_bad >= 0)
    std::printf("    %s: %lld of %lld differ; first at %lld: gpu %a, cpu %a\n", what.c_str(),
                static_cast<long long>(differ), static_cast<long long>(n), static_cast<long long>(first_bad),
                gpu[static_cast<std::size_t>(first_bad)], cpu[static_cast<std::size_t>(first + first_bad)]);
  if (overrun) std::printf("    %s: %lld guard elements overwritten\n", what.c_str(), static_cast<long long>(overrun));
  t.expect(differ == 0 && overrun == 0, what + " (bit for bit)");
}

// The device build of decode_absmax for every block: where nvcc's fused multiply-add would show
// (in the fp32 absmax; it rarely reaches a bf16 weight).
__global__ void absmax_kernel(float* out, nf4::Nf4Data t, nf4::Nf4Tables tables, std::int64_t blocks) {
  const std::int64_t b = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b < blocks) out[b] = nf4::decode_absmax(t, tables.map, b);
}

// Quantises `c` on the CPU, plans, uploads and dequantises it on the GPU, whole and by row ranges.
void check_case(TestContext& t, const test::Nf4Case& c, bool time_it) {
  const nf4::Nf4Tensor q = nf4::quantize(c.weight, c.name);
  Floats cpu(c.weight.size());
  nf4::dequantize(q, cpu.data());
  const std::int64_t n = c.rows * c.cols;

  cuda::MemoryPlan counting;
  cuda::plan_nf4_tensor(counting, c.rows, c.cols, c.name.c_str());
  const std::size_t scratch_bytes = static_cast<std::size_t>(n + kGuard) * 2 + static_cast<std::size_t>(n / 64 + 1) * 4;
  cuda::DeviceArena arena(counting.bytes() + scratch_bytes + 2 * cuda::DeviceArena::kAlignment);
  cuda::MemoryPlan allocating(arena);
  cuda::Nf4DeviceTensor w = cuda::plan_nf4_tensor(allocating, c.rows, c.cols, c.name.c_str());
  t.expect(arena.used() == counting.bytes() && allocating.bytes() == counting.bytes(),
           c.name + ": planned bytes = allocated bytes");
  cuda::upload_nf4(w, q, c.name);
  auto* out = alloc_poisoned<bf16>(arena, static_cast<std::size_t>(n + kGuard));

  auto* absmax = alloc_poisoned<float>(arena, static_cast<std::size_t>(w.blocks()));
  absmax_kernel<<<static_cast<unsigned>((w.blocks() + 255) / 256), 256>>>(absmax, w.data(), nf4::decode_tables(),
                                                                          w.blocks());
  PEFT_CUDA_CHECK_LAUNCH("absmax_kernel");
  const Floats absmax_cpu = nf4::block_absmax(q);
  const Floats absmax_gpu = download_f32(absmax, absmax_cpu.size());
  std::int64_t absmax_differ = 0;
  for (std::int64_t b = 0; b < w.blocks(); ++b)
    absmax_differ += std::bit_cast<std::uint32_t>(absmax_gpu[static_cast<std::size_t>(b)]) !=
                     std::bit_cast<std::uint32_t>(absmax_cpu[static_cast<std::size_t>(b)]);
  t.expect(absmax_differ == 0, c.name + ": fp32 absmax (bit for bit)");

  cuda::dequantize_bf16(out, w, 0);
  expect_bits(t, c.name + ": whole", download_bf16(out, static_cast<std::size_t>(n + kGuard)), cpu, 0, n);

  const std::int64_t r = c.rows;
  const std::pair<std::int64_t, std::int64_t> ranges[] = {
      {r / 4, r / 4 + (r + 2) / 3}, {std::min<std::int64_t>(1, r), (r + 1) / 2}, {r / 2, r}, {r - 1, r}, {r, r}};
  for (auto [row0, row1] : ranges) {
    poison(out, static_cast<std::size_t>(n + kGuard));
    cuda::dequantize_rows_bf16(out, w, row0, row1, 0);
    const std::int64_t count = (row1 - row0) * c.cols;
    expect_bits(t,
                c.name + ": rows [" + std::to_string(row0) + ", " + std::to_string(row1) + ")" +
                    ((row0 * c.cols) % 8 ? " unaligned" : ""),
                download_bf16(out, static_cast<std::size_t>(count + kGuard)), cpu, row0 * c.cols, count);
  }

  if (time_it) {
    const float ms = median_ms([&] { cuda::dequantize_bf16(out, w, 0); });
    const double bytes = static_cast<double>(nf4::storage_bytes(n)) + 2.0 * static_cast<double>(n);
    std::printf("  timing %s: %.1f us, %.0f GB/s (%.1f MB read + written)\n", c.name.c_str(), ms * 1e3,
                bytes / (ms * 1e-3) / 1e9, bytes / 1e6);
    const std::int64_t tile = 256;
    const float tile_ms = median_ms([&] { cuda::dequantize_rows_bf16(out, w, 1024, 1024 + tile, 0); });
    std::printf("  timing %lld-row tile: %.1f us\n", static_cast<long long>(tile), tile_ms * 1e3);
  }
}

int test_main(int argc, char** argv) {
  return run_test(argc, argv, "nf4 dequant", [](TestContext& t) {
    std::mt19937 rng(t.rng());
    for (const auto& c : test::nf4_cases(rng)) check_case(t, c, false);
    if (!t.small) {
      test::Nf4Case big{"7B down_proj 3584x18944", 3584, 18944, test::nf4_normal(rng, 3584LL * 18944, 0.02f)};
      check_case(t, big, true);
    }

    // Bad calls: a row range outside the weight, a tensor quantised with another size.
    std::mt19937 rng2(t.rng());
    cuda::DeviceArena arena(1u << 20);
    cuda::MemoryPlan plan(arena);
    cuda::Nf4DeviceTensor w = cuda::plan_nf4_tensor(plan, 4, 64, "w");
    auto* out = alloc_poisoned<bf16>(arena, 256);
    std::string msg;
    try {
      cuda::dequantize_rows_bf16(out, w, 2, 5, 0);
    } catch (const Error& e) {
      msg = e.what();
    }
    t.expect(msg.find("rows [2, 5)") != std::string::npos && msg.find("4 rows") != std::string::npos,
             "a row range past the end is refused, naming it");
    msg.clear();
    try {
      cuda::upload_nf4(w, nf4::quantize(test::nf4_normal(rng2, 192, 1.0f), "w"), "model.layers.0.mlp.up_proj.weight");
    } catch (const Error& e) {
      msg = e.what();
    }
    t.expect(msg.find("model.layers.0.mlp.up_proj.weight") != std::string::npos && msg.find("192") != std::string::npos,
             "an upload of another size is refused, naming the tensor");
  });
}

}  // namespace
}  // namespace peft::cuda_test

int main(int argc, char** argv) { return peft::cuda_test::test_main(argc, argv); }
