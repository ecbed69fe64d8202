// Which build of a program this is. Every program has one source; under -DPEFT_WITH_CUDA=ON CMake
// also compiles it with nvcc as <program>_cuda (cmake/peftCuda.cmake's peft_cuda_program), and
// the CUDA parts sit under `#ifdef __CUDACC__`. The plain build needs no CUDA toolkit.
#pragma once
#include <string>

namespace peft::examples {

#ifdef __CUDACC__
inline constexpr bool kCudaBuild = true;
#else
inline constexpr bool kCudaBuild = false;
#endif

// "chat" or "chat_cuda": the name error messages and the README use.
inline std::string program_name(const char* base) { return kCudaBuild ? std::string(base) + "_cuda" : std::string(base); }

}  // namespace peft::examples
