#!/usr/bin/env bash
# Issue 4's GPU checks in one device call, on binaries built on a development machine
# (cmake -S . -B build-cuda-wire -G Ninja -DPEFT_WITH_CUDA=ON -DPEFT_BUILD_TESTS=OFF
#  -DPEFT_BUILD_BENCH=OFF && ninja -C build-cuda-wire identity_finetune_cuda train_bench
#  cuda_test_model cuda_test_attention), carried with assets/tokenizer:
#   a. cuda_test_model and cuda_test_attention;
#   b. identity_finetune_cuda --device cuda on tests/fixtures/tiny_public (issue 2's command,
#      --logging_steps 1 for per-step losses), on the embedded default (no --model), and the
#      tiny_public command again with --lora_dropout 0 under --device auto;
#   c. bench/run_gpu_bench.sh --prebuilt: ours and HF side by side.
# Logs go to $OUT (at most 8 files come back): tests.log, identity.log, ours.jsonl, hf.jsonl,
# hf.err; a summary table comes last. PEFT_FINAL_DEADLINE (seconds from start, default 570)
# bounds the HF side, which runs last.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${PEFT_CUDA_BUILD_DIR:-$root/build-cuda-wire}"
out="${OUT:-$build/final_out}"
mkdir -p "$out"
deadline=${PEFT_FINAL_DEADLINE:-570}
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PEFT_FIXTURES_DIR="$root/tests/fixtures" PEFT_ASSETS="$root/assets"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
summary=()
step() {  # step <label> <timeout s> <log> <command...>
  local label=$1 limit=$2 log=$3 start=$SECONDS
  shift 3
  echo "=== $label" | tee -a "$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  summary+=("$(printf '%-44s rc=%-4s %4ss' "$label" "$rc" $((SECONDS - start)))")
  return $rc
}

# a. tests
for t in cuda_test_model cuda_test_attention; do
  bin="$(find "$build" -name "$t" -type f -perm -u+x | head -1)"
  step "$t" 150 "$out/tests.log" "$bin"
  tail -4 "$out/tests.log"
done

# b. identity_finetune_cuda
ift="$build/bin/identity_finetune_cuda"
work="$(mktemp -d)"
tiny="$root/tests/fixtures/tiny_public"
(cd "$work" && step "identity tiny_public --device cuda" 120 "$out/identity.log" "$ift" --model "$tiny/model" \
  --dataset "$tiny/tokens.jsonl" --train_type lora --lora_rank 8 --lora_alpha 32 --target_modules all-linear \
  --learning_rate 1e-3 --num_train_epochs 2 --output_dir tiny --device cuda --logging_steps 1
 echo "--- tiny logging.jsonl" >>"$out/identity.log"; cat tiny/*/logging.jsonl >>"$out/identity.log"
 printf '%s\n' "${summary[-1]}" >"$work/s1")
summary+=("$(cat "$work/s1")")
(cd "$work" && step "identity embedded default --device cuda" 150 "$out/identity.log" "$ift" --device cuda \
  --output_dir emb
 printf '%s\n' "${summary[-1]}" >"$work/s2")
summary+=("$(cat "$work/s2")")
# The same with --lora_dropout 0 (the backends draw different dropout masks) and --device auto.
(cd "$work" && step "identity tiny_public dropout 0 --device auto" 60 "$out/identity.log" "$ift" --model "$tiny/model" \
  --dataset "$tiny/tokens.jsonl" --train_type lora --lora_rank 8 --lora_alpha 32 --target_modules all-linear \
  --learning_rate 1e-3 --num_train_epochs 2 --output_dir tiny0 --logging_steps 1 --lora_dropout 0
 echo "--- tiny dropout 0 logging.jsonl" >>"$out/identity.log"; cat tiny0/*/logging.jsonl >>"$out/identity.log"
 printf '%s\n' "${summary[-1]}" >"$work/s3")
summary+=("$(cat "$work/s3")")
grep -E "^\[(device|model)\]|^\[train\] done|^\[done\]" "$out/identity.log"

# c. the benchmark, ours then HF, within what is left of the deadline
left=$((deadline - SECONDS - 20))
echo "=== bench (HF_TIMEOUT $((left - 90)) s)"
HF_TIMEOUT=$((left - 90)) PEFT_BENCH_BUILD_DIR="$build" OUT="$out" timeout "$left" bash "$root/bench/run_gpu_bench.sh" --prebuilt \
  >"$out/bench.log" 2>&1
echo "bench rc=$?"

echo
echo "== final run summary ($(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$root" rev-parse --short HEAD 2>/dev/null) + working tree)"
printf '%s\n' "${summary[@]}"
sed -n '/^| workload/,$p' "$out/bench.log"
