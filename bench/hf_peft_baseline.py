"""Anchor: HF transformers + PEFT LoRA training of a Qwen2.5-7B-shaped model
(random weights; speed and memory do not depend on the values).
Prints tokens/s and peak GPU memory for a few settings, one JSON line each.

Copied from ../shared/reference/hf_peft_baseline.py and extended for bench/run_gpu_bench.sh:
every line carries a "workload" key matching bench/train_bench.cu's names, the identity run
also reports load (model build + PEFT wrap) + train + save wall time, and workloads can be
picked on the command line (python3 hf_peft_baseline.py [seed] [only=7b_64,identity] [rank=64]: rank
other than 8 suffixes the workload names with _rN)."""
import json, time, sys, os, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from peft import LoraConfig, get_peft_model

RANK = 8  # LoRA rank of run()'s rows (rank=N on the command line)

# hidden, intermediate, layers, heads, kv heads (include/peft/models/presets.hpp's untied presets)
UNTIED = {"7b": (3584, 18944, 28, 28, 4), "14b": (5120, 13824, 48, 40, 8), "32b": (5120, 27648, 64, 40, 8)}

def make(cfg_name):
    if cfg_name in UNTIED:
        h, i, l, nh, kv = UNTIED[cfg_name]
        c = Qwen2Config(hidden_size=h, intermediate_size=i, num_hidden_layers=l,
                        num_attention_heads=nh, num_key_value_heads=kv, vocab_size=152064,
                        rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=32768,
                        tie_word_embeddings=False, torch_dtype="bfloat16")
    else:  # 0.5b
        c = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                        rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, torch_dtype="bfloat16")
    c._attn_implementation = os.environ.get("ATTN", "sdpa")
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        m = Qwen2ForCausalLM(c)
    torch.set_default_dtype(torch.float32)
    return m

def run(model_name, seq, bsz, gc, steps=6, warm=2, name=None):
    torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    m = make(model_name)
    if gc:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.enable_input_require_grads()
    lc = LoraConfig(r=RANK, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    m = get_peft_model(m, lc)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    vocab = m.config.vocab_size
    x = torch.randint(0, 150000, (bsz, seq), device="cuda")
    for i in range(steps + warm):
        if i == warm:
            torch.cuda.synchronize(); t0 = time.time()
        out = m(input_ids=x, labels=x)
        out.loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(); dt = time.time() - t0
    tok = steps * bsz * seq
    if name is None:
        name = f"{model_name}_{seq}" + ("" if model_name != "7b" or seq == 64 else ("_recompute" if gc else "_keep"))
        if bsz == 2 and seq == 4096: name = "7b_nemo" + ("_recompute" if gc else "_keep")
        if RANK != 8: name += f"_r{RANK}"
    r = dict(workload=name, model=model_name, seq=seq, bsz=bsz, grad_ckpt=gc, attn=m.config._attn_implementation,
             lora_rank=RANK, tok_per_s=round(tok / dt, 1), step_ms=round(dt / steps * 1000, 1),
             peak_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2), peak_bytes=torch.cuda.max_memory_allocated())
    print(json.dumps(r), flush=True)
    del m, opt, out; torch.cuda.empty_cache()

def seed_job(samples=50, epochs=10, ga=16):
    """The seed's identity run: 50 short chat samples, 10 epochs, batch 1, grad accumulation 16."""
    import random; random.seed(0)
    torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize(); t_load = time.time()
    m = make("7b")
    m = get_peft_model(m, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.cuda.synchronize(); load_s = time.time() - t_load
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    data = [torch.randint(0, 150000, (1, random.randint(40, 80)), device="cuda") for _ in range(samples)]
    torch.cuda.synchronize(); t0 = time.time(); n = 0; tok = 0
    for ep in range(epochs):
        for x in data:
            (m(input_ids=x, labels=x).loss / ga).backward(); n += 1; tok += x.numel()
            if n % ga == 0: opt.step(); opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(); dt = time.time() - t0
    import tempfile, shutil
    d = tempfile.mkdtemp(); t_save = time.time(); m.save_pretrained(d); save_s = time.time() - t_save; shutil.rmtree(d)
    print(json.dumps(dict(workload="identity", job="seed identity run 50x10 GA16", micro_steps=n, tokens=tok, train_s=round(dt, 1),
                          init_s=round(load_s, 2), save_s=round(save_s, 3), total_s=round(load_s + dt + save_s, 1),
                          step_ms=round(dt / (n / ga) * 1000, 1),
                          tok_per_s=round(tok / dt, 1), peak_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2))), flush=True)
    del m, opt; torch.cuda.empty_cache()

if __name__ == "__main__":
    import transformers, peft
    print(json.dumps(dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__, gpu=torch.cuda.get_device_name())), flush=True)
    only = next((a[5:].split(",") for a in sys.argv if a.startswith("only=")), None)
    RANK = next((int(a[5:]) for a in sys.argv if a.startswith("rank=")), RANK)
    def wanted(name): return only is None or name in only
    if "seed" in sys.argv and wanted("identity"): seed_job()
    # 7b_nemo_*: NeMo AutoModel's published setup, seq 4096 x micro-batch 2 (two equal-length rows:
    # no padding, so the same tokens as our packed micro-batch of two).
    names = ["7b_2048_recompute", "7b_2048_keep", "7b_4096_recompute", "7b_64", "0.5b_2048", "7b_nemo_recompute", "7b_nemo_keep"]
    for name, args in zip(names, [("7b", 2048, 1, True), ("7b", 2048, 1, False), ("7b", 4096, 1, True), ("7b", 64, 1, False), ("0.5b", 2048, 1, False), ("7b", 4096, 2, True), ("7b", 4096, 2, False)]):
        if not wanted(name): continue
        try: run(*args)
        except Exception as e: print(json.dumps(dict(args=args, error=str(e)[:300])), flush=True)
    # The "will it fit" grid's bf16 rows (train_bench's grid_*: gradient checkpointing, one sequence a
    # step); only when asked by name or by "grid" (no bitsandbytes here, so no NF4 rows).
    for model in ["0.5b", "7b", "14b", "32b"]:
        for seq in [512, 2048]:
            name = f"grid_{model}_bf16_{seq}"
            if only is None or (name not in only and "grid" not in only): continue
            big = model in ("14b", "32b")
            try: run(model, seq, 1, True, steps=3 if big else 6, warm=1 if big else 2, name=name)
            except Exception as e: print(json.dumps(dict(workload=name, error=str(e)[:300])), flush=True)
