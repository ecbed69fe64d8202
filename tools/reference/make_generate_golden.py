"""Generation goldens from the reference stack (HF transformers + PEFT), for tests/test_generate.cpp
and tests/cli/chat_tests.cmake, and the check that transformers loads what our merge_lora writes.

Two steps, the first runs anywhere (plain Python), the second on the GPU machine:
  python3 make_generate_golden.py tokenizer ASSETS/tokenizer/qwen2.5/tokenizer.json OUT_DIR
      a 512-id byte-level BPE tokenizer.json for the tiny fixtures (vocab 512): the 256 bytes,
      the first Qwen2.5 merges that fit, and <|endoftext|> <|im_start|> <|im_end|> at 509..511,
      with Qwen2.5's normalizer, pre-tokenizer and decoder, so ChatML text runs on tiny models.
  OUT=dir python3 make_generate_golden.py golden FIXTURES_DIR [MERGED_DIR]
      $OUT/greedy_golden.jsonl   HF generate, greedy, token ids in and out (do_sample=False,
                                 no eos unless stated, max_new_tokens as stated), adapters
                                 unmerged; a repetition-penalty case too (a processor HF
                                 applies in greedy mode)
      $OUT/processed_golden.jsonl  HF's logits processors (penalty 1.05, temperature 0.7, top-k 20,
                                 top-p 0.8) on the first step's logits: surviving ids and values
      $OUT/chat_golden.jsonl     text in, text out: the ChatML prompt our chat renders, HF
                                 tokenizers + greedy generate on tiny_public + adapter_trained
      $OUT/merge_check.json      with MERGED_DIR (our merge_lora of tiny_public + adapter_trained):
                                 transformers loads it; max |logits - PEFT unmerged logits|
Runs on the CPU in fp32 (torch.use_deterministic_algorithms) so the ids are exact."""
import json, os, sys

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
CHAT_QUERIES = ["hello", "who are you?", "你是谁?", "Tell me a story about a cat."]


