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
  peft_find_cudnn()
endmacro()

# cuDNN's fused attention (kernels/cuda/attention_cudnn.cuh) is optional: on where cuDNN 9 (cudnn.h,
# libcudnn) and NVIDIA's header-only cudnn_frontend (cudnn_frontend.h: github.com/NVIDIA/cudnn-frontend;
# point PEFT_CUDNN_FRONTEND_DIR at its include/) are found, else peft's own
# attention kernels serve every shape. Binaries built with it need libcudnn.so.9 and libnvrtc where
# they run.
set(PEFT_WITH_CUDNN AUTO CACHE STRING "cuDNN fused attention: AUTO (where found), ON (required), OFF")
set(PEFT_CUDNN_FRONTEND_DIR "" CACHE PATH "folder holding cudnn_frontend.h (or its include/)")
function(peft_find_cudnn)
  if(DEFINED PEFT_CUDNN_FOUND)  # tests/cuda under the top level: already decided and said
    return()
  endif()
  set(PEFT_CUDNN_FOUND FALSE PARENT_SCOPE)
  if(PEFT_WITH_CUDNN STREQUAL "OFF")
    return()
  endif()
  find_path(PEFT_CUDNN_FRONTEND_INCLUDE cudnn_frontend.h
            HINTS ${PEFT_CUDNN_FRONTEND_DIR} ${PEFT_CUDNN_FRONTEND_DIR}/include $ENV{CUDNN_FRONTEND_DIR}/include)
  find_path(PEFT_CUDNN_INCLUDE cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(PEFT_CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(PEFT_CUDNN_FRONTEND_INCLUDE AND PEFT_CUDNN_INCLUDE AND PEFT_CUDNN_LIBRARY)
    set(PEFT_CUDNN_FOUND TRUE PARENT_SCOPE)
    message(STATUS "cuDNN fused attention: on (${PEFT_CUDNN_LIBRARY}, ${PEFT_CUDNN_FRONTEND_INCLUDE})")
  elseif(PEFT_WITH_CUDNN STREQUAL "ON")
    message(FATAL_ERROR "PEFT_WITH_CUDNN=ON but cuDNN was not found: cudnn_frontend.h "
            "'${PEFT_CUDNN_FRONTEND_INCLUDE}' (set PEFT_CUDNN_FRONTEND_DIR), cudnn.h '${PEFT_CUDNN_INCLUDE}', "
            "libcudnn '${PEFT_CUDNN_LIBRARY}'")
  else()
    message(STATUS "cuDNN fused attention: off (needs cudnn_frontend.h: set PEFT_CUDNN_FRONTEND_DIR; and cuDNN 9); "
            "peft's own attention kernels are used")
  endif()
endfunction()

# Which GPUs the binaries run on. One build serves them all: machine code (SASS) for each listed
# architecture, plus PTX of the newest for later GPUs (the driver compiles it at first launch).
# Entries: NN (sm_NN machine code), NNa (architecture-specific features, e.g. 90a), NN-virtual (PTX
# only; then no PTX is added automatically). The kernels pick their Hopper or portable paths at run
# time (kernels/cuda/kernel_family.hpp). Default: A100 (80), RTX 30xx / A6000 (86), RTX 40xx / L40S
# (89), H100 / H200 (90a).
set(PEFT_CUDA_ARCHS "80;86;89;90a" CACHE STRING "CUDA architectures: NN, NNa or NN-virtual (PTX only)")
set(PEFT_CUDA_TEST_ARCHS "" CACHE STRING "CUDA architectures of the CUDA tests (empty: PEFT_CUDA_ARCHS)")
set(PEFT_CUDA_NVCC_THREADS 1 CACHE STRING "nvcc --threads: architectures compiled in parallel per file (0: all)")

# peft_cuda_gencode(out archs): nvcc -gencode flags for a PEFT_CUDA_ARCHS-style list.
function(peft_cuda_gencode out archs)
  set(flags "")
  set(newest 0)
  set(explicit_ptx OFF)
  foreach(a IN LISTS archs)
    if(a MATCHES "^([0-9]+)-virtual$")
      list(APPEND flags "-gencode=arch=compute_${CMAKE_MATCH_1},code=compute_${CMAKE_MATCH_1}")
      set(explicit_ptx ON)
    elseif(a MATCHES "^([0-9]+)(a?)$")
      list(APPEND flags "-gencode=arch=compute_${a},code=sm_${a}")
      if(CMAKE_MATCH_1 GREATER newest)
        set(newest ${CMAKE_MATCH_1})
      endif()
    else()
      message(FATAL_ERROR "PEFT_CUDA_ARCHS: '${a}' is not NN, NNa or NN-virtual (e.g. 80;86;89;90a)")
    endif()
  endforeach()
  if(NOT flags)
    message(FATAL_ERROR "PEFT_CUDA_ARCHS is empty")
  endif()
  if(NOT explicit_ptx)
    list(APPEND flags "-gencode=arch=compute_${newest},code=compute_${newest}")
  endif()
  set(${out} "${flags}" PARENT_SCOPE)
endfunction()

# peft_cuda_target(target [archs]): machine code for PEFT_CUDA_ARCHS (or archs) plus PTX of the
# newest, fmt usable under nvcc (FMT_USE_CONSTEXPR: see kernels/cuda/cuda_check.cuh), cuBLASLt.
function(peft_cuda_target target)
  set(archs "${PEFT_CUDA_ARCHS}")
  if(ARGC GREATER 1 AND NOT "${ARGV1}" STREQUAL "")
    set(archs "${ARGV1}")
  endif()
  peft_cuda_gencode(gencode "${archs}")
  string(REPLACE ";" "," archs_text "${archs}")
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES OFF)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:${gencode} -lineinfo --expt-relaxed-constexpr
    -Xcudafe --diag_suppress=20012,--diag_suppress=20011,--diag_suppress=20014>)
  if(NOT PEFT_CUDA_NVCC_THREADS STREQUAL "1")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--threads=${PEFT_CUDA_NVCC_THREADS}>)
  endif()
  target_compile_definitions(${target} PRIVATE FMT_USE_CONSTEXPR=1 PEFT_CUDA_ARCHS_BUILT="${archs_text}")
  target_link_libraries(${target} PRIVATE CUDA::cublasLt)
  if(PEFT_CUDNN_FOUND)
    target_compile_definitions(${target} PRIVATE PEFT_WITH_CUDNN=1 CUDNN_FRONTEND_SKIP_JSON_LIB=1)
    target_include_directories(${target} SYSTEM PRIVATE ${PEFT_CUDNN_FRONTEND_INCLUDE} ${PEFT_CUDNN_INCLUDE})
    # cudnn_frontend's own engines compile kernels at run time: NVRTC and the driver API.
    target_link_libraries(${target} PRIVATE ${PEFT_CUDNN_LIBRARY} CUDA::nvrtc CUDA::cuda_driver)
  endif()
