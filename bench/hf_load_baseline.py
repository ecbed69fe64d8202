#!/usr/bin/env python3
"""The HF side of the checkpoint-loading benchmark (bench/load_bench.cu is ours).

Why: the number to beat is what the reference stack pays to get the same sharded bf16 checkpoint
onto the GPU. Times, on the files load_bench wrote (page cache already warm from it):
  - safetensors.torch.load_file(shard, device="cuda") over every shard, all tensors kept on the
    GPU until the pass ends (the way a model load holds them); best and median of --reps passes
    after one warm-up pass (CUDA context, allocator);
  - with --transformers, AutoModelForCausalLM.from_pretrained(dir, dtype=bfloat16,
    device_map="cuda") once (model construction included: what a training script pays).
GB/s = the shards' tensor bytes (the index's total_size) / seconds. One JSON line each.
"""
import argparse
import json
import os
import statistics
import time

import torch
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/peft-7b-random")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--transformers", action="store_true")
    args = ap.parse_args()

    with open(os.path.join(args.dir, "model.safetensors.index.json")) as f:
        index = json.load(f)
    total = index["metadata"]["total_size"]
    shards = [os.path.join(args.dir, s) for s in sorted(set(index["weight_map"].values()))]
    out = {"workload": "load_7b_hf", "device": torch.cuda.get_device_name(0), "dir": args.dir,
           "checkpoint_gb": round(total / 1e9, 3), "shards": len(shards),
           "torch": torch.__version__}

    def one_pass():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        tensors = [load_file(s, device="cuda") for s in shards]
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        n = sum(t.numel() * t.element_size() for d in tensors for t in d.values())
        del tensors
        torch.cuda.empty_cache()
        return dt, n

    first, loaded = one_pass()
    assert loaded == total, f"loaded {loaded} bytes, index says {total}"
    times = [one_pass()[0] for _ in range(args.reps)]
    out.update({"safetensors_first_s": round(first, 3), "safetensors_reps": args.reps,
                "safetensors_best_s": round(min(times), 3),
                "safetensors_best_gbps": round(total / min(times) / 1e9, 2),
                "safetensors_median_gbps": round(total / statistics.median(times) / 1e9, 2)})

    print(json.dumps(out), flush=True)  # first, so a cut-short transformers load loses nothing

    if args.transformers:
        out = {"workload": "load_7b_hf_transformers", "device": out["device"], "checkpoint_gb": out["checkpoint_gb"]}
        try:
            import transformers
            from transformers import AutoModelForCausalLM
            out["transformers"] = transformers.__version__
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model = AutoModelForCausalLM.from_pretrained(args.dir, dtype=torch.bfloat16, device_map="cuda")
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            out.update({"transformers_s": round(dt, 3), "transformers_gbps": round(total / dt / 1e9, 2)})
            del model
        except Exception as e:  # report, do not lose the safetensors numbers
            out["transformers_error"] = f"{type(e).__name__}: {e}"[:300]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
