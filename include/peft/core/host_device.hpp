// PEFT_HOST_DEVICE marks a function that both compilers build: nvcc for the device (and host),
// the plain C++ compiler for the CPU library and tests. A routine written once this way runs in a
// CUDA kernel and in a CPU unit test, so its arithmetic is checked where no GPU is at hand.
#pragma once

#if defined(__CUDACC__)
#define PEFT_HOST_DEVICE __host__ __device__
#else
#define PEFT_HOST_DEVICE
#endif
