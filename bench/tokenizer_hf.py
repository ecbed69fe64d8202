#!/usr/bin/env python3
"""HF tokenizers' single-threaded encode throughput on the corpus bench/tokenizer_bench.cpp reads,
printed the same way (first pass, best later pass, FNV-1a hash of all ids), for a side-by-side
comparison on one machine. Needs `tokenizers` (present on the GPU machine).

    python3 tokenizer_hf.py TOKENIZER_JSON CORPUS_JSON... [--repeats N] [--dump-ids OUT.jsonl]

--dump-ids writes {"text", "ids"} per text, for a full-corpus parity check of our tokenizer.
"""
import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # single-threaded, like our bench (set before import)
os.environ["RAYON_NUM_THREADS"] = "1"

import json
import sys
import time

from tokenizers import Tokenizer
import tokenizers


def load_texts(path):
    texts = []
    for record in json.load(open(path, encoding="utf-8")):
        if isinstance(record, str):
            texts.append(record)
        elif isinstance(record, dict):
            texts += [record[f] for f in ("instruction", "input", "output") if record.get(f)]
    return texts


def fnv1a(ids, h=1469598103934665603):
    for i in ids:
        h = ((h ^ i) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    args = sys.argv[1:]
    repeats, dump = 5, None
    if "--repeats" in args:
        k = args.index("--repeats")
        repeats = int(args[k + 1])
        del args[k:k + 2]
    if "--dump-ids" in args:
        k = args.index("--dump-ids")
        dump = args[k + 1]
        del args[k:k + 2]
    start = time.perf_counter()
    tok = Tokenizer.from_file(args[0])
    load_s = time.perf_counter() - start
    texts = [t for path in args[1:] for t in load_texts(path)]
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"hf tokenizers {tokenizers.__version__} load {load_s * 1e3:.0f} ms; "
          f"corpus: {len(texts)} texts, {nbytes / 1e6:.2f} MB")

    def report(name, seconds, all_ids):
        ntok = sum(len(ids) for ids in all_ids)
        h = 1469598103934665603
        for ids in all_ids:
            h = fnv1a(ids, h)
        print(f"hf   {name:<26} {seconds * 1e3:8.1f} ms  {nbytes / seconds / 1e6:7.2f} MB/s  "
              f"{ntok / seconds:10.0f} tokens/s  ({ntok} tokens, hash {h:016x})")

    def encode_loop(tok):
        start = time.perf_counter()
        out = [tok.encode(t, add_special_tokens=False).ids for t in texts]
        return time.perf_counter() - start, out

    def encode_batch(tok):
        start = time.perf_counter()
        out = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        return time.perf_counter() - start, out

    for name, run in [("encode loop", encode_loop), ("encode_batch (1 thread)", encode_batch)]:
        tok = Tokenizer.from_file(args[0])  # a fresh one, so the first pass starts with an empty cache
        first_s, ids = run(tok)
        report(name + ", first", first_s, ids)
        best_s = min(run(tok)[0] for _ in range(repeats))
        report(name + ", best later", best_s, ids)
    if dump:
        with open(dump, "w", encoding="utf-8") as f:
            for t, i in zip(texts, ids):
                f.write(json.dumps({"text": t, "ids": i}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
