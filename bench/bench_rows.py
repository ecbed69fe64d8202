"""The benchmarks' JSON lines (train_bench, hf_peft_baseline.py) read back by workload, for the
tables bench/run_gpu_bench.sh and bench/memory_grid.py print."""
import json


def load(path, prefix=""):
    """A benchmark's JSON lines by workload (those whose name starts with prefix); {} when absent."""
    rows = {}
    try:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                j = json.loads(line)
                if "workload" in j and str(j["workload"]).startswith(prefix): rows[j["workload"]] = j
    except FileNotFoundError:
        pass
    return rows
