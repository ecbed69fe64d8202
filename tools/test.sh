#!/usr/bin/env bash
# Builds everything and runs the test suite (what CI runs): install, configure, build, ctest.
# It may follow tools/quickstart.sh in the same build folder: the configure step switches the tests,
# examples and benchmarks on explicitly (a cache written by another configure keeps whatever it
# had otherwise), and a run in which ctest finds no test is a failure, not a silent success.
#
#   tools/test.sh [CTEST_ARGS...]     e.g. tools/test.sh -R merge
#   PEFT_BUILD_DIR=dir                the build folder (default build/)
#   --configure-only                  install and configure, then stop (its own test uses this)
#   --no-build                        run ctest on what is already built (no install, configure or build)
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
build_dir="${PEFT_BUILD_DIR:-build}"
stage=all
ctest_args=()
for a in "$@"; do
  case "$a" in
    --configure-only) stage=configure ;;
    --no-build) stage=ctest ;;
    *) ctest_args+=("$a") ;;
  esac
done
jobs="$(nproc)"
if [[ $stage != ctest ]]; then
  tools/install_deps.sh
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DPEFT_BUILD_TESTS=ON -DPEFT_BUILD_EXAMPLES=ON -DPEFT_BUILD_BENCH=ON
  [[ $stage == configure ]] && exit 0
  cmake --build "$build_dir" -j "$jobs"
  # The CUDA backend cannot run here (no GPU), but it must compile: where nvcc is installed, build the
  # CUDA programs for every supported GPU (PEFT_CUDA_ARCHS' default: sm_80, sm_86, sm_89, sm_90a
  # machine code + sm_90 PTX, the binary users get) and the CUDA model and decode tests (they
  # instantiate the whole CUDA model, its kernels and the decode path) for sm_80 only: the portable
  # kernels, compiled once, keep CI's time on 2 cores down.
  nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
  if [[ -x "$nvcc" ]]; then
    cmake -S . -B build-cuda-check -G Ninja -DCMAKE_BUILD_TYPE=Release -DPEFT_WITH_CUDA=ON \
          -DPEFT_BUILD_TESTS=OFF -DPEFT_BUILD_BENCH=OFF -DCMAKE_CUDA_COMPILER="$nvcc" \
          -DPEFT_CUDA_ARCHS="80;86;89;90a" -DPEFT_CUDA_TEST_ARCHS=80
    cmake --build build-cuda-check -j "$jobs" --target identity_finetune_cuda cuda_test_model chat_cuda cuda_test_decode
    echo "test.sh: CUDA compile check passed (identity_finetune_cuda, chat_cuda for sm_80/86/89/90a;" \
         "cuda_test_model, cuda_test_decode for sm_80; they run on the GPU machine)"
  else
    echo "test.sh: no nvcc at $nvcc: CUDA compile check not run"
  fi
fi
# --no-tests=error: "No tests were found!!!" (a cache with the tests off, a -R that matches
# nothing) fails the run instead of passing it.
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$jobs" "${ctest_args[@]}"
