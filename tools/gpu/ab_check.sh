#!/usr/bin/env bash
# An A/B of one train_bench setting on binaries built on the development machine
# (tools/gpu/gpu_build.sh, sm_90a) and carried. A and B are each a space-separated list of
# environment assignments (VAR=VALUE) and train_bench flags (--side-stream=0), e.g.
# "PEFT_GEMM_TUNE=0" / "PEFT_GEMM_TUNE=1". One device call:
#   tests: the named CUDA test programs (default cuda_test_model cuda_test_layouts cuda_test_qlora),
#     a PASS/FAIL row each;
#   A/B: train_bench with A and with B alternately, twice, at seq 2048 keep-all and selective, seq 64
#     and the identity run; once each NeMo's setup (keep-all) and rank 64 keep-all; B's breakdown of
#     seq 2048 keep-all and seq 64; HF transformers + PEFT (keep-all) beside it unless `nohf`.
# Logs in $OUT/logs.tgz (the device tool returns few files); a table last.
#   tools/gpu/ab_check.sh BIN_DIR A B [nohf] [TEST...]   (TEST "none": no tests)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
usage="usage: ab_check.sh BIN_DIR A B [nohf] [TEST...]"
bin="$(cd "${1:?$usage}" && pwd)"
variant_a="${2:?$usage}" variant_b="${3:?$usage}"
shift 3
nohf=""
[[ ${1:-} == nohf ]] && { nohf=nohf; shift; }
tests=("$@")
((${#tests[@]} > 0)) || tests=(cuda_test_model cuda_test_layouts cuda_test_qlora)
final="${OUT:-$root/build-ab/out}"
out="$(mktemp -d)"
nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
check_setup
failures=0

# in_variant VARIANT LABEL ARGS...: bench LABEL with the variant's assignments exported for it
# (unset after) and its flags before ARGS.
in_variant() {
  local variant=$1 label=$2 word flags=() vars=()
  shift 2
  for word in $variant; do
    if [[ $word == *=* && $word != -* ]]; then vars+=("${word%%=*}") && export "${word?}"; else flags+=("$word"); fi
  done
  bench "$label" "${flags[@]}" "$@"
  for word in "${vars[@]}"; do unset "$word"; done
}

[[ ${tests[0]} == none ]] || test_rows "${tests[@]}"
for run in 1 2; do
  in_variant "$variant_a" "A-run$run" 7b_2048_keep 7b_2048_selective 7b_64 identity
  in_variant "$variant_b" "B-run$run" 7b_2048_keep 7b_2048_selective 7b_64 identity
done
in_variant "$variant_a" A-nemo 7b_nemo_keep
in_variant "$variant_b" B-nemo 7b_nemo_keep
in_variant "$variant_a" A-r64 --lora-rank=64 7b_2048_keep
in_variant "$variant_b" B-r64 --lora-rank=64 7b_2048_keep
in_variant "$variant_b" B-breakdown --breakdown 7b_2048_keep 7b_64
if [[ $nohf != nohf ]]; then
  (cd "$root/bench" && timeout 400 python3 hf_peft_baseline.py only=7b_2048_keep >"$out/hf.jsonl" 2>"$out/hf.err") ||
    tail -5 "$out/hf.err"
  while read -r l; do row "HF" "${l:0:150}"; done < <(grep -h '^{"workload' "$out/hf.jsonl")
fi
echo "A: $variant_a" >"$out/variants.txt"
echo "B: $variant_b" >>"$out/variants.txt"

check_finish "$final"
