#!/usr/bin/env bash
# The session's GPU checks in one device call, on static binaries built on a development machine
# and carried as one archive (they compress ~7x; the carry limit is 64 MiB):
#   cmake -S . -B build-final -G Ninja -DPEFT_WITH_CUDA=ON -DPEFT_BUILD_TESTS=OFF && ninja -C build-final \
#     identity_finetune_cuda lr_epoch_sweep_cuda policy_experiments_cuda chat_cuda load_bench decode_bench \
#     cuda_test_model cuda_test_decode cuda_test_weight_loader cuda_test_nccl
#   tools/gpu/pack_binaries.sh build-final     # -> build-final/gpu/bins.tar.xz
# then run: carry ["build-final/gpu", "assets/tokenizer"], command `bash tools/gpu/final_run.sh`.
#   a. the CUDA tests (model, decode, loader, NCCL);
#   b. a Qwen2.5-7B-shaped random checkpoint written to disk (real tensor names, 4 shards) and
#      the Qwen2.5 tokenizer beside it, then the loader benchmark on it;
#   c. the recipe, flag for flag, on that checkpoint: identity_finetune_cuda --model DIR;
#      then chat_cuda asks the trained adapter "你是谁?" (swift infer's check);
#   d. lr_epoch_sweep_cuda: the article's 3 x 5 grid on the 7B shape;
#   e. policy_experiments_cuda: layouts x activation policies at the 7B shape;
#   f. decode_bench (ours; HF generate's baseline is bench/run_decode_bench.sh);
#   g. bench/run_multi_gpu.sh one-gpu: the NCCL path at world size 1;
#   h. compute-sanitizer memcheck and racecheck on cuda_test_decode --small.
# PEFT_FINAL_ONLY (letters, default abcdefgh) picks sections; c needs b.
# Logs go to $OUT (at most 8 files come back); a summary comes last. PEFT_FINAL_DEADLINE (seconds
# from start, default 560) skips what would not finish.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
pack="${PEFT_GPU_PACK:-$root/build-final/gpu}"
out="${OUT:-$pack/out}"
mkdir -p "$out" /tmp/peft-bin
deadline=${PEFT_FINAL_DEADLINE:-560}
tar -xJf "$pack/bins.tar.xz" -C /tmp/peft-bin || exit 1
bin=/tmp/peft-bin
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PEFT_FIXTURES_DIR="$root/tests/fixtures" PEFT_ASSETS="$root/assets"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
summary=()
want() { [[ "${PEFT_FINAL_ONLY:-abcdefgh}" == *$1* ]]; }
step() {  # step <label> <timeout s> <log> <command...>
  local label=$1 limit=$2 log=$3 start=$SECONDS
  shift 3
  local left=$((deadline - SECONDS))
  if ((left < 15)); then summary+=("$(printf '%-46s skipped (deadline)' "$label")"); return 99; fi
  ((limit > left)) && limit=$left
  echo "=== $label" >>"$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  summary+=("$(printf '%-46s rc=%-4s %4ss' "$label" "$rc" $((SECONDS - start)))")
  return $rc
}

# a. tests
want a && for t in cuda_test_model cuda_test_decode cuda_test_weight_loader; do
  [[ -x "$bin/$t" ]] || continue
  step "$t" 150 "$out/tests.log" "$bin/$t"
  tail -2 "$out/tests.log"
done

