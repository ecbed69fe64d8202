// The current GPU's kernel family (kernel_family.hpp), asked of the driver once per device and
// cached: launchers that have a Hopper path and a portable one (pdl.cuh, the attention backward)
// call hopper_kernels() / smem_optin() before each launch, the model asks at construction so an
// unsupported card fails before any allocation, and the programs print describe_device().
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "peft/kernels/cuda/cuda_check.cuh"
#include "peft/kernels/cuda/kernel_family.hpp"

#ifndef PEFT_CUDA_ARCHS_BUILT
#define PEFT_CUDA_ARCHS_BUILT "unknown"  // set by cmake/peftCuda.cmake from PEFT_CUDA_ARCHS
#endif

namespace peft::cuda {

struct DeviceKernels {
  GpuFacts gpu;
  KernelChoice choice;
};

namespace detail {
// Launched never: its attributes say whether this binary holds code the device can run.
__global__ void kernel_image_probe() {}
}  // namespace detail

inline const DeviceKernels& device_kernels(int device) {
  static std::mutex mu;
  static std::map<int, DeviceKernels> known;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = known.find(device); it != known.end()) return it->second;
  cudaDeviceProp p{};
  PEFT_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  DeviceKernels k;
  k.gpu = {p.name, p.major, p.minor, p.multiProcessorCount, p.totalGlobalMem, p.sharedMemPerBlockOptin};
  const bool forced = portable_forced_by(std::getenv("PEFT_CUDA_PORTABLE"));
  if (p.major * 10 + p.minor < kMinComputeCapability) choose_kernels(k.gpu, forced);  // throws, naming the card
  int previous = 0;
  PEFT_CUDA_CHECK(cudaGetDevice(&previous));
  PEFT_CUDA_CHECK(cudaSetDevice(device));
  cudaFuncAttributes attr{};
  const cudaError_t st = cudaFuncGetAttributes(&attr, detail::kernel_image_probe);
  PEFT_CUDA_CHECK(cudaSetDevice(previous));
  if (st == cudaErrorNoKernelImageForDevice || st == cudaErrorInvalidDeviceFunction) {
    cudaGetLastError();
    throw Error("GPU '" + k.gpu.name + "' (" + sm_name(k.gpu.major, k.gpu.minor) +
                ") cannot run this binary: it was built for CUDA architectures " PEFT_CUDA_ARCHS_BUILT
                "; rebuild with -DPEFT_CUDA_ARCHS including " + std::to_string(k.gpu.major * 10 + k.gpu.minor));
  }
  PEFT_CUDA_CHECK(st);
  k.gpu.code_arch = attr.ptxVersion;
  k.choice = choose_kernels(k.gpu, forced);
  return known.emplace(device, k).first->second;
}

inline const DeviceKernels& current_device_kernels() {
  int device = 0;
  PEFT_CUDA_CHECK(cudaGetDevice(&device));
  return device_kernels(device);
}

// A launch-shape tuning knob from the environment (the benches sweep them): the variable's positive
// integer value, else `fallback`. Callers read it once into a static they hand out by reference.
inline int env_tuning_knob(const char* name, int fallback) {
  const char* e = std::getenv(name);
  return e && std::atoi(e) > 0 ? std::atoi(e) : fallback;
}

// A path that is on unless the environment variable is "0" (the A/B switches).
inline bool env_switch_on(const char* name) {
  const char* e = std::getenv(name);
  return !(e && std::strcmp(e, "0") == 0);
}

// PEFT_DECODE_PDL=0 turns programmatic dependent launch off (pdl.cuh); on by default where Hopper.
inline bool pdl_requested() {
  static const bool on = env_switch_on("PEFT_DECODE_PDL");
  return on;
}

// The "[cuda] <name> (sm_XY, N SMs, M GiB): <family>" line; throws for an unsupported card.
inline std::string describe_device(int device) {
  const DeviceKernels& k = device_kernels(device);
  return describe_kernels(k.gpu, k.choice, pdl_requested());
}

inline bool hopper_kernels() { return current_device_kernels().choice.family == KernelFamily::Hopper; }
inline std::size_t smem_optin() { return current_device_kernels().choice.smem_optin; }

}  // namespace peft::cuda
