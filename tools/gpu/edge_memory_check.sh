#!/usr/bin/env bash
# A training run planned at the edge of the free memory, through the program a user runs: one
# pre-tokenized row of EDGE_TOKENS (default 24,000) tokens, `--gradient_checkpointing false`, the
# 7B-shaped random checkpoint, one step. On an 80 GB H100 keep-all does not fit, so the plan falls
# back to selective recompute with as many layers kept as fit (17: 83.78 GB of the 84.46 GB the
# program sees): what else the run allocates (the identity answers' generation cache, before and
# after training) must fit beside it. On a bigger card, EDGE_FREE_GB=85.02 (what nvidia-smi shows
# free on an idle H100) has tools/gpu/hold_memory.py hold the rest; the program then sees that less
# its own CUDA context, as on the H100 (approximately: the plan moves a layer per ~3 GB).
#   tools/gpu/edge_memory_check.sh BIN_DIR [OLD_BIN_DIR]
# BIN_DIR holds identity_finetune_cuda and load_bench; OLD_BIN_DIR, when given, an
# identity_finetune_cuda to run the same way first (the A/B). Logs under $OUT; a row each.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:?usage: edge_memory_check.sh BIN_DIR [OLD_BIN_DIR]}"
old="${2:-}"
out="${OUT:-$root/build-edge-check/out}"
nvcc="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
# shellcheck source=tools/gpu/gpu_build.sh
source "$root/tools/gpu/gpu_build.sh"
[[ -n "${summary+x}" ]] || check_setup
failures=${failures:-0}
ckpt=${PEFT_7B_CKPT:-/tmp/peft-7b-random}
# The identity questions the program answers before and after training are this tree's assets (a
# binary built elsewhere looks for its build tree's).
export PEFT_ASSETS="$root/assets"
[[ -f "$ckpt/config.json" ]] || { "$bin/load_bench" --dir "$ckpt" --write-only >"$out/edge_ckpt.log" 2>&1 &&
                                  cp "$root"/assets/tokenizer/qwen2.5/* "$ckpt"/; }
data=/tmp/peft-edge/row.jsonl
mkdir -p /tmp/peft-edge
python3 - "$data" "${EDGE_TOKENS:-24000}" <<'PY'
import json, random, sys
random.seed(0)
ids = [random.randrange(151643) for _ in range(int(sys.argv[2]))]
open(sys.argv[1], "w").write(json.dumps({"input_ids": ids, "labels": ids}) + "\n")
PY

# edge LABEL PROGRAM: one run; the row says its exit status, plan and where it stopped.
edge() {
  local label=$1 prog=$2 log="$out/edge_$1.log" s=$SECONDS rc
  (cd /tmp/peft-edge && rm -rf "out_$label" &&
   timeout 300 ${EDGE_FREE_GB:+python3 "$root/tools/gpu/hold_memory.py" "$EDGE_FREE_GB"} "$prog" --model "$ckpt" \
     --dataset "$data" --gradient_checkpointing false --max_steps 1 --gradient_accumulation_steps 16 \
     --eval_steps 1000 --save_steps 1000 --output_dir "out_$label") >"$log" 2>&1
  rc=$?
  grep -E "hold_memory|^\[memory\]|rror" "$log" | head -6
  row "edge $label" "rc $rc, $((SECONDS - s)) s; $(grep -m1 -oE "^\[memory\].{0,110}" "$log" | tr -d '\n'); \
$(grep -m1 -oE "(cudaError[A-Za-z]*|error:).{0,80}" "$log" | tr -d '\n')"
  return $rc
}
[[ -n "$old" ]] && edge old "$old/identity_finetune_cuda"
edge new "$bin/identity_finetune_cuda" || failures=$((failures + 1))
