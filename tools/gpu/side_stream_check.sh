#!/usr/bin/env bash
# The adapter's passes on a second stream beside the base GEMMs (issue #14, item 5;
# kernels/cuda/side_stream.cuh): tools/gpu/ab_check.sh with train_bench's --side-stream=0 and =1
# (the tests, the A/B rows, the breakdown and HF as that script says).
#   tools/gpu/side_stream_check.sh BIN_DIR [nohf] [TEST...]   (TEST "none": no tests)
set -uo pipefail
bin="${1:?usage: side_stream_check.sh BIN_DIR [nohf] [TEST...]}"
shift
export OUT="${OUT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build-side-stream/out}"
exec "$(dirname "${BASH_SOURCE[0]}")/ab_check.sh" "$bin" --side-stream=0 --side-stream=1 "$@"
