#!/usr/bin/env bash
# The adapter's passes on a second stream beside the base GEMMs (issue #14, item 5;
# kernels/cuda/side_stream.cuh), on binaries built on the development machine
# (tools/gpu/gpu_build.sh, sm_90a) and carried. One device call:
#   tests: the named CUDA test programs (default cuda_test_model cuda_test_layouts cuda_test_qlora),
#     a PASS/FAIL row each;
#   A/B: train_bench with --side-stream=0 and =1 alternately, twice, at seq 2048 keep-all and
#     selective, seq 64 and the identity run; once each NeMo's setup (keep-all) and rank 64
#     keep-all; the breakdown of seq 2048 keep-all and seq 64; HF transformers + PEFT (keep-all)
#     beside it unless `nohf`.
# Logs in $OUT/logs.tgz (the device tool returns few files); a table last.
#   tools/gpu/side_stream_check.sh BIN_DIR [nohf] [TEST...]   (TEST "none": no tests)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$(cd "${1:?usage: side_stream_check.sh BIN_DIR [nohf] [TEST...]}" && pwd)"
shift
nohf=""
[[ ${1:-} == nohf ]] && { nohf=nohf; shift; }
tests=("$@")
((${#tests[@]} > 0)) || tests=(cuda_test_model cuda_test_layouts cuda_test_qlora)
final="${OUT:-$root/build-side-stream/out}"
out="$(mktemp -d)"
nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
check_setup
failures=0

[[ ${tests[0]} == none ]] || test_rows "${tests[@]}"
for run in 1 2; do
  for side in 0 1; do
    bench "side$side-run$run" --side-stream=$side 7b_2048_keep 7b_2048_selective 7b_64 identity
  done
done
for side in 0 1; do
  bench "side$side-nemo" --side-stream=$side 7b_nemo_keep
  bench "side$side-r64" --side-stream=$side --lora-rank=64 7b_2048_keep
done
bench breakdown --breakdown 7b_2048_keep 7b_64
if [[ $nohf != nohf ]]; then
  (cd "$root/bench" && timeout 400 python3 hf_peft_baseline.py only=7b_2048_keep >"$out/hf.jsonl" 2>"$out/hf.err") ||
    tail -5 "$out/hf.err"
  while read -r l; do row "HF" "${l:0:150}"; done < <(grep -h '^{"workload' "$out/hf.jsonl")
fi

check_finish "$final"
