#!/usr/bin/env bash
# Packs a CUDA build's static programs into BUILD/gpu/bins.tar.xz for a device call (stripped and
# xz-compressed they take ~1 MB each instead of ~7; the call's carry limit is 64 MiB).
#   tools/gpu/pack_binaries.sh BUILD_DIR [program ...]   (default: every program in BUILD_DIR/bin
#                                                        and BUILD_DIR/tests/cuda)
set -euo pipefail
build=${1:?usage: pack_binaries.sh BUILD_DIR [program ...]}
shift
stage="$build/gpu/stage"
rm -rf "$stage" && mkdir -p "$stage"
if (($# == 0)); then
  progs=$(find "$build/bin" "$build/tests/cuda" -maxdepth 1 -type f -perm -u+x 2>/dev/null)
else
  progs=$(for p in "$@"; do find "$build" -name "$p" -type f -perm -u+x | head -1; done)
fi
for p in $progs; do cp "$p" "$stage/" && strip "$stage/$(basename "$p")"; done
tar -cJf "$build/gpu/bins.tar.xz" -C "$stage" .
rm -rf "$stage"
ls -la "$build/gpu/bins.tar.xz"
