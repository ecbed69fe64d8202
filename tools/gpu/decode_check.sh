#!/usr/bin/env bash
# Issue 16's decode item on the GPU machine, in one call:
#   1. builds cuda_test_decode twice in the background: machine code for this GPU (PEFT_CUDA_ARCHS,
#      default 90a) and, unless DECODE_PTX80=0, compute_80 PTX only (run with PEFT_CUDA_PORTABLE=1:
#      the non-Hopper path); BIN_DIR/decode_bench too when it is not there (nvcc, sm_90a), then
#      waits for that one;
#   2. meanwhile decode_bench at prompt 64 / 256 new tokens, first with DECODE_KERNELS=1 its
#      --kernels table (each kernel of the step alone, GB/s), with DECODE_SWEEP="2 3" also at those
#      PEFT_GEMV_BLOCKS_PER_SM, DECODE_NOPDL=1 also without programmatic dependent launch,
#      DECODE_MERGED=1 also without the adapter (merged weights' cost: decode_bench --merged), and
#      with DECODE_LONG=1 at prompt 2048 / 2048 new;
#   3. runs the test builds, then (unless DECODE_HF=0) HF generate (bench/hf_generate_baseline.py)
#      on the same shapes once the builds are done (it is bound by the host's launches: no compiler
#      beside it); HF_LONG=1 adds its 2048 / 2048 run (one generate, ~100 s).
# Logs and JSON lines under $OUT (the device tool's folder) or build-decode-check/out; a table last.
#   [PEFT_GPU_DEPS=DIR] tools/gpu/decode_check.sh BIN_DIR   (BIN_DIR: where decode_bench is, or is built)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:?usage: decode_check.sh BIN_DIR}"
out="${OUT:-$root/build-decode-check/out}"
nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
check_setup
build() {  # build <dir> <archs>
  local start=$SECONDS
  build_cuda_tests "$1" "$2" 8 cuda_test_decode
  local rc=$?
  echo "build $1 ($2): rc $rc, $((SECONDS - start)) s"
  return $rc
}
(renice -n 10 $BASHPID >/dev/null; build "$root/build-native" "${PEFT_CUDA_ARCHS:-90a}") >"$out/build_native.log" 2>&1 &
native_pid=$!
ptx_pid=
if [[ "${DECODE_PTX80:-1}" != 0 ]]; then
  (renice -n 10 $BASHPID >/dev/null; build "$root/build-ptx80" "80-virtual") >"$out/build_ptx80.log" 2>&1 &
  ptx_pid=$!
fi
if [[ ! -x "$bin/decode_bench" ]]; then  # one translation unit: nvcc directly, with peftCuda.cmake's flags
  start=$SECONDS
  build_cuda_bench "$root/bench/decode_bench.cu" "$bin/decode_bench" >"$out/build_bench.log" 2>&1
  row "build decode_bench (sm_90a)" "rc $? $((SECONDS - start)) s"
  tail -5 "$out/build_bench.log"
fi

ours() {  # ours <label> [decode_bench flags]
  local label=$1
  shift
  timeout 150 "$bin/decode_bench" "$@" >"$out/ours_$label.jsonl" 2>"$out/ours_$label.err"
  local rc=$?
  cat "$out/ours_$label.jsonl" "$out/ours_$label.err"
  row "ours $label" "rc $rc $(python3 "$root/tools/gpu/decode_row.py" "$out/ours_$label.jsonl" 2>&1)"
}
if [[ "${DECODE_KERNELS:-0}" == 1 ]]; then
  timeout 120 "$bin/decode_bench" --kernels >"$out/kernels.txt" 2>&1
  row "decode_bench --kernels" "rc $?"
  grep -v '^{' "$out/kernels.txt"
fi
ours p64_n256
for b in ${DECODE_SWEEP:-}; do PEFT_GEMV_BLOCKS_PER_SM=$b ours "p64_n256_blocks$b"; done
[[ "${DECODE_NOPDL:-0}" == 1 ]] && PEFT_DECODE_PDL=0 ours p64_n256_nopdl
[[ "${DECODE_MERGED:-0}" == 1 ]] && ours p64_n256_merged --merged
[[ "${DECODE_LONG:-0}" == 1 ]] && ours p2048_n2048 --prompt 2048 --new 2048

wait $native_pid
native_rc=$?
ptx_rc=
[[ -n "$ptx_pid" ]] && { wait "$ptx_pid"; ptx_rc=$?; }
grep -h "^build \|error" "$out"/build_*.log | head -20
test_run() {  # test_run <label> <dir> [env ...]
  local label=$1 dir=$2
  shift 2
  [[ -x "$dir/cuda_test_decode" ]] || { row "$label cuda_test_decode" "NOT BUILT"; return; }
  local start=$SECONDS
  env "$@" timeout 150 "$dir/cuda_test_decode" >"$out/test_$label.log" 2>&1
  local rc=$?
  grep -E "FAIL|diverge|kernels|Hopper|portable|\[cuda\]" "$out/test_$label.log" | head -20
  row "$label cuda_test_decode" "$([[ $rc == 0 ]] && echo PASS || echo "FAIL(rc=$rc)") $(grep -E -o '[0-9]+ of [0-9]+ checks passed' "$out/test_$label.log" | tail -1) $((SECONDS - start))s"
}
test_run native "$root/build-native" PEFT_CUDA_PORTABLE=0
[[ -n "$ptx_pid" ]] && test_run ptx80_portable "$root/build-ptx80" PEFT_CUDA_PORTABLE=1

hf() {  # hf <label> [flags]
  local label=$1
  shift
  PYTHONUNBUFFERED=1 timeout 280 python3 "$root/bench/hf_generate_baseline.py" "$@" >"$out/hf_$label.jsonl" 2>"$out/hf_$label.err"
  local rc=$?
  tail -2 "$out/hf_$label.err"
  row "HF $label" "rc $rc $(tail -1 "$out/hf_$label.jsonl")"
}
[[ "${DECODE_HF:-1}" != 0 ]] && hf p64_n256
[[ "${DECODE_HF:-1}" != 0 && "${HF_LONG:-0}" == 1 ]] && hf p2048_n2048 --prompt 2048 --new 2048 --reps 1

echo
echo "== decode check ($(date -u +%Y-%m-%dT%H:%MZ), $(head -1 "$out/device.txt"))"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
