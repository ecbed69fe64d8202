#!/usr/bin/env bash
# Builds everything and runs the test suite (what CI runs): install, configure, build, ctest.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
tools/install_deps.sh
jobs="$(nproc)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
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
ctest --test-dir build --output-on-failure -j "$jobs"
