#!/usr/bin/env bash
# Tokenizer encode throughput, ours against HF tokenizers, one core each, on the same corpus in one
# run (issue 3's speed check). Run on the GPU machine (it has `tokenizers`) from the repository
# root, with a static build of bench/tokenizer_bench.cpp carried over:
#   g++ -std=c++20 -O2 -march=x86-64-v3 -DNDEBUG -DFMT_HEADER_ONLY -Iinclude bench/tokenizer_bench.cpp \
#       -o build-tokbench/tokenizer_bench -static -l:libpcre2-8.a -l:libutf8proc.a
#   cp ../shared/data/alpaca_gpt4_{zh_1000,en_999}.json build-tokbench/
#   (device run, carry build-tokbench and assets/tokenizer) PEFT_BENCH_DATA=build-tokbench bash bench/run_tokenizer_bench.sh
# Corpus: the alpaca-gpt4 zh and en samples in ../shared/data (4,549 texts, 1.35 MB). Equal id
# hashes on both lines prove equal output.
set -euo pipefail
tok=assets/tokenizer/qwen2.5/tokenizer.json
data="${PEFT_BENCH_DATA:-../shared/data}"   # the device copy carries them in build-tokbench/
corpus=("$data/alpaca_gpt4_zh_1000.json" "$data/alpaca_gpt4_en_999.json")
echo "device: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "date: $(date -u +%F); python tokenizers $(python3 -c 'import tokenizers; print(tokenizers.__version__)')"
taskset -c 2 build-tokbench/tokenizer_bench "$tok" "${corpus[@]}" --repeats 5
taskset -c 2 python3 bench/tokenizer_hf.py "$tok" "${corpus[@]}" --repeats 5
