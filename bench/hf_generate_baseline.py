"""HF baseline for bench/decode_bench.cu: transformers' eager `generate` (no torch.compile, the
default dynamic cache) on a Qwen2.5-7B-shaped Qwen2ForCausalLM, random init in bf16 on cuda, with
a PEFT LoRA r=8 on all linear layers kept unmerged and lora_B nonzero (so the branch is computed),
batch 1, a 64-token prompt, 256 new tokens, greedy, min_new_tokens = max_new_tokens (no early
stop). Prints one JSON line with the same fields as decode_bench:
  prefill_ms     one forward of the prompt (use_cache=True), median of 5
  decode_tok_s   (new tokens - 1) / (generate time - prefill_ms), median of --reps
  peak_mem_gb    torch.cuda.max_memory_allocated
Usage: python3 bench/hf_generate_baseline.py [--prompt 64] [--new 256] [--reps 3]
(--reps 1 for long runs: 2048 new tokens take ~100 s a generate.)
"""
import argparse
import json
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model

from hf_peft_baseline import make  # (bench/ is on sys.path: the script's own folder)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    m = make("7b")  # the training baseline's 7B-shaped model, the same build
    m.generation_config.eos_token_id = None
    m.generation_config.pad_token_id = 0
    lc = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    m = get_peft_model(m, lc)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.02)
    m.eval()
    lora_dtype = next(p.dtype for n, p in m.named_parameters() if "lora_A" in n)

    ids = torch.randint(0, 150000, (1, args.prompt), device="cuda")
    mask = torch.ones_like(ids)
    gen = dict(max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False, pad_token_id=0)

    def timed(fn):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, out

    with torch.no_grad():
        m.generate(input_ids=ids, attention_mask=mask, **dict(gen, max_new_tokens=16, min_new_tokens=16))  # warm-up
        prefill = [timed(lambda: m(input_ids=ids, attention_mask=mask, use_cache=True))[0] for _ in range(5)]
        runs = [timed(lambda: m.generate(input_ids=ids, attention_mask=mask, **gen)) for _ in range(args.reps)]
    total = statistics.median(t for t, _ in runs)
    new = runs[0][1].shape[1] - args.prompt
    pre = statistics.median(prefill)
    print(json.dumps(dict(bench="decode_hf", model="Qwen2.5-7B shape", lora="r8 all-linear unmerged (PEFT)",
                          lora_dtype=str(lora_dtype), attn=m.config._attn_implementation, prompt=args.prompt,
                          new_tokens=int(new), prefill_ms=round(pre * 1e3, 2),
                          decode_tok_s=round((new - 1) / (total - pre), 1),
                          ms_per_token=round((total - pre) / (new - 1) * 1e3, 3),
                          peak_mem_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                          torch=torch.__version__, device=torch.cuda.get_device_name())), flush=True)


if __name__ == "__main__":
    main()
