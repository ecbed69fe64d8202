#!/usr/bin/env bash
# Issue 13's check on the GPU machine, in one call:
#   1. builds the CUDA tests twice, side by side: PTX for compute_80 only (the driver JIT-compiles
#      it for the GPU at hand, as it would for a card this build has no machine code for) and the
#      default fat binary (PEFT_CUDA_ARCHS: sm_80, sm_86, sm_89, sm_90a machine code + sm_90 PTX);
#      cuobjdump lists what each binary holds;
#   2. meanwhile, memory: identity_finetune_cuda (prebuilt on a development machine: BIN_DIR) with the
#      recipe's flags on a 7B-shaped checkpoint (tools/gpu/sparse_7b_checkpoint.py), default
#      --gradient_checkpointing (auto), true and false, peak device memory sampled by nvidia-smi every 100 ms;
#      then the same false run with all but ~22 GB of the GPU held by another process (a 24 GB
#      card after its desktop), where the program must switch to recompute by itself;
#   3. runs the model, decode, loader and attention tests on the PTX build with the portable
#      kernels forced (PEFT_CUDA_PORTABLE=1: no Hopper instructions, 99 KB of shared memory a
#      block, as an RTX 3090 / 4090), then on the fat build with the kernels the device picks.
# Logs under $OUT (the device tool's folder) or build-portable/out; a table last.
#   [PEFT_GPU_DEPS=DIR] tools/gpu/portable_check.sh BIN_DIR   (BIN_DIR has identity_finetune_cuda;
#                                                              "" skips step 2)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:-}"
out="${OUT:-$root/build-portable/out}"
mkdir -p "$out"
nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PEFT_FIXTURES_DIR="$root/tests/fixtures"
tests=(cuda_test_model cuda_test_decode cuda_test_weight_loader cuda_test_attention)
declare -a summary
row() {  # a summary row, also printed and kept in summary.txt at once (a run cut off keeps its rows)
  summary+=("$(printf '%-58s %s' "$1" "$2")")
  echo "${summary[-1]}" | tee -a "$out/rows.txt"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/summary.txt"

# 1. builds
# The GPU machine has no utf8proc / PCRE2 (the data loader's): DEPS (optional) holds their headers
# (DEPS/include) and static libraries (DEPS/lib), copied from a development machine.
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
build() {  # build <dir> <archs> <jobs>
  local start=$SECONDS
  build_cuda_tests "$1" "$2" "$3" "${tests[@]}"
  local rc=$?
  echo "build $1 ($2): rc $rc, $((SECONDS - start)) s"
  return $rc
}
# Both builds run in the background (niced) while step 2 uses the GPU.
(renice -n 10 $BASHPID >/dev/null; build "$root/build-ptx80" "80-virtual" 4) >"$out/build.log" 2>&1 &
ptx_pid=$!
(renice -n 10 $BASHPID >/dev/null; build "$root/build-fat" "80;86;89;90a" 12) >"$out/build_fat.log" 2>&1 &
fat_pid=$!
# 2. memory (during the builds)
if [[ -n "$bin" && -x "$bin/identity_finetune_cuda" ]]; then
  ck=/tmp/peft-7b-sparse
  python3 "$root/tools/gpu/sparse_7b_checkpoint.py" "$ck" && cp "$root"/assets/tokenizer/qwen2.5/* "$ck/"
  recipe=(--device cuda --model "$ck" --train_type lora --dataset "$root/assets/data/self_cognition.jsonl"
          --torch_dtype bfloat16 --num_train_epochs 1 --per_device_train_batch_size 1 --learning_rate 1e-4
          --lora_rank 8 --lora_alpha 32 --target_modules all-linear --gradient_accumulation_steps 16
          --eval_steps 50 --save_steps 50 --save_total_limit 2 --logging_steps 1 --max_length 2048
          --system 'You are a helpful assistant.' --warmup_ratio 0.05 --model_author swift --model_name swift-robot
          --max_steps 2)
  memrun() {  # memrun <label> [flags ...]
    local label=$1
    shift
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$out/smi.tmp" 2>/dev/null &
    local smi=$!
    PEFT_ASSETS="$root/assets" timeout 150 "$bin/identity_finetune_cuda" "${recipe[@]}" --output_dir "/tmp/peft-out-$label" \
      "$@" >"$out/tmp.log" 2>&1
    local rc=$?
    kill $smi 2>/dev/null
    wait $smi 2>/dev/null
    { echo "#### $label (rc $rc): $*"; cat "$out/tmp.log"; } >>"$out/memory.log"
    local peak plan used
    peak=$(sort -n "$out/smi.tmp" | tail -1)
    plan=$(grep -m1 -o 'planned peak [0-9.]* GB' "$out/tmp.log")
    used=$(grep -m1 -o 'device memory in use [0-9.]* GB' "$out/tmp.log")
    row "memory $label" "rc $rc; ${plan:-no plan}; ${used:-?}; nvidia-smi peak ${peak:-?} MiB"
  }
  rm -f "$out/memory.log"
  memrun "default (auto)"
  memrun "checkpointing" --gradient_checkpointing true
  memrun "no-checkpointing" --gradient_checkpointing false
  # All but ~22 GB held by another process: the GPU looks like a 24 GB card with its desktop.
  free_mib=$(nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits | head -1)
  hold=$(( (free_mib - 22 * 1024) * 1024 * 1024 ))
  python3 -c "import torch,time,sys; x=torch.empty($hold, dtype=torch.uint8, device='cuda'); print('holding', x.numel()/2**30, 'GiB', flush=True); time.sleep(200)" >"$out/hold.log" 2>&1 &
  holder=$!
  for _ in $(seq 60); do grep -q holding "$out/hold.log" && break; sleep 0.5; done
  cat "$out/hold.log"
  memrun "no-checkpointing-24gb" --gradient_checkpointing false
  grep -m1 '^\[memory\]' "$out/tmp.log"
  kill $holder 2>/dev/null
  wait $holder 2>/dev/null
  rm -f "$out/tmp.log" "$out/smi.tmp"
fi

wait $fat_pid
fat_rc=$?
wait $ptx_pid
ptx_rc=$?
cat "$out/build_fat.log" >>"$out/build.log"
rm -f "$out/build_fat.log"
grep "^build " "$out/build.log"
row "build compute_80 PTX only (4 tests)" "$([[ $ptx_rc == 0 ]] && echo ok || echo FAIL)"
row "build fat 80;86;89;90a (4 tests)" "$([[ $fat_rc == 0 ]] && echo ok || echo FAIL)"
for b in build-ptx80 build-fat; do
  [[ -x "$root/$b/cuda_test_model" ]] || continue
  echo "== $b/cuda_test_model holds:"
  /usr/local/cuda/bin/cuobjdump --list-elf --list-ptx "$root/$b/cuda_test_model" |
    sed -E 's/^(ELF|PTX) file.*\.(sm_[0-9a-z]+)\.(cubin|ptx)$/\1 \2/' | sort | uniq -c
done 2>&1 | tee "$out/cuobjdump.txt"

# 3. tests
run_tests() {  # run_tests <label> <build dir> [env ...]
  local label=$1 dir=$2
  shift 2
  for t in "${tests[@]}"; do
    [[ -x "$dir/$t" ]] || { row "$label $t" "NOT BUILT"; continue; }
    local start=$SECONDS
    env "$@" timeout 150 "$dir/$t" >"$out/tmp.log" 2>&1
    local rc=$?
    { echo "#### $label $t (rc $rc)"; cat "$out/tmp.log"; } >>"$out/tests.log"
    local family count
    family=$(grep -m1 -o '\[cuda\].*' "$out/tmp.log" | sed 's/.*: //')
    count=$(grep -E -o '== [0-9]+ of [0-9]+ checks passed' "$out/tmp.log" | tail -1)
    row "$label $t" "$([[ $rc == 0 ]] && echo PASS || echo "FAIL(rc=$rc)") ${count#== } $((SECONDS - start))s [$family]"
  done
}
rm -f "$out/tests.log"
run_tests "ptx80 portable" "$root/build-ptx80" PEFT_CUDA_PORTABLE=1
run_tests "fat" "$root/build-fat" PEFT_CUDA_PORTABLE=0
rm -f "$out/tmp.log"

echo
echo "== issue 13 check ($(date -u +%Y-%m-%dT%H:%MZ))"
printf '%s\n' "${summary[@]}" | tee -a "$out/summary.txt"
