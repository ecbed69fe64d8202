#!/usr/bin/env python3
"""Runs a command while this process holds GPU memory, so that the command sees a smaller card's
free memory on a bigger one (an 80 GB H100's 84.46 GB on a 141 GB H200): the memory plan is then
made at the same edge as there.

    hold_memory.py FREE_GB COMMAND [ARG ...]

Holds (free - FREE_GB) GB of device 0 (nothing if free is already below), prints what the command
will see, runs it and exits with its status. Needs torch (the GPU machine's python3 has it)."""
import subprocess
import sys

import torch


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    want = float(sys.argv[1]) * 1e9
    torch.cuda.init()
    free, total = torch.cuda.mem_get_info()
    held = None
    if free > want:
        held = torch.empty(int(free - want), dtype=torch.uint8, device="cuda")
    free_now, _ = torch.cuda.mem_get_info()
    print(f"hold_memory: {total / 1e9:.2f} GB card, held {(free - free_now) / 1e9:.2f} GB, "
          f"{free_now / 1e9:.2f} GB free for: {' '.join(sys.argv[2:])}", flush=True)
    rc = subprocess.call(sys.argv[2:])
    del held
    return rc


if __name__ == "__main__":
    sys.exit(main())
