#!/usr/bin/env bash
# The main job in one command: install, build, and run the identity fine-tune on the embedded
# default model (tiny Qwen2.5 architecture, real tokenizer, random weights; CPU only).
# Extra arguments go to identity_finetune (e.g. --num_train_epochs 5).
# It builds only identity_finetune, in build/, the folder tools/test.sh then builds the rest in: the
# configure step leaves the tests' switch alone, so the two commands run in either order.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
tools/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target identity_finetune
exec build/bin/identity_finetune "$@"
