#!/usr/bin/env bash
# Two trees' train_bench side by side (OLD_DIR and NEW_DIR each hold one, built on the development
# machine with tools/gpu/gpu_build.sh and carried; a program stored as NAME.xz is unpacked first,
# which keeps a call's binaries under the device tool's carry limit). One device call:
#   tests: the named CUDA test programs of NEW_DIR (default cuda_test_model), a PASS/FAIL row each;
#   A/B: old and new alternately, twice, at seq 2048 keep-all at ranks 8 and 64; then new alone at
#     selective, seq 64 and the identity run, and rank 64's breakdown; HF transformers + PEFT
#     (keep-all, rank 8) beside it unless `nohf`.
# Logs in $OUT/logs.tgz (the device tool returns few files); a table last.
#   tools/gpu/binaries_ab_check.sh OLD_DIR NEW_DIR [nohf] [TEST...]   (TEST "none": no tests)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
usage="usage: binaries_ab_check.sh OLD_DIR NEW_DIR [nohf] [TEST...]"
old="$(cd "${1:?$usage}" && pwd)"
new="$(cd "${2:?$usage}" && pwd)"
shift 2
nohf=""
[[ ${1:-} == nohf ]] && { nohf=nohf; shift; }
tests=("$@")
((${#tests[@]} > 0)) || tests=(cuda_test_model)
final="${OUT:-$root/build-binaries-ab/out}"
out="$(mktemp -d)"
nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
check_setup
failures=0
for d in "$old" "$new"; do
  for z in "$d"/*.xz; do  # python3's lzma: the GPU machine may lack xz
    [[ -e $z ]] && python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$z" "${z%.xz}" && chmod +x "${z%.xz}"
  done
done

bin=$new
[[ ${tests[0]} == none ]] || test_rows "${tests[@]}"
for run in 1 2; do
  for side in old new; do
    bin=${!side}
    bench "$side-r8-run$run" 7b_2048_keep
    bench "$side-r64-run$run" --lora-rank=64 7b_2048_keep
  done
done
bin=$new
bench new-policies 7b_2048_selective 7b_64 identity
bench new-breakdown-r64 --breakdown --lora-rank=64 7b_2048_keep
if [[ $nohf != nohf ]]; then
  (cd "$root/bench" && timeout 400 python3 hf_peft_baseline.py only=7b_2048_keep >"$out/hf.jsonl" 2>"$out/hf.err") ||
    tail -5 "$out/hf.err"
  while read -r l; do row "HF" "${l:0:150}"; done < <(grep -h '^{"workload' "$out/hf.jsonl")
fi

check_finish "$final"
