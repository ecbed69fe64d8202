#!/usr/bin/env python3
"""Runs a command while this process holds GPU memory, so that the command sees about a smaller
card's free memory on a bigger one (an idle 80 GB H100 shows 85.02 GB free in nvidia-smi; a program
there sees 84.46 GB once its own CUDA context exists): the memory plan is then made near the same edge.

    hold_memory.py FREE_GB COMMAND [ARG ...]

Holds device 0's memory down to FREE_GB free as nvidia-smi counts it (this process's own CUDA
context, ~0.5 GB, included in what is held), prints what it held, runs the command and exits with
its status. Where free is already FREE_GB or less, the command runs alone and this process never
touches CUDA. Needs nvidia-smi, and torch where there is something to hold (the GPU machine's
python3 has it)."""
import subprocess
import sys


def free_bytes() -> tuple[float, float]:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free,memory.total", "--format=csv,noheader,nounits",
                          "--id=0"], check=True, capture_output=True, text=True).stdout
    free_mib, total_mib = (float(v) for v in out.strip().split(","))
    return free_mib * 2**20, total_mib * 2**20


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    want = float(sys.argv[1]) * 1e9
    free, total = free_bytes()
    command = sys.argv[2:]
    if free <= want + 0.1e9:
        print(f"hold_memory: {total / 1e9:.2f} GB card, {free / 1e9:.2f} GB free (nothing held) for: "
              f"{' '.join(command)}", flush=True)
        return subprocess.call(command)
    import torch
    torch.cuda.init()
    torch.empty(1, device="cuda")  # the context exists: nvidia-smi now counts it
    free_in_context, _ = free_bytes()
    held = torch.empty(max(int(free_in_context - want), 1), dtype=torch.uint8, device="cuda")
    free_now, _ = free_bytes()
    print(f"hold_memory: {total / 1e9:.2f} GB card, held {(free - free_now) / 1e9:.2f} GB, "
          f"{free_now / 1e9:.2f} GB free for: {' '.join(command)}", flush=True)
    rc = subprocess.call(command)
    del held
    return rc


if __name__ == "__main__":
    sys.exit(main())
