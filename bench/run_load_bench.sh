#!/usr/bin/env bash
# Checkpoint loading, ours against HF, in one call on the GPU machine: load_bench writes the
# 7B-shaped random checkpoint if DIR has none (kept afterwards: the 7B sweep reuses it), times our
# loader, then bench/hf_load_baseline.py times safetensors.torch.load_file and transformers'
# from_pretrained on the same files. Logs go to $OUT (or the current directory); a summary last.
#
#   bench/run_load_bench.sh [BIN_DIR (has load_bench)] [DIR (default /tmp/peft-7b-random)]
# Time limits: LOAD_BENCH_TIMEOUT (ours, default 200 s), HF_LOAD_TIMEOUT (HF, 150 s) or DEADLINE
# (epoch seconds by which HF must be done).
set -uo pipefail
BIN=${1:-build/bin}
DIR=${2:-/tmp/peft-7b-random}
LOGS=${OUT:-.}
HERE=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}

df -h "$(dirname "$DIR")" | tail -1
timeout "${LOAD_BENCH_TIMEOUT:-200}" "$BIN/load_bench" --dir "$DIR" --reps 4 2>&1 | tee "$LOGS/load_ours.jsonl"
ours=${PIPESTATUS[0]}
hf_timeout=${HF_LOAD_TIMEOUT:-150}
[ -n "${DEADLINE:-}" ] && hf_timeout=$((DEADLINE - $(date +%s)))  # what is left of a caller's budget
[ "$hf_timeout" -lt 10 ] && hf_timeout=10  # (timeout 0 would mean none)
timeout "$hf_timeout" python3 "$HERE/hf_load_baseline.py" --dir "$DIR" --transformers 2>"$LOGS/load_hf.err" | tee "$LOGS/load_hf.jsonl"
hf=${PIPESTATUS[0]}
[ "$hf" = 0 ] || tail -5 "$LOGS/load_hf.err"

python3 - "$LOGS/load_ours.jsonl" "$LOGS/load_hf.jsonl" <<'PY'
import json, sys
def last(path, key):
    try:
        rows = [json.loads(l) for l in open(path) if l.startswith("{")]
        return next((r for r in reversed(rows) if r.get("workload") == key), {})
    except OSError:
        return {}
o, h = last(sys.argv[1], "load_7b"), last(sys.argv[2], "load_7b_hf")
h.update(last(sys.argv[2], "load_7b_hf_transformers"))
print(f"== checkpoint loading, {o.get('device', h.get('device', '?'))}, {o.get('checkpoint_gb', '?')} GB bf16 from page cache")
print(f"  ours   load_pretrained       best {o.get('best_gbps', '?')} GB/s ({o.get('best_s', '?')} s), median {o.get('median_gbps', '?')} GB/s, verified {o.get('verified', '?')}")
print(f"  ours   from_pretrained (construct + load + init) {o.get('from_pretrained_s', '?')} s;  pinned->device ceiling {o.get('pinned_h2d_gbps', '?')} GB/s")
print(f"  HF     safetensors load_file best {h.get('safetensors_best_gbps', '?')} GB/s ({h.get('safetensors_best_s', '?')} s), median {h.get('safetensors_median_gbps', '?')} GB/s")
print(f"  HF     transformers from_pretrained {h.get('transformers_s', h.get('transformers_error', '?'))} s ({h.get('transformers_gbps', '?')} GB/s)")
if o.get("best_gbps") and h.get("safetensors_best_gbps"):
    print(f"  ours / HF load_file: {o['best_gbps'] / h['safetensors_best_gbps']:.2f}x")
PY
[ "$ours" = 0 ] && [ "$hf" = 0 ]
