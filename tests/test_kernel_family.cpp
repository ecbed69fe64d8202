// Which kernels a GPU gets (kernels/cuda/kernel_family.hpp), decided on the host from the compute
// capability: Hopper kernels on sm_90, the portable sm_80 family on Ampere and Ada (and on Hopper
// when PEFT_CUDA_PORTABLE=1, which also clamps shared memory to the smallest supported card's),
// and a named error for anything older than sm_80.
#include <catch2/catch.hpp>

#include "peft/kernels/cuda/kernel_family.hpp"

using namespace peft;
using namespace peft::cuda;
using Catch::Contains;

namespace {
// code_arch: the fat binary's machine code for each (sm_90a's virtual architecture is 90).
const GpuFacts h200{"NVIDIA H200", 9, 0, 132, 150'000'000'000, 232'448, 90};
const GpuFacts a100{"NVIDIA A100-SXM4-80GB", 8, 0, 108, 85'000'000'000, 166'912, 80};
const GpuFacts rtx3090{"NVIDIA GeForce RTX 3090", 8, 6, 82, 25'000'000'000, 101'376, 86};
const GpuFacts rtx4090{"NVIDIA GeForce RTX 4090", 8, 9, 128, 25'000'000'000, 101'376, 89};
const GpuFacts t4{"Tesla T4", 7, 5, 40, 15'000'000'000, 65'536, 75};
}  // namespace

TEST_CASE("Hopper gets the Hopper kernels and its full shared memory") {
  const KernelChoice c = choose_kernels(h200, false);
  CHECK(c.family == KernelFamily::Hopper);
  CHECK(c.smem_optin == 232'448);
  CHECK(describe_kernels(h200, c, true) == "[cuda] NVIDIA H200 (sm_90, 132 SMs, 140 GiB): Hopper kernels (PDL on)");
  CHECK_THAT(describe_kernels(h200, c, false), Contains("(PDL off)"));
}

TEST_CASE("Ampere and Ada get the portable kernels with their own shared-memory limit") {
  for (const GpuFacts& g : {a100, rtx3090, rtx4090}) {
    const KernelChoice c = choose_kernels(g, false);
    CHECK(c.family == KernelFamily::Portable);
    CHECK(c.smem_optin == g.smem_optin);
  }
  CHECK(describe_kernels(rtx4090, choose_kernels(rtx4090, false), true) ==
        "[cuda] NVIDIA GeForce RTX 4090 (sm_89, 128 SMs, 23 GiB): portable sm_80 kernels");
}

TEST_CASE("PEFT_CUDA_PORTABLE=1 makes a Hopper card run what an RTX 4090 runs") {
  const KernelChoice c = choose_kernels(h200, true);
  CHECK(c.family == KernelFamily::Portable);
  CHECK(c.smem_optin == kPortableSmemOptin);
  CHECK(kPortableSmemOptin <= rtx4090.smem_optin);
  CHECK_THAT(describe_kernels(h200, c, true), Contains("portable sm_80 kernels (forced by PEFT_CUDA_PORTABLE=1"));
  CHECK(choose_kernels(rtx3090, true).smem_optin == kPortableSmemOptin);  // never raised
}

TEST_CASE("a Hopper card running compute_80 code gets the portable kernels (no PDL: its kernels cannot wait)") {
  GpuFacts jit = h200;
  jit.code_arch = 80;  // a PTX-only compute_80 build, compiled by the driver
  const KernelChoice c = choose_kernels(jit, false);
  CHECK(c.family == KernelFamily::Portable);
  CHECK(c.smem_optin == h200.smem_optin);
  CHECK_THAT(describe_kernels(jit, c, true), Contains("portable sm_80 kernels (this binary's code for it is compute_80)"));
}

TEST_CASE("a GPU older than sm_80 is refused, naming the card and the minimum") {
  CHECK_THROWS_WITH(choose_kernels(t4, false), Contains("Tesla T4") && Contains("sm_75") && Contains("sm_80 or newer"));
  CHECK_THROWS_WITH(choose_kernels(t4, true), Contains("Tesla T4"));
}

TEST_CASE("PEFT_CUDA_PORTABLE accepts 0 and 1 and names a bad value") {
  CHECK_FALSE(portable_forced_by(nullptr));
  CHECK_FALSE(portable_forced_by(""));
  CHECK_FALSE(portable_forced_by("0"));
  CHECK(portable_forced_by("1"));
  CHECK_THROWS_WITH(portable_forced_by("yes"), Contains("PEFT_CUDA_PORTABLE") && Contains("'yes'"));
}
