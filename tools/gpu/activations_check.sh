#!/usr/bin/env bash
# The activation policies' GPU check in one device call (issue #14, item 4: selective recompute),
# on binaries built on the development machine (tools/gpu/gpu_build.sh, sm_90a) and carried:
#   1. cuda_test_rope, cuda_test_model (keep / selective / recompute against the CPU, against each
#      other with dropout on, the HF fixture under each, the three memory plans) and
#      cuda_test_layouts (selective with Full and NF4 bases), a PASS/FAIL row each;
#   2. bench/train_bench: the 7B at 2048 tokens under the three policies, at 4096 selective and
#      recompute, seq 64 and the identity run; then selective's per-step breakdown;
#   3. HF transformers + PEFT beside it (keep and recompute at 2048);
#   4. cuda_test_decode (the prefill shares the layers' buffers) when BIN_DIR has it.
# (2026-12-04 the decode half also timed decode_bench with whole-row L2 prefetches, a knob since
# removed: bench/RESULTS.md.)
# Logs under $OUT; a table last.
#   tools/gpu/activations_check.sh BIN_DIR [train|decode]   (BIN_DIR: the stripped programs; the
#   second argument runs 1-3 or 4 only: together they pass the device tool's 10 minutes a call)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$(cd "${1:?usage: activations_check.sh BIN_DIR [train|decode]}" && pwd)"
part="${2:-all}"
[[ $part == all || $part == train || $part == decode ]] || { echo "activations_check.sh: part must be train or decode" >&2; exit 2; }
out="${OUT:-$root/build-activations/out}"
nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
check_setup

failures=0
tests=(cuda_test_rope cuda_test_model cuda_test_layouts cuda_test_decode)
[[ $part == train ]] && tests=(cuda_test_rope cuda_test_model cuda_test_layouts)
[[ $part == decode ]] && tests=(cuda_test_decode)
test_rows "${tests[@]}"

if [[ $part != decode ]]; then
bench policies 7b_2048_keep 7b_2048_selective 7b_2048_recompute 7b_4096_selective 7b_4096_recompute
bench short 7b_64 identity
bench breakdown --breakdown 7b_2048_selective

(cd "$root/bench" && timeout 400 python3 hf_peft_baseline.py only=7b_2048_keep,7b_2048_recompute \
  >"$out/hf.jsonl" 2>"$out/hf.err") || tail -5 "$out/hf.err"
while read -r l; do row "HF" "${l:0:150}"; done < <(grep -h '^{' "$out/hf.jsonl")
fi

echo
echo "== summary ($failures failures) =="
printf '%s\n' "${summary[@]}"
exit $((failures > 0))
