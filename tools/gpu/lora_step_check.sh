#!/usr/bin/env bash
# The LoRA branch's tensor-core kernels at padded ranks 8-64 in the training step (issue #14, item
# 1: rank 64 within 5% of rank 8), on binaries built on the development machine
# (tools/gpu/gpu_build.sh, sm_90a) and carried. Two parts, one device call each:
#   tests: cuda_test_lora_dropout, _lora_up (each pass at ranks 8-64 against a double reference,
#     their timing lines against dropout + cuBLASLt), _model, _layouts, _qlora, a PASS/FAIL row
#     each; train_bench at seq 2048 (keep-all, selective, recompute), seq 64, the identity run and
#     keep-all's breakdown; HF transformers + PEFT (keep-all, recompute at 2048) beside it.
#   ranks: train_bench keep-all at seq 2048 at ranks 8, 16, 32 and 64 with the kernels as chosen
#     and with the LoRA passes off tensor cores (PEFT_LORA_UP_MMA=0 PEFT_LORA_DOWN_MMA=0
#     PEFT_LORA_BACK_MMA=0: cuBLASLt and the dropout buffer above rank 8, as before this change),
#     rank 64's breakdown; HF at rank 64 beside it.
# Logs in $OUT/logs.tgz (the device tool returns few files); a table last.
#   tools/gpu/lora_step_check.sh BIN_DIR tests|ranks [nohf]
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$(cd "${1:?usage: lora_step_check.sh BIN_DIR tests|ranks [nohf]}" && pwd)"
part="${2:?usage: lora_step_check.sh BIN_DIR tests|ranks [nohf]}"
[[ $part == tests || $part == ranks ]] || { echo "lora_step_check.sh: part must be tests or ranks" >&2; exit 2; }
final="${OUT:-$root/build-lora-step/out}"
out="$(mktemp -d)"
nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
check_setup
failures=0
nohf="${3:-}"

hf() {  # hf LABEL ARGS...: bench/hf_peft_baseline.py, a row per workload
  local label=$1
  shift
  [[ $nohf == nohf ]] && return
  (cd "$root/bench" && timeout 400 python3 hf_peft_baseline.py "$@" >"$out/hf_$label.jsonl" 2>"$out/hf_$label.err") ||
    tail -5 "$out/hf_$label.err"
  while read -r l; do row "HF $label" "${l:0:150}"; done < <(grep -h '^{"workload' "$out/hf_$label.jsonl")
}

if [[ $part == tests ]]; then
  test_rows cuda_test_lora_dropout cuda_test_lora_up cuda_test_model cuda_test_layouts cuda_test_qlora
  bench policies 7b_2048_keep 7b_2048_selective 7b_2048_recompute 7b_64 identity
  bench breakdown --breakdown 7b_2048_keep
  hf r8 only=7b_2048_keep,7b_2048_recompute
else
  for r in 8 16 32 64; do
    bench "r$r" --lora-rank=$r 7b_2048_keep
    PEFT_LORA_UP_MMA=0 PEFT_LORA_DOWN_MMA=0 PEFT_LORA_BACK_MMA=0 bench "r$r-off" --lora-rank=$r 7b_2048_keep
  done
  bench breakdown-r64 --breakdown --lora-rank=64 7b_2048_keep
  hf r64 only=7b_2048_keep rank=64
fi

check_finish "$final"
