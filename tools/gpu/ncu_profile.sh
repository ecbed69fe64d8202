#!/usr/bin/env bash
# Hardware counters of a program's kernels through Nsight Compute (ncu, on the GPU machine's image;
# --clock-control none, as the device notes ask; graph nodes profiled one by one). Answers "bytes
# or latency" per kernel: duration, DRAM and L2 throughput against peak, occupancy, warp stall
# reasons; with NCU_SOURCE=1 also per-line stall samples of the first matching kernel (built with
# -lineinfo, as tools/gpu/gpu_build.sh builds). The report stays under $OUT; a table is printed.
#   [NCU_FILTER=regex] [NCU_SKIP=N] [NCU_COUNT=N] [NCU_SOURCE=1] [NCU_LABEL=name] \
#     tools/gpu/ncu_profile.sh PROGRAM [ARGS...]
# e.g. decode's first layer of the fourth token (tools/gpu/decode_ab.sh PROFILE=1):
#   NCU_FILTER='gemv_kernel|decode_attention_kernel' NCU_SKIP=423 NCU_COUNT=6 NCU_SOURCE=1 \
#     tools/gpu/ncu_profile.sh BIN/decode_bench --new 8
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
program="${1:?usage: ncu_profile.sh PROGRAM [ARGS...]}"
shift
out="${OUT:-$root/build-ncu/out}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
ncu="$(command -v ncu || find /opt/nvidia /usr/local/cuda/bin -name ncu -type f 2>/dev/null | head -1)"
[[ -x "$ncu" ]] || { echo "ncu not found"; exit 1; }
label="${NCU_LABEL:-$(basename "$program")}"
rep="$out/ncu_$label"
sections=(--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats
          --section SchedulerStats --section LaunchStats --section Occupancy)
[[ ${NCU_SOURCE:-0} == 1 ]] && sections+=(--section SourceCounters --import-source yes)
filter=()
[[ -n ${NCU_FILTER:-} ]] && filter=(-k "regex:$NCU_FILTER")
timeout 560 "$ncu" --clock-control none --graph-profiling node "${filter[@]}" \
  --launch-skip "${NCU_SKIP:-0}" --launch-count "${NCU_COUNT:-20}" "${sections[@]}" -f -o "$rep" \
  "$program" "$@" >"$rep.log" 2>&1
echo "ncu rc $? ($label)"
[[ -f "$rep.ncu-rep" ]] || { tail -5 "$rep.log"; exit 1; }
"$ncu" --import "$rep.ncu-rep" --page details --csv >"$rep.details.csv" 2>&1
python3 - "$rep.details.csv" <<'PY'
import csv, sys
want = {"Duration": "dur", "DRAM Throughput": "dram%", "L2 Cache Throughput": "l2%", "Compute (SM) Throughput": "sm%",
        "Achieved Occupancy": "occ%", "Registers Per Thread": "regs", "Grid Size": "grid",
        "Warp Cycles Per Issued Instruction": "cyc/issue", "L2 Hit Rate": "l2hit%"}
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:
    sys.exit("no details: " + open(sys.argv[1]).read()[:300])
head, rows = rows[0], rows[1:]
iid, k, name, unit, val = (head.index(c) for c in ("ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value"))
table = {}
for r in rows:
    if r[name] in want:
        table.setdefault((int(r[iid]), r[k].split("(")[0][-48:]), {})[want[r[name]]] = f"{r[val]}{'' if r[unit] in ('%', '') else ' ' + r[unit]}"
for (i, kern), v in sorted(table.items()):
    print(f"[{i:3}] {kern:48} " + "  ".join(f"{c} {v.get(c, '-')}" for c in want.values()))
PY
# Warp stall reasons, the five largest per kernel (WarpStateStats' per-reason samples).
"$ncu" --import "$rep.ncu-rep" --page raw --csv >"$rep.raw.csv" 2>&1
python3 - "$rep.raw.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if len(rows) < 3:
    sys.exit()
head = rows[0]
stall = [i for i, c in enumerate(head)
         if c.startswith("smsp__average_warps_issue_stalled_") and c.endswith("_per_issue_active.ratio")]
k = head.index("Kernel Name")
for r in rows[2:]:  # row 1 holds the units
    vals = []
    for i in stall:
        try:
            vals.append((float(r[i]), head[i][len("smsp__average_warps_issue_stalled_"):-len("_per_issue_active.ratio")]))
        except ValueError:
            pass
    top = sorted(vals, reverse=True)[:5]
    print(f"{r[k].split('(')[0][-40:]:40} stalls/issue: " + ", ".join(f"{n} {v:.2f}" for v, n in top))
PY
if [[ ${NCU_SOURCE:-0} == 1 ]]; then  # the hottest source lines (or SASS, without the sources) of the first kernel
  "$ncu" --import "$rep.ncu-rep" --page source --csv --print-source cuda --launch-count 1 \
    >"$rep.source.csv" 2>&1
  grep -q "Unable to open source file" "$rep.source.csv" &&
    "$ncu" --import "$rep.ncu-rep" --page source --csv --print-source sass --launch-count 1 >"$rep.source.csv" 2>&1
  python3 - "$rep.source.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
head = next((r for r in rows if "Source" in r or "Address" in r), None)
col = head and next((c for c in head if c.startswith("Warp Stall Sampling (All")), None)
if not col:
    sys.exit("no source samples: " + " | ".join(map(str, rows[:3]))[:300])
s, src = head.index(col), head.index("Source")
at = head.index("Address") if "Address" in head else None
body = [r for r in rows[rows.index(head) + 1:] if len(r) == len(head)]
num = lambda x: float(x) if x.replace(".", "", 1).isdigit() else 0.0
total = sum(num(r[s]) for r in body) or 1
for r in sorted(body, key=lambda r: -num(r[s]))[:25]:
    print(f"{100 * num(r[s]) / total:5.1f}%  {(r[at] + ' ') if at is not None else ''}{r[src].strip()[:110]}")
PY
fi