# b. the 7B-shaped checkpoint, and loading it
ckpt=/tmp/peft-7b-random
want b && {
step "write 7B-shaped checkpoint" 90 "$out/bench.log" "$bin/load_bench" --dir "$ckpt" --write-only
cp "$root"/assets/tokenizer/qwen2.5/* "$ckpt"/
step "load_bench (ours)" 60 "$out/bench.log" "$bin/load_bench" --dir "$ckpt" --reps 3
grep '"workload"' "$out/bench.log" | tail -1
}

# c. the recipe on it, then swift infer's question to the trained adapter
work=/tmp/peft-work
mkdir -p "$work"
data="$root/assets/data"
want c && {
(cd "$work" && step "recipe: identity_finetune_cuda --model 7B" 150 "$out/recipe.log" "$bin/identity_finetune_cuda" \
  --model "$ckpt" --train_type lora --dataset "$data/self_cognition.jsonl" --torch_dtype bfloat16 \
  --num_train_epochs 10 --per_device_train_batch_size 1 --learning_rate 1e-4 --lora_rank 8 --lora_alpha 32 \
  --target_modules all-linear --gradient_accumulation_steps 16 --eval_steps 50 --save_steps 50 --save_total_limit 2 \
  --logging_steps 5 --max_length 2048 --output_dir output --system 'You are a helpful assistant.' --warmup_ratio 0.05 \
  --model_author swift --model_name swift-robot
 printf '%s\n' "${summary[-1]}" >"$work/s_recipe")
summary+=("$(cat "$work/s_recipe")")
ckdir="$(ls -d "$work"/output/v*/checkpoint-* 2>/dev/null | tail -1)"
grep -E "^\[(device|model|data|train|done)\]" "$out/recipe.log"
if [[ -n "$ckdir" ]]; then
  # The questions come from a redirection, not a pipe: `step` must run in this subshell to record its row.
  (cd "$work" && step "chat_cuda --adapters (pipe, 7B)" 60 "$out/recipe.log" \
     "$bin/chat_cuda" --device cuda --adapters "$ckdir" --temperature 0 --max_new_tokens 32 < <(printf '你是谁?\nwho are you?\n')
   printf '%s\n' "${summary[-1]}" >"$work/s_chat")
  summary+=("$(cat "$work/s_chat")")
  grep '"query"' "$out/recipe.log" | head -2
fi
}

# d. the sweep: batch 16 x GA 1 is the recipe's update (one step = 16 samples, normalised by
#    their label tokens) in one packed micro-batch; one evaluation and one checkpoint per cell.
want d && {
(cd "$work" && step "lr_epoch_sweep_cuda 3 x 5 (7B)" 240 "$out/sweep.log" "$bin/lr_epoch_sweep_cuda" \
  --model "$ckpt" --dataset "$data/self_cognition.jsonl" --model_name swift-robot --model_author swift \
  --eval_identity_dataset "$data/identity_eval.jsonl" --eval_general_dataset "$data/general_eval.jsonl" \
  --eval_generation_max_new_tokens 24 --per_device_train_batch_size 16 --gradient_accumulation_steps 1 \
  --max_length 256 --eval_steps 100000 --save_steps 100000 --warmup_ratio 0.05 --output_dir sweep
 printf '%s\n' "${summary[-1]}" >"$work/s_sweep")
summary+=("$(cat "$work/s_sweep")")
for f in sweep.md sweep.csv sweep.svg; do cp "$work/sweep/$f" "$out/" 2>/dev/null; done
}

# e, f
want e && step "policy_experiments_cuda" 90 "$out/bench.log" "$bin/policy_experiments_cuda"
want f && step "decode_bench (ours)" 60 "$out/bench.log" "$bin/decode_bench"
# g. what one GPU can check of the multi-GPU path (NCCL at world size 1, a missing rank, cuda_test_nccl)
want g && { step "run_multi_gpu.sh one-gpu" 120 "$out/multi_gpu.log" bash "$root/bench/run_multi_gpu.sh" one-gpu "$bin"
  tail -8 "$out/multi_gpu.log"; }
# h. sanitizers on the decode path (the training kernels' runs: tools/gpu/run_cuda_tests.sh)
san="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
want h && {
PEFT_CUDA_ARENA_DEBUG=1 step "memcheck cuda_test_decode --small" 150 "$out/sanitizer.log" \
  "$san" --tool memcheck --error-exitcode 3 "$bin/cuda_test_decode" --small
step "racecheck cuda_test_decode --small" 150 "$out/sanitizer.log" \
  "$san" --tool racecheck --report-api-errors no --error-exitcode 3 "$bin/cuda_test_decode" --small
grep -h -E "ERROR SUMMARY|RACECHECK SUMMARY|checks passed" "$out/sanitizer.log"
}

echo
echo "== final run summary ($(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$root" rev-parse --short HEAD 2>/dev/null) + working tree)"
printf '%s\n' "${summary[@]}"
grep -h -E "passed|failed|^\{\"workload" "$out/tests.log" "$out/bench.log" | tail -12
sed -n '/^| configuration/,/^$/p' "$out/bench.log"
cat "$out/sweep.md" 2>/dev/null
