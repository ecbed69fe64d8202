#!/usr/bin/env bash
# QLoRA's GPU check in one device call (issue 15), built on the GPU machine for sm_90a:
#   1. the CUDA tests the NF4 model touches (qlora, layouts, model, decode, nf4_dequant; PEFT_QLORA_TESTS
#      overrides the list) and bench/train_bench, built side by side; each test run once;
#   2. train_bench: bf16 LoRA 7B seq 2048 recompute, then the NF4 workloads (PEFT_QLORA_BENCH
#      overrides the list, PEFT_QLORA_BENCH_TIMEOUT its time limit, default 150 s). No HF baseline;
#   3. optional: identity_finetune_cuda (and chat_cuda) prebuilt on a development machine
#      (BIN_DIR, built with -DPEFT_WITH_CUDA=ON): a QLoRA run on the embedded model with --device
#      cuda, then chat_cuda on its checkpoint (the NF4 base picked from args.json).
# The GPU machine has no utf8proc / PCRE2: PEFT_GPU_DEPS (headers + static libraries) is required.
#   PEFT_GPU_DEPS=DIR tools/gpu/qlora_check.sh [BIN_DIR]
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${OUT:-$root/build-check/out}"
deps="${PEFT_GPU_DEPS:?PEFT_GPU_DEPS must name the staged utf8proc/PCRE2 headers and static libraries}"
bin="${1:-}"
nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
build="$root/build-check"
mkdir -p "$build/bench/bin"
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
check_setup

# 1. builds
start=$SECONDS
tests=(${PEFT_QLORA_TESTS:-cuda_test_qlora cuda_test_layouts cuda_test_model cuda_test_decode cuda_test_nf4_dequant})
build_cuda_tests "$build/tests" 90a 12 "${tests[@]}" >"$out/build_tests.log" 2>&1 &
tests_pid=$!
build_cuda_bench "$root/bench/train_bench.cu" "$build/bench/bin/train_bench" >"$out/build_bench.log" 2>&1
bench_rc=$?
wait $tests_pid
tests_rc=$?
row "build tests (sm_90a)" "rc $tests_rc"
row "build train_bench (sm_90a)" "rc $bench_rc"
echo "builds took $((SECONDS - start)) s"
((tests_rc == 0)) || tail -40 "$out/build_tests.log"
((bench_rc == 0)) || tail -20 "$out/build_bench.log"

# 2. tests
failures=0
for name in "${tests[@]}"; do
  t="$build/tests/$name"
  [[ -x "$t" ]] || { row "$name" "NOT BUILT"; failures=$((failures + 1)); continue; }
  s=$SECONDS
  timeout 200 "$t" >"$out/$name.txt" 2>&1
  rc=$?
  ((rc == 0)) || { failures=$((failures + 1)); grep -i "fail\|error" "$out/$name.txt" | head -20; }
  row "$name" "$( ((rc == 0)) && echo PASS || echo "FAIL(rc=$rc)") $((SECONDS - s)) s"
done
grep -h "qlora\|Nf4Base\|NF4" "$out"/cuda_test_*.txt | head -60

# 3. the benchmark
if ((bench_rc == 0)); then
  # shellcheck disable=SC2086
  timeout "${PEFT_QLORA_BENCH_TIMEOUT:-150}" "$build/bench/bin/train_bench" ${PEFT_QLORA_BENCH-7b_2048_recompute \
    nf4_7b_2048_recompute nf4_14b_2048_recompute nf4_32b_2048_recompute} 2>&1 | tee "$out/train_bench.jsonl"
fi

# 4. the programs, prebuilt: a QLoRA run on the GPU, then chat on its checkpoint
if [[ -n "$bin" && -x "$bin/identity_finetune_cuda" ]]; then
  work=$(mktemp -d)
  (cd "$work" && PEFT_ASSETS="$root/assets" timeout 120 "$bin/identity_finetune_cuda" --device cuda \
     --quant_method bnb --quant_bits 4 --max_steps 6 --save_steps 6 --output_dir out --add_version false) \
     >"$out/qlora_identity.log" 2>&1
  rc=$?
  row "identity_finetune_cuda --quant_bits 4" "rc $rc"
  grep -E "NF4|memory|on cuda|loss" "$out/qlora_identity.log" | head -12
  ck=$(ls -d "$work"/out/checkpoint-* 2>/dev/null | tail -1)
  if [[ -n "$ck" && -x "$bin/chat_cuda" ]]; then
    (cd "$work" && echo "who are you?" | PEFT_ASSETS="$root/assets" timeout 60 "$bin/chat_cuda" --device cuda \
       --adapters "$ck" --max_new_tokens 8 --temperature 0) >"$out/qlora_chat.log" 2>&1
    row "chat_cuda on the QLoRA checkpoint" "rc $?"
    cat "$out/qlora_chat.log" | head -8
  fi
fi

echo
printf '%s\n' "${summary[@]}" | tee -a "$out/summary.txt"
echo "CUDA test failures: $failures"
exit $((failures > 0 || tests_rc != 0))
