"""Reads a run's TensorBoard event files with TensorBoard's own reader and compares them with the
run's logging.jsonl: the check that `--report_to tensorboard` writes files TensorBoard accepts.
Run where the tensorboard package is installed (the GPU machine has 2.21):
    python3 tools/reference/check_tensorboard.py RUN_DIR
RUN_DIR is a run folder (output/vN-.../) holding logging.jsonl and runs/events.out.tfevents.*.
Prints every tag with its steps and values; exits non-zero when a logged number is missing from
the events, sits at another step, or differs beyond float32 rounding, or when the events hold a
scalar that logging.jsonl does not."""
import json
import math
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def tag_for(key):
    # HF TensorBoardCallback's rewrite: eval_* -> eval/*, everything else -> train/*.
    return "eval/" + key[len("eval_"):] if key.startswith("eval_") else "train/" + key


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_tensorboard.py RUN_DIR")
    run = sys.argv[1]
    runs = os.path.join(run, "runs")
    if not os.path.isdir(runs):
        sys.exit(f"{runs}: no such folder (was the run started with --report_to tensorboard?)")
    files = sorted(f for f in os.listdir(runs) if f.startswith("events.out.tfevents."))
    if not files:
        sys.exit(f"{runs}: no events.out.tfevents.* file")

    # Every event file of the folder (a resumed run adds one): TensorBoard's reader, per file.
    events = {}  # tag -> {step: value}
    for f in files:
        acc = EventAccumulator(os.path.join(runs, f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for s in acc.Scalars(tag):
                events.setdefault(tag, {})[s.step] = s.value
    for tag in sorted(events):
        pts = sorted(events[tag].items())
        shown = ", ".join(f"{st}:{v:.6g}" for st, v in pts[:8]) + (" ..." if len(pts) > 8 else "")
        print(f"{tag}: {len(pts)} points, steps {pts[0][0]}..{pts[-1][0]}: {shown}")

    logged = {}  # tag -> {step: value}
    with open(os.path.join(run, "logging.jsonl"), encoding="utf-8") as log:
        for line in log:
            if not line.strip():
                continue
            e = json.loads(line)
            for k, v in e.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    logged.setdefault(tag_for(k), {})[e["step"]] = float(v)

    problems = []
    compared = 0
    for tag, by_step in sorted(logged.items()):
        for step, v in sorted(by_step.items()):
            got = events.get(tag, {}).get(step)
            if got is None:
                problems.append(f"{tag} at step {step}: in logging.jsonl ({v}) but not in the events")
            elif not math.isclose(got, v, rel_tol=1e-6, abs_tol=1e-30):  # stored as float32
                problems.append(f"{tag} at step {step}: events {got}, logging.jsonl {v}")
            else:
                compared += 1
    for tag, by_step in sorted(events.items()):
        for step in sorted(by_step):
            if step not in logged.get(tag, {}):
                problems.append(f"{tag} at step {step}: in the events but not in logging.jsonl")
    for p in problems:
        print("MISMATCH", p)
    print(f"check_tensorboard: {len(files)} event file(s), {len(events)} tags, {compared} values equal to "
          f"logging.jsonl, {len(problems)} mismatches")
    sys.exit(1 if problems or compared == 0 else 0)


if __name__ == "__main__":
    main()
