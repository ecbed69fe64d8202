#!/usr/bin/env bash
# A merged tree's GPU check in one device call, everything built on the GPU machine (16 cores)
# for sm_90a:
#   1. every CUDA test (tests/cuda, cuda_test_*) and bench/train_bench, built side by side;
#   2. each test run once (the fixtures' GPU-vs-CPU parity among them), a PASS/FAIL row each;
#   3. the training benchmark (bench/run_gpu_bench.sh --prebuilt): ours, then HF transformers +
#      PEFT on the same workloads in the same call (default: 7b_2048_keep identity
#      7b_nemo_recompute 7b_nemo_keep; PEFT_CHECK_BENCH overrides, "" skips).
# The GPU machine has no utf8proc / PCRE2: PEFT_GPU_DEPS (headers + static libraries copied from a
# development machine, as tools/gpu/portable_check.sh) is required. Logs under $OUT; a table last.
#   PEFT_GPU_DEPS=DIR tools/gpu/merged_check.sh
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${OUT:-$root/build-check/out}"
deps="${PEFT_GPU_DEPS:?PEFT_GPU_DEPS must name the staged utf8proc/PCRE2 headers and static libraries}"
nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
build="$root/build-check"
mkdir -p "$build/bench/bin"
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
check_setup
echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"

# 1. builds
start=$SECONDS
build_cuda_tests "$build/tests" 90a 12 >"$out/build_tests.log" 2>&1 &
tests_pid=$!
build_cuda_bench "$root/bench/train_bench.cu" "$build/bench/bin/train_bench" >"$out/build_bench.log" 2>&1
bench_rc=$?
wait $tests_pid
tests_rc=$?
row "build tests/cuda (sm_90a)" "rc $tests_rc"
row "build train_bench (sm_90a)" "rc $bench_rc"
echo "builds took $((SECONDS - start)) s"
((tests_rc == 0)) || tail -40 "$out/build_tests.log"
((bench_rc == 0)) || tail -20 "$out/build_bench.log"

# 2. tests
failures=0
for t in "$build/tests"/cuda_test_*; do
  [[ -x "$t" ]] || continue
  name="$(basename "$t")"
  s=$SECONDS
  timeout "${PEFT_CHECK_TEST_TIMEOUT:-240}" "$t" >"$out/tests_$name.txt" 2>&1
  rc=$?
  ((rc == 0)) || { failures=$((failures + 1)); tail -30 "$out/tests_$name.txt"; }
  row "$name" "$( ((rc == 0)) && echo PASS || echo "FAIL(rc=$rc)") $((SECONDS - s)) s, $(grep -c . "$out/tests_$name.txt") lines"
done
cat "$out"/tests_*.txt >"$out/cuda_tests.log" 2>/dev/null && rm -f "$out"/tests_*.txt

# 3. benchmark, ours then HF, same call
workloads=${PEFT_CHECK_BENCH-7b_2048_keep identity 7b_nemo_recompute 7b_nemo_keep}
if [[ -n "$workloads" && $bench_rc == 0 ]]; then
  # shellcheck disable=SC2086
  PEFT_BENCH_BUILD_DIR="$build/bench" OUT="$out" HF_TIMEOUT="${HF_TIMEOUT:-330}" \
    bash "$root/bench/run_gpu_bench.sh" --prebuilt $workloads 2>&1 | tail -25
fi

echo
printf '%s\n' "${summary[@]}" | tee -a "$out/summary.txt"
echo "CUDA test failures: $failures"
exit $((failures > 0 || tests_rc != 0))
