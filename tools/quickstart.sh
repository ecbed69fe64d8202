#!/usr/bin/env bash
# The main job in one command: install, build, and run the identity fine-tune on the embedded
# default model (tiny Qwen2.5 architecture, real tokenizer, random weights; CPU only).
# Extra arguments go to identity_finetune (e.g. --num_train_epochs 5).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
tools/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPEFT_BUILD_TESTS=OFF >/dev/null
cmake --build build --target identity_finetune
exec build/bin/identity_finetune "$@"
