#!/usr/bin/env python3
"""Golden files for the tokenizer tests, made with Hugging Face `tokenizers` (the reference).

    python3 tok_corpus.py TOKENIZER_JSON OUT_DIR [--qwen3]   # needs `pip install tokenizers`
    python3 tok_corpus.py --list                             # print the cases; needs nothing

TOKENIZER_JSON may be Qwen3's tokenizer.json (the four tokens Qwen3 added, ids >= 151665, are
dropped, giving Qwen2.5's tokenizer; --qwen3 keeps them) or Qwen2.5's own.
Writes OUT_DIR/tok_corpus_golden.jsonl ({"text", "ids", "decoded"} per line: encode with
add_special_tokens=False, decode with skip_special_tokens=False) and OUT_DIR/tok_decode_golden.jsonl
({"ids", "decoded"}: id sequences that stop or break inside UTF-8 characters, to pin down how
invalid bytes are replaced). The cases are tok_corpus_cases.json (hand-written) plus the
deterministic expansions below (NFD forms, whitespace runs, long words, seeded random mixes).
"""
import json
import os
import random
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
FIRST_QWEN3_ID = 151665


def generated_cases(seeds):
    cases = []
    # Decomposed (NFD) spellings of every seed NFC changes: the normalizer must recompose them.
    cases += [unicodedata.normalize("NFD", s) for s in seeds if unicodedata.normalize("NFD", s) != s]
    # Whitespace runs between, before and after words (the regex's \s+(?!\S) and \s*[\r\n]+ rules).
    for ws in [" ", "\t", "\n", "\r\n", " \n", "\n ", "\u3000", "\u00a0", "\r"]:
        for n in [1, 2, 3, 4, 5, 8, 16]:
            cases += ["word" + ws * n + "next", ws * n + "x", "x" + ws * n, ws * n]
    # Long pieces: the BPE merge loop's worst cases, and the piece cache's size limit.
    cases += ["a" * 300, "ab" * 200, "0123456789abcdef" * 16, "QmFzZTY0IGVuY29kZWQgc3RyaW5n" * 8,
              "!" * 120, "-" * 80, "=" * 64, "的" * 200, "😀" * 50, " " * 100, "\n" * 50, "x" * 2000,
              ".-" * 150, "a" * 999 + "b", "Ġ" * 10, "\u0301" * 20]
    rng = random.Random(20240315)
    cases.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(600)))
    cases.append("".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(300)))
    # Seeded random mixes of fragments that interact at their boundaries.
    fragments = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "'s", "'LL", "'t", "I'M", " ",
                 "  ", "\t", "\n", "\r\n", "\n\n", " \n", "1", "23", "456", "a", "B", "word", "Word", "中文",
                 "测试", "日本", "한국", "😀", "👍🏽", "👨‍👩‍👧", "é", "e\u0301", "Å", "ñ", "ß", ".", ",", "!?",
                 "...", "-", "_", "(", ")", "{", "}", "\"", "'", "$", "%", "\u3000", "\u00a0", "مرحبا",
                 "שלום", "สวัสดี", "नमस्ते", "∑", "²", "½", "\x00", "\x1b", "Ω", "ﬁ", "\u200b"]
    for _ in range(150):
        cases.append("".join(rng.choice(fragments) for _ in range(rng.randint(1, 40))))
    return cases


def all_cases():
    seeds = json.load(open(os.path.join(HERE, "tok_corpus_cases.json"), encoding="utf-8"))
    cases, seen = [], set()
    for s in seeds + generated_cases(seeds):
        if s not in seen:
            seen.add(s)
            cases.append(s)
    return cases


def decode_cases(tok):
    """Id sequences whose bytes are not valid UTF-8 on their own."""
    alphabet = bytes_to_unicode()
    byte_id = [tok.token_to_id(alphabet[b]) for b in range(256)]
    rng = random.Random(7)
    cases = []
    for text in ["你好", "😀👍🏽", "é", "한국어", "ab中c", "\u0800\uffff\U00010000\U0010ffff"]:
        ids = [byte_id[b] for b in text.encode("utf-8")]
        for cut in range(1, len(ids)):
            cases.append(ids[:cut])  # stops inside a character
            cases.append(ids[:cut - 1] + ids[cut:])  # a byte missing in the middle
        cases.append(ids[::-1])
    for lead in [0xC0, 0xC1, 0xC2, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF]:
        for second in [0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0x41]:
            cases.append([byte_id[lead], byte_id[second], byte_id[0x80], byte_id[0x41]])
    interesting = list(range(0x80, 0x100)) + [0x41, 0x20, 0x0A]
    for _ in range(120):
        cases.append([byte_id[rng.choice(interesting)] for _ in range(rng.randint(1, 12))])
    special = [tok.token_to_id(t) for t in ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]]
    for _ in range(20):
        cases.append([rng.choice(special + byte_id[0xE4:0xE6] + byte_id[0x80:0xC0]) for _ in range(8)])
    return cases


def bytes_to_unicode():
    """GPT-2's byte -> character table (byte-level BPE's alphabet)."""
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def main():
    if "--list" in sys.argv:
        for s in all_cases():
            print(json.dumps(s, ensure_ascii=False))
        return
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    from tokenizers import Tokenizer
    spec = json.load(open(args[0], encoding="utf-8"))
    if "--qwen3" not in sys.argv:
        spec["added_tokens"] = [a for a in spec["added_tokens"] if a["id"] < FIRST_QWEN3_ID]
    tok = Tokenizer.from_str(json.dumps(spec))
    os.makedirs(args[1], exist_ok=True)
    with open(os.path.join(args[1], "tok_corpus_golden.jsonl"), "w", encoding="utf-8") as f:
        for s in all_cases():
            ids = tok.encode(s, add_special_tokens=False).ids
            row = {"text": s, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(os.path.join(args[1], "tok_decode_golden.jsonl"), "w", encoding="utf-8") as f:
        for ids in decode_cases(tok):
            f.write(json.dumps({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)},
                               ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
