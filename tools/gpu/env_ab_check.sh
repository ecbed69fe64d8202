#!/usr/bin/env bash
# An A/B of one environment switch (a path that is on unless VAR=0, e.g. PEFT_GEMM_TUNE) on
# binaries built on the development machine (tools/gpu/gpu_build.sh, sm_90a) and carried. One
# device call:
#   tests: the named CUDA test programs (default cuda_test_gemm cuda_test_model), a PASS/FAIL row each;
#   A/B: train_bench with VAR=0 and VAR=1 alternately, twice, at seq 2048 keep-all and selective,
#     seq 64 and the identity run; once each NeMo's setup (keep-all) and rank 64 keep-all; the
#     breakdown of seq 2048 keep-all with the switch on; HF transformers + PEFT (keep-all) beside
#     it unless `nohf`.
# Logs in $OUT/logs.tgz (the device tool returns few files); a table last.
#   tools/gpu/env_ab_check.sh BIN_DIR VAR [nohf] [TEST...]   (TEST "none": no tests)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$(cd "${1:?usage: env_ab_check.sh BIN_DIR VAR [nohf] [TEST...]}" && pwd)"
var="${2:?usage: env_ab_check.sh BIN_DIR VAR [nohf] [TEST...]}"
shift 2
nohf=""
[[ ${1:-} == nohf ]] && { nohf=nohf; shift; }
tests=("$@")
((${#tests[@]} > 0)) || tests=(cuda_test_gemm cuda_test_model)
final="${OUT:-$root/build-env-ab/out}"
out="$(mktemp -d)"
nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
check_setup
failures=0

[[ ${tests[0]} == none ]] || test_rows "${tests[@]}"
for run in 1 2; do
  for v in 0 1; do
    export "$var=$v"
    bench "$var=$v-run$run" 7b_2048_keep 7b_2048_selective 7b_64 identity
  done
done
for v in 0 1; do
  export "$var=$v"
  bench "$var=$v-nemo" 7b_nemo_keep
  bench "$var=$v-r64" --lora-rank=64 7b_2048_keep
done
export "$var=1"
bench breakdown --breakdown 7b_2048_keep
if [[ $nohf != nohf ]]; then
  (cd "$root/bench" && timeout 400 python3 hf_peft_baseline.py only=7b_2048_keep >"$out/hf.jsonl" 2>"$out/hf.err") ||
    tail -5 "$out/hf.err"
  while read -r l; do row "HF" "${l:0:150}"; done < <(grep -h '^{"workload' "$out/hf.jsonl")
fi

check_finish "$final"
