#!/usr/bin/env bash
# Builds every CUDA kernel test (tests/cuda/test_*.cu -> cuda_test_*), runs each on this
# machine's GPU, then runs the small cases (--small) under compute-sanitizer: memcheck for all, racecheck for the
# kernels that share memory between threads and for the whole model (attention, generation paths). One call on the GPU machine does everything:
#   tools/gpu/run_cuda_tests.sh              configure + build into build-cuda, then run
#   tools/gpu/run_cuda_tests.sh --prebuilt   run the binaries already in build-cuda (built on a
#                                            development machine with nvcc; cudart is static)
# Logs: one per run under build-cuda/logs; when $OUT is set (the device tool's output folder) all
# of them are also concatenated into $OUT/cuda_tests.log. The tests' own output is printed, the
# sanitizer runs only on failure; a summary table comes last. Exit status: non-zero if any failed.
# Time limits per run (seconds): PEFT_CUDA_TEST_TIMEOUT for the plain runs (default 300),
# PEFT_CUDA_SANITIZER_TIMEOUT for the compute-sanitizer runs (default 300); a run stopped at its
# limit shows as FAIL(rc=124).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PEFT_CUDA_BUILD_DIR:-$root/build-cuda}"
logs="$build/logs"
mkdir -p "$logs"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
# cuda_test_model reads the HF fixtures; binaries built elsewhere carry that machine's path.
export PEFT_FIXTURES_DIR="${PEFT_FIXTURES_DIR:-$root/tests/fixtures}"

if [[ "${1:-}" != "--prebuilt" ]]; then
  cmake -S "$root/tests/cuda" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_COMPILER="${CUDACXX:-/usr/local/cuda/bin/nvcc}" >"$logs/configure.log" 2>&1 ||
    { cat "$logs/configure.log"; exit 1; }
  cmake --build "$build" -j "$(nproc)" >"$logs/build.log" 2>&1 || { tail -50 "$logs/build.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
declare -a summary
failures=0
test_limit=${PEFT_CUDA_TEST_TIMEOUT:-300}
sanitizer_limit=${PEFT_CUDA_SANITIZER_TIMEOUT:-300}
run() {  # run <label> <log> <quiet: 0|1> <limit s> <command...>
  local label=$1 log=$2 quiet=$3 limit=$4
  shift 4
  local start=$SECONDS
  timeout "$limit" "$@" >"$log" 2>&1
  local rc=$?
  local status=PASS
  ((rc != 0)) && { status="FAIL(rc=$rc)"; failures=$((failures + 1)); }
  ((quiet == 0 || rc != 0)) && cat "$log"
  summary+=("$(printf '%-40s %-12s %4ss' "$label" "$status" $((SECONDS - start)))")
}

tests=("$build"/cuda_test_*)
for t in "${tests[@]}"; do
  [[ -x "$t" ]] || continue
  name="$(basename "$t")"
  run "$name" "$logs/$name.log" 0 "$test_limit" "$t"
done
# The tests provoke API errors on purpose (and check the messages): the sanitizer reports
# memory errors and races only.
for t in "${tests[@]}"; do
  [[ -x "$t" ]] || continue
  name="$(basename "$t")"
  PEFT_CUDA_ARENA_DEBUG=1 run "memcheck $name --small" "$logs/memcheck_$name.log" 1 "$sanitizer_limit" \
    "$sanitizer" --tool memcheck --report-api-errors no --error-exitcode 3 "$t" --small
done
for name in cuda_test_attention cuda_test_rms_norm cuda_test_cross_entropy cuda_test_global_norm cuda_test_nf4_dequant cuda_test_model; do
  [[ -x "$build/$name" ]] || continue
  run "racecheck $name --small" "$logs/racecheck_$name.log" 1 "$sanitizer_limit" \
    "$sanitizer" --tool racecheck --report-api-errors no --error-exitcode 3 "$build/$name" --small
done

echo
echo "== CUDA test summary ($(date -u +%Y-%m-%dT%H:%MZ))"
printf '%s\n' "${summary[@]}"
echo "failures: $failures"
if [[ -n "${OUT:-}" ]]; then
  for f in "$logs"/*.log; do echo "#### $(basename "$f")"; cat "$f"; done >"$OUT/cuda_tests.log"
fi
exit $((failures > 0))
