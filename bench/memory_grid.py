"""Issue 15's "will it fit" table from one GPU call: train_bench's grid_* lines (ours, bf16 and NF4,
planned and measured) beside bench/hf_peft_baseline.py's grid_* lines (HF transformers + PEFT, bf16
only: no bitsandbytes on the GPU machine). Markdown on stdout; GB = 10^9 bytes throughout (the
arena peak is torch's max_memory_allocated counterpart, "device in use" adds the CUDA context).
    python3 bench/memory_grid.py OURS.jsonl [HF.jsonl]"""
import sys

from bench_rows import load

def gb(v): return "-" if v is None else "{:.2f}".format(v / 1e9)
def num(v): return "-" if v is None else "{:,.0f}".format(v)

def main():
    ours = load(sys.argv[1], "grid_")
    hf = load(sys.argv[2], "grid_") if len(sys.argv) > 2 else {}
    print("| model | base | seq | planned arena GB | measured arena peak GB | device in use GB | host (pinned) GB "
          "| tokens/s | HF bf16 peak GB | HF bf16 tokens/s | ours/HF tokens/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in ["0.5b", "7b", "14b", "32b"]:
        for base in ["bf16", "nf4"]:
            for seq in [512, 2048]:
                name = f"grid_{model}_{base}_{seq}"
                o, h = ours.get(name, {}), hf.get(f"grid_{model}_bf16_{seq}", {})
                if not o and not h: continue
                err = o.get("error") or h.get("error")
                ratio = "-" if not o.get("tok_per_s") or not h.get("tok_per_s") else "{:.2f}x".format(o["tok_per_s"] / h["tok_per_s"])
                print(f"| Qwen2.5-{model.upper()} | {base.upper() if base == 'nf4' else base} | {seq} | {gb(o.get('planned_bytes'))} "
                      f"| {gb(o.get('arena_peak_bytes'))} | {gb(o.get('device_used_bytes'))} | {gb(o.get('host_embedding_bytes'))} "
                      f"| {num(o.get('tok_per_s'))} | {gb(h.get('peak_bytes'))} | {num(h.get('tok_per_s'))} | {ratio} |"
                      + (f" error: {err}" if err else ""))

if __name__ == "__main__":
    main()
