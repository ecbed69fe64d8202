#!/usr/bin/env bash
# An A/B (/C...) of decode builds and settings (issue 16, item 6). Each variant is a directory of
# binaries built on the development machine (tools/gpu/gpu_build.sh: build_cuda_bench
# bench/decode_bench.cu DIR/decode_bench, build_cuda_tests B 90a 2 cuda_test_decode copied to DIR;
# NAME.xz is unpacked first) and environment assignments after it, e.g. "old", "new",
# "new PEFT_GEMV_BLOCKS_PER_SM=3". One device call:
#   cuda_test_decode under each variant; decode_bench --kernels under each; decode_bench at prompt
#   64 / 256 new under each in turn, twice, and at 2048 / 2048 once each; then, with PROFILE=1,
#   tools/gpu/ncu_profile.sh (ncu: counters, stall reasons, hottest lines) of one layer under each.
# Logs in $OUT/logs.tgz (the device tool returns few files); a table last.
#   [PROFILE=1] tools/gpu/decode_ab.sh "DIR [NAME=VALUE...]" "DIR [NAME=VALUE...]" [...]
# shellcheck disable=SC2086  # ${envs[i]}: a variant's assignments, split into words on purpose
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
(($# >= 2)) || { echo 'usage: [PROFILE=1] decode_ab.sh "DIR [NAME=VALUE...]" "DIR [NAME=VALUE...]" [...]'; exit 2; }
variants=("$@")
final="${OUT:-$root/build-decode-ab/out}"
out="$(mktemp -d)"
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
check_setup
n=${#variants[@]}
letters=(A B C D E F G H)
dirs=() envs=()
for ((i = 0; i < n; ++i)); do
  read -r d e <<<"${variants[i]}"
  d="$(cd "$d" && pwd)" || exit 2
  dirs+=("$d")
  envs+=("${e:-}")
  for z in "$d"/*.xz; do  # python3's lzma: the GPU machine may lack xz
    [[ -e $z ]] && python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$z" "${z%.xz}" && chmod +x "${z%.xz}"
  done
done
for ((i = 0; i < n; ++i)); do
  v=${letters[i]}
  timeout 200 env ${envs[i]} "${dirs[i]}/cuda_test_decode" >"$out/test_$v.log" 2>&1
  rc=$?
  row "$v cuda_test_decode" "$([[ $rc == 0 ]] && echo PASS || echo "FAIL(rc=$rc)") $(grep -E -o '[0-9]+ of [0-9]+ checks passed|All tests passed.*' "$out/test_$v.log" | tail -1)"
done
for ((i = 0; i < n; ++i)); do
  v=${letters[i]}
  timeout 150 env ${envs[i]} "${dirs[i]}/decode_bench" --kernels >"$out/kernels_$v.txt" 2>&1
  row "$v decode_bench --kernels" "rc $?"
  grep -v '^{' "$out/kernels_$v.txt"
done
ours() {  # ours I LABEL [decode_bench flags]
  local i=$1 label=$2
  shift 2
  timeout 150 env ${envs[i]} "${dirs[i]}/decode_bench" "$@" >"$out/$label.jsonl" 2>"$out/$label.err"
  row "${letters[i]} $label" "rc $? $(python3 "$root/tools/gpu/decode_row.py" "$out/$label.jsonl" 2>&1)"
}
for run in 1 2; do
  for ((i = 0; i < n; ++i)); do ours "$i" "${letters[i]}_p64_n256_run$run"; done
done
for ((i = 0; i < n; ++i)); do ours "$i" "${letters[i]}_p2048_n2048" --prompt 2048 --new 2048; done
if [[ ${PROFILE:-0} == 1 ]]; then
  for ((i = 0; i < n; ++i)); do
    # A token is 28 layers x (4 one-row kernels + attention) + the lm_head's: 141 matching launches;
    # skip three tokens (the graph's first replays), then one layer's five and the next q/k/v.
    # shellcheck disable=SC2086
    env ${envs[i]} OUT="$out" NCU_LABEL="decode_${letters[i]}" NCU_FILTER='gemv_kernel|decode_attention_kernel' \
      NCU_SKIP=423 NCU_COUNT=6 NCU_SOURCE=1 bash "$root/tools/gpu/ncu_profile.sh" "${dirs[i]}/decode_bench" --new 8 2>&1 | tail -45
  done
fi
for ((i = 0; i < n; ++i)); do echo "${letters[i]}: ${variants[i]}"; done | tee "$out/variants.txt"
echo
echo "== decode A/B ($(date -u +%Y-%m-%dT%H:%MZ), $(head -1 "$out/device.txt"))"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
mkdir -p "$final" && tar -czf "$final/logs.tgz" -C "$out" . && cp "$out/summary.txt" "$final/"
