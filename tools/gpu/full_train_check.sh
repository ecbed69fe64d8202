#!/usr/bin/env bash
# --train_type full on the GPU (issue 12), in one device call, on static binaries built on a
# development machine and packed by tools/gpu/pack_binaries.sh:
#   cmake -S . -B build-cuda -G Ninja -DPEFT_WITH_CUDA=ON -DPEFT_CUDA_ARCHS=90a && ninja -C build-cuda \
#     cuda_test_layouts identity_finetune_cuda policy_experiments_cuda   (+ train_bench: merged_check.sh's nvcc line)
#   tools/gpu/pack_binaries.sh build-cuda cuda_test_layouts identity_finetune_cuda policy_experiments_cuda train_bench
# then run with the pack carried (PEFT_GPU_PACK, default build-cuda/gpu):
#   a. cuda_test_layouts: every layout held to the CPU oracle, FullModel (tied, untied, recompute) among them;
#   b. train_bench 0.5b_2048_full and 0.5b_2048: the Qwen2.5-0.5B shape, full fine-tune vs LoRA r=8;
#   c. identity_finetune_cuda --device cuda --train_type full on the embedded default model, then the
#      same flags with --device cpu; both output folders' model.safetensors headers compared, and
#      transformers loads the GPU run's folder as a model;
#   d. policy_experiments_cuda: the 7B rows, full MLP + LoRA attention and the last 2 layers full among them.
# Logs under $OUT; a summary last.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
pack="${PEFT_GPU_PACK:-$root/build-cuda/gpu}"
out="${OUT:-$pack/out}"
bin=/tmp/peft-full-bin
mkdir -p "$out" "$bin"
tar -xJf "$pack/bins.tar.xz" -C "$bin" || exit 1
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PEFT_FIXTURES_DIR="$root/tests/fixtures" PEFT_ASSETS="$root/assets"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
summary=()
step() {  # step <label> <timeout s> <log> <command...>
  local label=$1 limit=$2 log=$3 start=$SECONDS
  shift 3
  timeout "$limit" "$@" >"$out/$log" 2>&1
  local rc=$?
  summary+=("$(printf '%-52s rc %d, %d s' "$label" "$rc" $((SECONDS - start)))")
  echo "${summary[-1]}"
  return $rc
}

step "a. cuda_test_layouts" 180 layouts.log "$bin/cuda_test_layouts"
grep -E "FAIL|passed|failed" "$out/layouts.log" | tail -5

step "b. train_bench 0.5b_2048_full 0.5b_2048" 150 bench.log "$bin/train_bench" 0.5b_2048_full 0.5b_2048
cat "$out/bench.log"

flags=(--train_type full --torch_dtype bfloat16 --max_steps 6 --save_steps 6 --logging_steps 1
       --per_device_train_batch_size 2 --learning_rate 1e-4 --num_train_epochs 1 --eval_steps 1000)
step "c. identity_finetune_cuda --train_type full (cuda)" 120 identity_cuda.log \
  "$bin/identity_finetune_cuda" --device cuda "${flags[@]}" --output_dir /tmp/peft-full-cuda
step "c. identity_finetune_cuda --train_type full (cpu)" 180 identity_cpu.log \
  "$bin/identity_finetune_cuda" --device cpu "${flags[@]}" --output_dir /tmp/peft-full-cpu
grep -hE "^\[device\]|^\[model\]|'loss'|\"loss\"|loss [0-9]|\[memory\]|\[train\] done" "$out/identity_cuda.log" | head -20
grep -hE "\[train\] done" "$out/identity_cpu.log"
python3 - /tmp/peft-full-cuda /tmp/peft-full-cpu >"$out/identity_compare.log" 2>&1 <<'EOF'
import glob, json, struct, sys
def header(run):
    files = sorted(glob.glob(run + "/**/checkpoint-*/model.safetensors", recursive=True))
    with open(files[-1], "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return files[-1], {k: (v["dtype"], v["shape"]) for k, v in h.items()}
(fg, g), (fc, c) = header(sys.argv[1]), header(sys.argv[2])
print("gpu:", fg, len(g), "tensors;", "cpu:", fc, len(c), "tensors")
print("same names, dtypes and shapes:", g == c, "; dtypes:", sorted({v[0] for v in g.values()}))
import os
folder = os.path.dirname(fg)
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(folder)
print("transformers loads", folder, ":", type(m).__name__, sum(p.numel() for p in m.parameters()), "parameters")
EOF
summary+=("$(printf '%-52s %s' "c. checkpoints compared (python)" "rc $?")")
cat "$out/identity_compare.log"

step "d. policy_experiments_cuda --tokens 2048 --steps 5" 300 policy.log "$bin/policy_experiments_cuda" --tokens 2048 --steps 5
cat "$out/policy.log"

echo
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
