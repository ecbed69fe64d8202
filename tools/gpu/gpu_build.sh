# What every GPU check script shares, written once (sourced by tools/gpu/*_check.sh; they set
# `root`, `out` and `nvcc`): the set-up and summary rows, and the two builds they make. The GPU
# machine has no utf8proc / PCRE2 (the data loader's): PEFT_GPU_DEPS, when set, holds their
# headers (include/) and static libraries (lib/), copied from a development machine.
# PEFT_CUDNN_FRONTEND_DIR, when set, holds cudnn_frontend's headers: the builds then have cuDNN's
# fused attention (kernels/cuda/attention_cudnn.cuh) and link libcudnn.

# check_setup: the output folder, the run-time library path and test fixtures, an empty summary,
# and the device's name (also in $out/device.txt).
check_setup() {
  mkdir -p "$out"
  export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  export PEFT_FIXTURES_DIR="${PEFT_FIXTURES_DIR:-$root/tests/fixtures}"
  summary=()
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
}

# row NAME VALUE: a summary row, printed now and kept for the table the script prints last.
row() {
  summary+=("$(printf '%-44s %s' "$1" "$2")")
  echo "${summary[-1]}"
}

# build_cuda_tests DIR ARCHS JOBS [TARGET...]: tests/cuda configured for ARCHS (e.g. 90a,
# "80-virtual", "80;86;89;90a") and built, all of it or the named targets.
build_cuda_tests() {
  local dir=$1 archs=$2 jobs=$3
  shift 3
  local deps="${PEFT_GPU_DEPS:-}" flags=() targets=()
  [[ -n "$deps" ]] && flags=(-DCMAKE_CUDA_FLAGS="-I$deps/include" -DCMAKE_CXX_FLAGS="-I$deps/include"
                             -DCMAKE_CUDA_STANDARD_LIBRARIES="$deps/lib/libutf8proc.a $deps/lib/libpcre2-8.a")
  (($# > 0)) && targets=(--target "$@")
  [[ -n "${PEFT_CUDNN_FRONTEND_DIR:-}" ]] && flags+=(-DPEFT_CUDNN_FRONTEND_DIR="$PEFT_CUDNN_FRONTEND_DIR")
  cmake -S "$root/tests/cuda" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DPEFT_CUDA_ARCHS="$archs" -DPEFT_CUDA_NVCC_THREADS=0 "${flags[@]}" &&
    cmake --build "$dir" -j "$jobs" "${targets[@]}"
}

# build_cuda_bench SOURCE BINARY [TREE]: a one-translation-unit program (bench/*.cu) by nvcc
# directly, with cmake/peftCuda.cmake's flags, for sm_90a; TREE (default: root) gives include/.
build_cuda_bench() {
  local src=$1 bin=$2 tree=${3:-$root} deps="${PEFT_GPU_DEPS:-}" inc=() libs=(-lutf8proc -lpcre2-8)
  [[ -n "$deps" ]] && inc=(-I"$deps/include") libs=("$deps/lib/libutf8proc.a" "$deps/lib/libpcre2-8.a")
  [[ -n "${PEFT_CUDNN_FRONTEND_DIR:-}" ]] && inc+=(-DPEFT_WITH_CUDNN=1 -DCUDNN_FRONTEND_SKIP_JSON_LIB=1
    -isystem "$PEFT_CUDNN_FRONTEND_DIR/include") libs+=(-lcudnn -lnvrtc -L"$(dirname "$nvcc")/../lib64/stubs" -lcuda)
  mkdir -p "$(dirname "$bin")"
  "$nvcc" -O3 -DNDEBUG -std=c++20 -arch=sm_90a --threads 0 --expt-relaxed-constexpr -lineinfo -DFMT_USE_CONSTEXPR=1 \
    -DFMT_HEADER_ONLY=1 -I"$tree/include" -I"$tree/examples" -I/usr/include/eigen3 "${inc[@]}" \
    -Xcudafe --diag_suppress=20012,--diag_suppress=20011,--diag_suppress=20014 "$src" -o "$bin" -lcublasLt \
    "${libs[@]}" -ldl
}

# bench LABEL ARGS...: one train_bench process ($bin/train_bench), its JSON lines kept under
# $out, a summary row per workload or breakdown; a failure counts in $failures.
bench() {
  local label=$1
  shift
  timeout 300 "$bin/train_bench" "$@" >"$out/bench_$label.jsonl" 2>"$out/bench_$label.err" ||
    { failures=$((failures + 1)); tail -5 "$out/bench_$label.err"; }
  while read -r l; do row "ours $label" "$l"; done < <(python3 - "$out/bench_$label.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): continue
    r = json.loads(l)
    if "workload" in r:
        print(f'{r["workload"]}: {r.get("tok_per_s")} tok/s, step {r.get("step_ms")} ms, arena peak '
              f'{r.get("arena_peak_gb")} GiB, device {r.get("device_used_gb")} GB, {r.get("error", "")}')
    elif "breakdown" in r:
        print(f'breakdown {r["breakdown"]}: eager {r["eager_step_ms"]} ms, idle {r["other_idle_ms"]}, {r["parts_ms"]}')
PY
  )
}

# test_rows TEST...: each CUDA test program in $bin run from the tree's root (5 minutes at most),
# its output under $out, a PASS/FAIL row each; a failure (or a missing program other than
# cuda_test_decode) counts in $failures.
test_rows() {
  local t s rc
  for t in "$@"; do
    s=$SECONDS
    if [[ ! -x "$bin/$t" ]]; then row "$t" "NOT BUILT"; [[ $t == cuda_test_decode ]] || failures=$((failures + 1)); continue; fi
    (cd "$root" && timeout 300 "$bin/$t" >"$out/$t.txt" 2>&1)
    rc=$?
    ((rc == 0)) || { failures=$((failures + 1)); grep -E "FAIL|rror" "$out/$t.txt" | head -20; }
    row "$t" "$( ((rc == 0)) && echo PASS || echo "FAIL(rc=$rc)") $((SECONDS - s)) s, $(tail -1 "$out/$t.txt")"
  done
}

# check_finish FINAL: the logs under $out packed into FINAL/logs.tgz (the device tool returns few
# files), the summary table printed last; exits 1 if anything counted in $failures.
check_finish() {
  mkdir -p "$1"
  tar -C "$out" -czf "$1/logs.tgz" .
  echo
  echo "== summary ($failures failures) =="
  printf '%s\n' "${summary[@]}"
  exit $((failures > 0))
}
