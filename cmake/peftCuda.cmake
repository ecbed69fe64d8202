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

# peft_cuda_program(target source): a CUDA example program (identity_finetune_cuda, chat_cuda, ...)
# built to be copied to a GPU machine that has only the driver and cuBLAS: cudart, Boost.Program_Options,
# utf8proc and PCRE2 static, fmt header-only. Assets are found as the CPU programs find theirs
# (PEFT_ASSETS, else installed beside the binary, else this source tree); `cmake --install` installs it.
function(peft_cuda_program target source)
  find_package(Boost 1.74 REQUIRED COMPONENTS program_options)
  find_library(PEFT_BOOST_PO_STATIC libboost_program_options.a)
  find_library(PEFT_UTF8PROC_STATIC libutf8proc.a)
  find_library(PEFT_PCRE2_STATIC libpcre2-8.a)
  foreach(lib PEFT_BOOST_PO_STATIC PEFT_UTF8PROC_STATIC PEFT_PCRE2_STATIC)
    if(NOT ${lib})
      message(FATAL_ERROR "${target}: ${lib} not found (the static library it links)")
    endif()
  endforeach()
  add_executable(${target} ${source})
  peft_cuda_target(${target})
  target_compile_definitions(${target} PRIVATE FMT_HEADER_ONLY=1 ${PEFT_ASSETS_DEFINITIONS})
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/examples
    ${Boost_INCLUDE_DIRS})
  # NCCL (data-parallel runs) is dlopen-ed at run time, not linked (backend/cuda/nccl_communicator.cuh):
  # only its header is needed here, and the binary still runs where libnccl is absent.
  target_link_libraries(${target} PRIVATE Eigen3::Eigen nlohmann_json::nlohmann_json
    ${PEFT_BOOST_PO_STATIC} ${PEFT_UTF8PROC_STATIC} ${PEFT_PCRE2_STATIC} ${CMAKE_DL_LIBS})
  install(TARGETS ${target} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endfunction()

# peft_cuda_bench(target source): a CUDA benchmark program (bench/*.cu), fmt header-only; it may
# share the example programs' helpers (examples/experiments/).
function(peft_cuda_bench target source)
  add_executable(${target} ${source})
  peft_cuda_target(${target})
  target_compile_definitions(${target} PRIVATE FMT_HEADER_ONLY=1)
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/examples)
  target_link_libraries(${target} PRIVATE Eigen3::Eigen nlohmann_json::nlohmann_json)
endfunction()
