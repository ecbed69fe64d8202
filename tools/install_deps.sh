#!/usr/bin/env bash
# Installs what peft needs on Debian 12 from Debian's own packages (and npm, for the tokenizer
# fetch), then fetches the Qwen2.5 tokenizer. Safe to run again: it installs only what is missing.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
packages=(build-essential cmake ninja-build pkg-config python3 libeigen3-dev libboost-program-options-dev
          libfmt-dev catch2 nlohmann-json3-dev libutf8proc-dev libpcre2-dev libcairo2-dev)
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
