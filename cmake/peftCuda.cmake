# What every CUDA program of the project shares, written once for the top level (programs,
# benchmark) and tests/cuda (kernel and model tests, also buildable on their own).

# Language settings, in the caller's scope: C++20 (CMake before 3.26 does not know nvcc's C++20
# flag; nvcc 12+ accepts it) and a static cudart, so binaries built here need only the driver and
# cuBLAS on the GPU machine.
macro(peft_cuda_language_settings)
  if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
  find_package(CUDAToolkit REQUIRED)
endmacro()

# peft_cuda_target(target): sm_90a machine code (wgmma-capable) plus sm_90 PTX, fmt usable under
# nvcc (FMT_USE_CONSTEXPR: see backend/cuda/cuda_check.cuh), cuBLASLt.
function(peft_cuda_target target)
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES OFF)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=sm_90
    -lineinfo --expt-relaxed-constexpr -Xcudafe --diag_suppress=20012,--diag_suppress=20011,--diag_suppress=20014>)
  target_compile_definitions(${target} PRIVATE FMT_USE_CONSTEXPR=1)
  target_link_libraries(${target} PRIVATE CUDA::cublasLt)
endfunction()
