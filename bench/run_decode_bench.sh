#!/usr/bin/env bash
# The decode benchmark in one call on the GPU machine: ours (decode_bench, prebuilt: static
# binary) then HF transformers + PEFT eager generate (bench/hf_generate_baseline.py) on the same
# workload, and a small table: decode tokens/s, ours/HF, % of the bandwidth bound.
#   bench/run_decode_bench.sh [BIN_DIR [--prompt N --new N]]   BIN_DIR holds decode_bench (default
#                                                               build-decode/gpu); 64 and 256 by default
# JSON lines go to $OUT (the device tool's folder) or BIN_DIR/bench_out, named by prompt and new
# tokens. HF_TIMEOUT: seconds (300); HF_REPS: HF generate runs, median (3; 1 for 2048 new tokens).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-$root/build-decode/gpu}"
shift || true
shape=("$@")  # --prompt N --new N, passed to both
tag="$(echo "${shape[*]:-default}" | tr -c 'a-z0-9\n' '_')"
out="${OUT:-$bin/bench_out}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true

"$bin/decode_bench" "${shape[@]}" >"$out/ours_$tag.jsonl" 2>"$out/ours_$tag.err"
echo "decode_bench exit status $?"
cat "$out/ours_$tag.jsonl" "$out/ours_$tag.err"
PYTHONUNBUFFERED=1 timeout "${HF_TIMEOUT:-300}" python3 "$root/bench/hf_generate_baseline.py" "${shape[@]}" \
  --reps "${HF_REPS:-3}" >"$out/hf_$tag.jsonl" 2>"$out/hf_$tag.err"
echo "HF exit status $?"
cat "$out/hf_$tag.jsonl"
tail -3 "$out/hf_$tag.err"

python3 - "$out/ours_$tag.jsonl" "$out/hf_$tag.jsonl" <<'EOF'
import json, sys
def last(path):
    try:
        rows = [json.loads(l) for l in open(path) if l.startswith("{")]
        return rows[-1] if rows else None
    except OSError:
        return None
ours, hf = last(sys.argv[1]), last(sys.argv[2])
if ours:
    print(f"prompt {ours['prompt']}, {ours['new_tokens']} new tokens; step graph: {ours.get('step_kernels')} kernels "
          f"for {ours.get('layers')} layers")
print(f"{'':22}{'prefill ms':>12}{'decode tok/s':>14}{'peak GB':>9}")
for name, r in (("peft (CUDA graph)", ours), ("HF generate + PEFT", hf)):
    if r:
        print(f"{name:22}{r['prefill_ms']:>12.2f}{r['decode_tok_s']:>14.1f}{r['peak_mem_gb']:>9.2f}")
    else:
        print(f"{name:22}{'(no result)':>12}")
if ours:
    print(f"bound: {ours['bytes_per_token_gb']:.2f} GB/token -> {ours['bound_tok_s_3tb']:.0f} tok/s at 3.0 TB/s "
          f"({100 * ours['frac_bound_3tb']:.0f}% reached), {ours['bound_tok_s_measured']:.0f} tok/s at the measured "
          f"{ours['read_bw_tb_s']:.2f} TB/s ({100 * ours['frac_bound_measured']:.0f}% reached)")
if ours and hf:
    print(f"ours / HF decode: {ours['decode_tok_s'] / hf['decode_tok_s']:.2f}x")
EOF
