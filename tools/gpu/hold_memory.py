#!/usr/bin/env python3
"""Runs a command while this process holds GPU memory, so that the command sees a smaller card's
free memory on a bigger one (an 80 GB H100's 84.46 GB on a 141 GB H200): the memory plan is then
made at the same edge as there.

    hold_memory.py FREE_GB COMMAND [ARG ...]

Holds (free - FREE_GB) GB of device 0, prints what the command will see, runs it and exits with its
status. Where free is already FREE_GB or less, the command runs alone: this process then never
touches CUDA, whose context alone is ~0.5 GB (on an H100 that moved the plan one layer). Needs
nvidia-smi, and torch where there is something to hold (the GPU machine's python3 has it)."""
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
    free_in_context, _ = torch.cuda.mem_get_info()  # after torch's own context
    held = torch.empty(int(free_in_context - want), dtype=torch.uint8, device="cuda")
    free_now, _ = free_bytes()
    print(f"hold_memory: {total / 1e9:.2f} GB card, held {(free - free_now) / 1e9:.2f} GB, "
          f"{free_now / 1e9:.2f} GB free for: {' '.join(command)}", flush=True)
    rc = subprocess.call(command)
    del held
    return rc


if __name__ == "__main__":
    sys.exit(main())