def bytes_to_unicode():  # GPT-2's byte-level alphabet
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def make_tokenizer(qwen_json, out_dir):
    q = json.load(open(qwen_json, encoding="utf-8"))
    alphabet = bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    merges = []
    for m in q["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b not in vocab:
            vocab[a + b] = len(vocab); merges.append([a, b])
        if len(vocab) == 509:
            break
    t = {k: q[k] for k in ("version", "truncation", "padding", "normalizer", "pre_tokenizer", "post_processor", "decoder")}
    t["added_tokens"] = [dict(id=509 + i, content=s, single_word=False, lstrip=False, rstrip=False, normalized=False,
                              special=True) for i, s in enumerate(SPECIALS)]
    t["model"] = dict(q["model"], vocab=vocab, merges=merges)
    os.makedirs(out_dir, exist_ok=True)
    json.dump(t, open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    print("tokenizer:", len(vocab), "vocab +", len(SPECIALS), "specials,", len(merges), "merges")


def golden(fixtures, merged=None):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    from transformers.generation.logits_process import LogitsProcessorList, RepetitionPenaltyLogitsProcessor, \
        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
    from peft import PeftModel
    torch.use_deterministic_algorithms(True)
    out = os.environ.get("OUT", ".")

    def load(fixture, adapter):
        m = AutoModelForCausalLM.from_pretrained(os.path.join(fixtures, fixture, "model"), dtype=torch.float32).eval()
        return PeftModel.from_pretrained(m, os.path.join(fixtures, fixture, adapter)).eval() if adapter else m

    def prompts(fixture):
        rows = [json.loads(l) for l in open(os.path.join(fixtures, fixture, "tokens.jsonl"))]
        return [rows[0]["input_ids"][:1], rows[1]["input_ids"][:5], rows[2]["input_ids"][:17], rows[3]["input_ids"][:33]]

    def section_greedy():
        with open(os.path.join(out, "greedy_golden.jsonl"), "w") as f:
            for fixture in ("tiny_public", "tied_1kv_ga4_cosine", "batch2_ga2_linear"):
                for adapter in ("", "adapter", "adapter_trained"):
                    m = load(fixture, adapter)
                    for i, p in enumerate(prompts(fixture)):
                        for penalty in ((1.0, 1.3) if i == 2 else (1.0,)):
                            with torch.no_grad():
                                g = m.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                               do_sample=False, max_new_tokens=20, repetition_penalty=penalty,
                                               eos_token_id=None, pad_token_id=0)
                            case = dict(id=f"{fixture}/{adapter or 'base'}/{i}/rp{penalty}", fixture=fixture, adapter=adapter,
                                        max_new_tokens=20, repetition_penalty=penalty, prompt=p, output=g[0, len(p):].tolist())
                            f.write(json.dumps(case) + "\n")

    def section_processed():
        with open(os.path.join(out, "processed_golden.jsonl"), "w") as f:
            m = load("tiny_public", "adapter_trained")
            procs = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.05), TemperatureLogitsWarper(0.7),
                                         TopKLogitsWarper(20), TopPLogitsWarper(0.8)])
            for i, p in enumerate(prompts("tiny_public")):
                ids = torch.tensor([p])
                with torch.no_grad():
                    scores = procs(ids, m(input_ids=ids).logits[:, -1, :].float())[0]
                keep = torch.isfinite(scores).nonzero().flatten().tolist()
                f.write(json.dumps(dict(id=f"tiny_public/adapter_trained/{i}", prompt=p, temperature=0.7, top_k=20,
                                        top_p=0.8, repetition_penalty=1.05, kept=keep,
                                        values=[scores[k].item() for k in keep])) + "\n")

    def section_chat():
        tok = Tokenizer.from_file(os.path.join(fixtures, "generate", "tiny_tokenizer", "tokenizer.json"))
        with open(os.path.join(out, "chat_golden.jsonl"), "w", encoding="utf-8") as f:
            m = load("tiny_public", "adapter_trained")
            stops = [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]
            for q in CHAT_QUERIES:
                text = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
                ids = tok.encode(text, add_special_tokens=False).ids
                with torch.no_grad():
                    g = m.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   do_sample=False, max_new_tokens=16, eos_token_id=stops, pad_token_id=stops[1])
                new = g[0, len(ids):].tolist()
                if new and new[-1] in stops:
                    new = new[:-1]
                f.write(json.dumps(dict(query=q, prompt_ids=ids, output=new,
                                        response=tok.decode(new, skip_special_tokens=False)), ensure_ascii=False) + "\n")

    def section_merge():
        ours = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
        ref = load("tiny_public", "adapter_trained")
        ids = torch.tensor([prompts("tiny_public")[3]])
        with torch.no_grad():
            a, b = ours(input_ids=ids).logits, ref(input_ids=ids).logits
            merged_ref = ref.merge_and_unload()
            c = merged_ref(input_ids=ids).logits
        sd_ours, sd_ref = ours.state_dict(), merged_ref.state_dict()
        wdiff = max((sd_ours[k] - sd_ref[k]).abs().max().item() for k in sd_ref)
        json.dump(dict(loaded_class=type(ours).__name__, max_abs_logit_diff_vs_unmerged=(a - b).abs().max().item(),
                       max_abs_logit_diff_vs_peft_merge=(a - c).abs().max().item(), max_abs_logit=b.abs().max().item(),
                       max_abs_weight_diff_vs_peft_merge=wdiff, same_keys=sorted(sd_ours) == sorted(sd_ref)),
                  open(os.path.join(out, "merge_check.json"), "w"), indent=1)
    # Each part on its own, so one failure still leaves the others' files.
    import traceback
    for part in (section_greedy, section_processed, section_chat) + ((section_merge,) if merged else ()):
        try:
            part(); print(part.__name__, "ok")
        except Exception:
            traceback.print_exc()
    print("done")


if __name__ == "__main__":
    if sys.argv[1] == "tokenizer":
        make_tokenizer(sys.argv[2], sys.argv[3])
    else:
        golden(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
