// Which kernels a GPU gets, decided on the host from its compute capability, in plain C++ (no CUDA
// headers) so the rule is unit-tested on machines without a GPU (tests/test_kernel_family.cpp).
//
// Why a run-time choice: one build serves Ampere (sm_80, sm_86), Ada (sm_89) and Hopper (sm_90).
// The fat binary carries machine code for each, so the driver already picks the right SASS; but
// some choices are made by the host before a launch and must match the card:
//   - Hopper (sm_90+): programmatic dependent launch (pdl.cuh) and 8-byte vector atomics in the
//     attention backward; those instructions exist in the sm_90 code only (#if __CUDA_ARCH__ >= 900).
//   - portable (sm_80+): mma.sync, ldmatrix and cp.async only, scalar atomics, no launch attribute.
//   - shared memory: the attention backward's two-stage pipeline needs 105 KB a block at head_dim
//     128; sm_86 and sm_89 allow 99 KB, so those cards run its one-stage variant (72.5 KB).
// PEFT_CUDA_PORTABLE=1 forces the portable family and the smallest supported card's shared-memory
// limit, so a Hopper machine exercises the code paths an RTX 3090 or 4090 takes. Messages are built
// without fmt, as in every header an nvcc translation unit includes (cuda_check.cuh says why).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "peft/core/error.hpp"

namespace peft::cuda {

enum class KernelFamily { Portable, Hopper };

// What the decision needs to know about a GPU (cudaDeviceProp's fields of the same meaning).
struct GpuFacts {
  std::string name;
  int major = 0, minor = 0;
  int sms = 0;
  std::size_t total_bytes = 0;
  std::size_t smem_optin = 0;  // sharedMemPerBlockOptin: the most dynamic shared memory a block may ask for
  // The virtual architecture of this binary's code for the GPU (cudaFuncAttributes::ptxVersion:
  // 90 for sm_90a machine code, 80 for compute_80 PTX the driver compiled): the __CUDA_ARCH__ the
  // kernels were compiled with, so whether the Hopper instructions are in them at all.
  int code_arch = 0;
};

struct KernelChoice {
  KernelFamily family = KernelFamily::Portable;
  std::size_t smem_optin = 0;  // the limit the launchers plan for (clamped when portable is forced)
  bool forced_portable = false;
};

inline constexpr int kMinComputeCapability = 80;
// sm_86 / sm_89's opt-in limit (101376 bytes): the smallest among the supported cards.
inline constexpr std::size_t kPortableSmemOptin = 99 * 1024;

inline std::string sm_name(int major, int minor) { return "sm_" + std::to_string(major * 10 + minor); }

// Throws for a card older than sm_80, naming it and the minimum.
inline KernelChoice choose_kernels(const GpuFacts& g, bool force_portable) {
  const int cc = g.major * 10 + g.minor;
  if (cc < kMinComputeCapability)
    throw Error("GPU '" + g.name + "' has compute capability " + std::to_string(g.major) + "." +
                std::to_string(g.minor) + " (" + sm_name(g.major, g.minor) +
                "); the CUDA backend needs sm_80 or newer (Ampere: A100, RTX 30xx; Ada: RTX 40xx, L40S; "
                "Hopper: H100, H200): its kernels use mma.sync, ldmatrix, cp.async and bf16");
  KernelChoice c;
  c.forced_portable = force_portable;
  // A Hopper card running code compiled for an older architecture (a compute_80 PTX build) has no
  // griddepcontrol.wait in its kernels: launching them with the PDL attribute would race.
  c.family = cc >= 90 && g.code_arch >= 90 && !force_portable ? KernelFamily::Hopper : KernelFamily::Portable;
  c.smem_optin = force_portable && g.smem_optin > kPortableSmemOptin ? kPortableSmemOptin : g.smem_optin;
  return c;
}

// PEFT_CUDA_PORTABLE: unset, "0" or "" = off; "1" = on; anything else is an error naming it.
inline bool portable_forced_by(const char* env) {
  if (!env || !*env || std::string(env) == "0") return false;
  if (std::string(env) != "1") throw Error(std::string("PEFT_CUDA_PORTABLE must be 0 or 1 (got '") + env + "')");
  return true;
}

// "[cuda] NVIDIA H200 (sm_90, 132 SMs, 139 GiB): Hopper kernels (PDL on)": the line the programs
// print, so a log says which code produced its numbers.
inline std::string describe_kernels(const GpuFacts& g, const KernelChoice& c, bool pdl_enabled) {
  std::string s = "[cuda] " + g.name + " (" + sm_name(g.major, g.minor) + ", " + std::to_string(g.sms) + " SMs, " +
                  std::to_string(static_cast<long long>((g.total_bytes + (std::size_t{1} << 29)) >> 30)) + " GiB): ";
  if (c.family == KernelFamily::Hopper) return s + "Hopper kernels (PDL " + (pdl_enabled ? "on" : "off") + ")";
  s += "portable sm_80 kernels";
  if (c.forced_portable) s += " (forced by PEFT_CUDA_PORTABLE=1, shared memory limited to 99 KB a block)";
  else if (g.major * 10 + g.minor >= 90 && g.code_arch < 90)
    s += " (this binary's code for it is compute_" + std::to_string(g.code_arch) + ")";
  return s;
}

}  // namespace peft::cuda