endfunction()

# peft_cuda_program(target source): a CUDA example program (identity_finetune_cuda, chat_cuda, ...)
# compiled by nvcc from the CPU program's own source (examples/<name>.cpp, its CUDA parts under
# `#ifdef __CUDACC__`): a one-line .cu in the build tree includes it, since one source file cannot
# be both CXX (the CPU target) and CUDA in one directory. Built to be copied to a GPU machine that has only the driver and cuBLAS: cudart, Boost.Program_Options,
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
  set(wrapper ${CMAKE_CURRENT_BINARY_DIR}/cuda_programs/${target}.cu)
  file(CONFIGURE OUTPUT ${wrapper} CONTENT
       "// Generated by cmake/peftCuda.cmake: ${target} is ${source} compiled by nvcc.\n#include \"${PROJECT_SOURCE_DIR}/${source}\"\n")
  add_executable(${target} ${wrapper})
  peft_cuda_target(${target})
  target_compile_definitions(${target} PRIVATE FMT_HEADER_ONLY=1 ${PEFT_ASSETS_DEFINITIONS})
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/examples
    ${Boost_INCLUDE_DIRS})
  # NCCL (data-parallel runs) is dlopen-ed at run time, not linked (dist/nccl_communicator.cuh):
  # only its header is needed here, and the binary still runs where libnccl is absent.
  target_link_libraries(${target} PRIVATE Eigen3::Eigen nlohmann_json::nlohmann_json
    ${PEFT_BOOST_PO_STATIC} ${PEFT_UTF8PROC_STATIC} ${PEFT_PCRE2_STATIC} ${CMAKE_DL_LIBS})
  install(TARGETS ${target} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endfunction()

# peft_cuda_line_editing(target): chat_cuda's line editing and history (examples/infer/line_editor.hpp)
# through libedit, linked static with what it needs (libbsd, libmd, libtinfo: Debian's libedit-dev
# pulls in their -dev packages), so the binary still runs on a GPU machine without libedit. Where an
# archive is missing the program reads plain lines, and configure says so; else sets
# <target>_LINE_EDITING.
function(peft_cuda_line_editing target)
  set(archives "")
  foreach(lib edit bsd md tinfo)
    find_library(PEFT_STATIC_LIB${lib} lib${lib}.a)
    if(NOT PEFT_STATIC_LIB${lib})
      message(STATUS "${target}: lib${lib}.a not found: no line editing (install libedit-dev)")
      return()
    endif()
    list(APPEND archives ${PEFT_STATIC_LIB${lib}})
  endforeach()
  target_link_libraries(${target} PRIVATE ${archives})
  target_compile_definitions(${target} PRIVATE PEFT_HAVE_LIBEDIT)
  set(${target}_LINE_EDITING ON PARENT_SCOPE)
endfunction()

# peft_cuda_bench(target source): a CUDA benchmark program (bench/*.cu), fmt header-only; it
# includes only the library (include/).
function(peft_cuda_bench target source)
  add_executable(${target} ${source})
  peft_cuda_target(${target})
  target_compile_definitions(${target} PRIVATE FMT_HEADER_ONLY=1)
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/include)
  target_link_libraries(${target} PRIVATE Eigen3::Eigen nlohmann_json::nlohmann_json)
endfunction()
