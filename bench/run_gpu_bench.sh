#!/usr/bin/env bash
# The GPU benchmark in one call on the GPU machine: builds bench/train_bench.cu (unless
# --prebuilt), runs it (ours first: it is quick), then HF transformers + PEFT on the same
# workloads (bench/hf_peft_baseline.py, with the identity run), and prints one table with
# ours/HF ratios. JSON lines and logs go to $OUT (the device tool's folder) or build/bench_out.
#   bench/run_gpu_bench.sh [--prebuilt] [--no-hf] [workload ...]
# Environment: PEFT_BENCH_BUILD_DIR (default build-cuda-all), HF_TIMEOUT (seconds, default 400).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${PEFT_BENCH_BUILD_DIR:-$root/build-cuda-all}"
out="${OUT:-$build/bench_out}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
prebuilt=0 hf=1
workloads=()
for a in "$@"; do
  case "$a" in
    --prebuilt) prebuilt=1 ;;
    --no-hf) hf=0 ;;
    *) workloads+=("$a") ;;
  esac
done

if ((prebuilt == 0)); then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPEFT_WITH_CUDA=ON -DPEFT_BUILD_TESTS=OFF \
    -DPEFT_BUILD_EXAMPLES=OFF -DPEFT_BUILD_BENCH=OFF -DCMAKE_CUDA_COMPILER="${CUDACXX:-/usr/local/cuda/bin/nvcc}" \
    >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
  cmake --build "$build" --target train_bench -j "$(nproc)" >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader || true
echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown) (plus uncommitted changes: $(git -C "$root" status --porcelain 2>/dev/null | wc -l) files)"

"$build/bin/train_bench" "${workloads[@]}" 2>&1 | tee "$out/ours.jsonl"
if ((hf == 1)); then
  only=""
  ((${#workloads[@]} > 0)) && only="only=$(IFS=,; echo "${workloads[*]}")"
  PYTHONUNBUFFERED=1 timeout "${HF_TIMEOUT:-400}" python3 "$root/bench/hf_peft_baseline.py" seed $only \
    >"$out/hf.jsonl" 2>"$out/hf.err"
  echo "HF exit status $?"
  cat "$out/hf.jsonl"
fi

PYTHONPATH="$root/bench" python3 - "$out/ours.jsonl" "$out/hf.jsonl" <<'EOF'
import sys
from bench_rows import load
ours, hf = load(sys.argv[1]), load(sys.argv[2])
targets = {"7b_2048_keep": "21000 tok/s, 24 GB", "7b_2048_selective": "17500 tok/s, 17.5 GB",
           "7b_2048_recompute": "(selective is the 17,500 row)",
           "identity": "train 3 s", "7b_64": "10 ms/step", "7b_nemo_keep": "18000 tok/s (NeMo: 14110 on an H100)",
           "7b_nemo_recompute": "18000 tok/s (NeMo: 14110 on an H100)"}
def f(v, fmt="{:.0f}"): return "-" if v is None else fmt.format(v)
def ratio(a, b): return "-" if a is None or b is None or b == 0 else "{:.2f}x".format(a / b)
print()
print("| workload | ours tok/s | HF tok/s | ours/HF | ours step ms | HF step ms | ours peak GB (arena / device) | HF peak GB | ours/HF mem | ours MFU | target |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for w in ["7b_2048_keep", "7b_2048_selective", "7b_2048_recompute", "7b_4096_recompute", "7b_64", "identity", "0.5b_2048", "0.5b_2048_full",
          "7b_nemo_keep", "7b_nemo_recompute"]:
    o, h = ours.get(w, {}), hf.get(w, {})
    if not o and not h: continue
    print("| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |".format(
        w, f(o.get("tok_per_s")), f(h.get("tok_per_s")), ratio(o.get("tok_per_s"), h.get("tok_per_s")),
        f(o.get("step_ms"), "{:.1f}"), f(h.get("step_ms"), "{:.1f}"),
        f(o.get("arena_peak_gb"), "{:.2f}"), f(o.get("device_used_gb"), "{:.2f}"), f(h.get("peak_gb"), "{:.2f}"),
        ratio(o.get("arena_peak_gb"), h.get("peak_gb")), f(o.get("mfu"), "{:.1%}"), targets.get(w, "")))
if "identity" in ours or "identity" in hf:
    o, h = ours.get("identity", {}), hf.get("identity", {})
    print()
    print("identity run wall time: ours train {} s, init+train+save {} s; HF train {} s, init+train+save {} s".format(
        f(o.get("train_s"), "{:.2f}"), f(o.get("total_s"), "{:.2f}"), f(h.get("train_s"), "{:.1f}"), f(h.get("total_s"), "{:.1f}")))
EOF
# The "will it fit" grid (issue 15), when its rows ran: ours planned and measured beside HF's bf16.
if grep -q '"workload": "grid_' "$out/ours.jsonl" 2>/dev/null; then
  echo
  python3 "$root/bench/memory_grid.py" "$out/ours.jsonl" "$out/hf.jsonl"
fi
