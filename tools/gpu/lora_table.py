"""One row per (LoRA kernel set, rank) from train_bench's JSON lines (tools/gpu/lora_check.sh):
the graph-replayed step and the instrumented eager step's parts (--breakdown).
    python3 tools/gpu/lora_table.py bench_kernels.jsonl bench_rank64.jsonl
"""
import json
import sys

NAN = float("nan")
runs = {}
for path in sys.argv[1:]:
    for line in open(path):
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        if "tok_per_s" in d:
            runs.setdefault((d["lora_kernels"], d["lora_rank"]), {}).update(d)
            last = (d["lora_kernels"], d["lora_rank"])
        elif "breakdown" in d:  # follows its run's line
            runs[last]["bd"] = d

print(f"{'lora kernels':<12} {'rank':>4} {'tok/s':>9} {'step ms':>8} {'eager ms':>9} {'LoRA':>7} {'base':>7} "
      f"{'attn':>7} {'elem':>7} {'lm+CE':>7} {'optim':>7} {'idle':>7}")
for (kernels, rank), d in runs.items():
    bd = d.get("bd", {})
    parts = bd.get("parts_ms", {})

    def part(prefix):
        return next((v for name, v in parts.items() if name.startswith(prefix)), NAN)

    print(f"{kernels:<12} {rank:>4} {d.get('tok_per_s', NAN):>9.1f} {d.get('step_ms', NAN):>8.2f} "
          f"{bd.get('eager_step_ms', NAN):>9.2f} {part('LoRA'):>7.2f} {part('base'):>7.2f} {part('attention'):>7.2f} "
          f"{part('elementwise'):>7.2f} {part('lm_head'):>7.2f} {part('optimizer'):>7.2f} "
          f"{bd.get('other_idle_ms', NAN):>7.2f}")
