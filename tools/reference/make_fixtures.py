"""Parity fixtures from the reference stack (HF transformers + PEFT), run on the GPU machine.

Extends ../shared/reference/tiny_golden.py to the cases our trainer must match beyond the public
fixture: tied embeddings, one kv head, odd sizes, gradient accumulation > 1 with HF Trainer's
token-weighted loss, padded batches > 1, weight decay, warmup + cosine/linear schedules.
The training loop is written out (not HF Trainer) so each rule is visible:
  - loss of an optimizer step = sum of token CE over its micro-batches / total label tokens
    (what transformers' Trainer does with num_items_in_batch), logged as that same mean;
  - clip_grad_norm_ on the accumulated gradient, then AdamW, then the scheduler step;
  - lr schedule from transformers.get_scheduler with warmup = ceil(ratio * total_steps).
Usage: OUT=dir python3 make_fixtures.py [name ...]
Writes OUT/<name>/{model/, adapter/, tokens.jsonl, golden.json, adapter_trained/}."""
import json, math, os, random, sys
import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM, get_scheduler
from peft import LoraConfig, get_peft_model

def build(name, seed, cfg, r, alpha, n_samples, lr, epochs, clip, ga=1, bsz=1, sched="constant",
          warmup_ratio=0.0, weight_decay=0.0, min_len=6, max_len=48, full_labels_every=0):
    out = os.path.join(os.environ.get("OUT", "."), name)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed); random.seed(seed)
    c = Qwen2Config(**cfg, torch_dtype="float32")
    m = Qwen2ForCausalLM(c).float()
    with torch.no_grad():  # larger-than-default weights so the logits are not flat
        for n, p in m.named_parameters():
            if "norm" in n: p.copy_(1 + 0.1 * torch.randn_like(p))
            elif p.dim() == 1: p.copy_(0.05 * torch.randn_like(p))
            else: p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    m.save_pretrained(os.path.join(out, "model"), safe_serialization=True)
    lc = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    pm = get_peft_model(m, lc)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n: p.copy_(0.05 * torch.randn_like(p))
    pm.save_pretrained(os.path.join(out, "adapter"))
    V = cfg["vocab_size"]
    samples = []
    for i in range(n_samples):
        L = random.randint(min_len, max_len); P = random.randint(1, L - 2)
        ids = [random.randrange(V) for _ in range(L)]
        labels = list(ids) if (full_labels_every and i % full_labels_every == 0) else [-100] * P + ids[P:]
        samples.append({"input_ids": ids, "labels": labels})
    with open(os.path.join(out, "tokens.jsonl"), "w") as f:
        for s in samples: f.write(json.dumps(s) + "\n")

    def batch_ce_sum(batch):
        """Right-padded batch as HF's collator makes it; returns (sum of token CE, label tokens)."""
        T = max(len(s["input_ids"]) for s in batch)
        ids = torch.zeros(len(batch), T, dtype=torch.long); lab = torch.full((len(batch), T), -100)
        att = torch.zeros(len(batch), T, dtype=torch.long)
        for b, s in enumerate(batch):
            n = len(s["input_ids"]); ids[b, :n] = torch.tensor(s["input_ids"])
            lab[b, :n] = torch.tensor(s["labels"]); att[b, :n] = 1
        logits = pm(input_ids=ids, attention_mask=att).logits.float()
        tgt = lab[:, 1:].reshape(-1); lg = logits[:, :-1].reshape(-1, logits.shape[-1])
        return F.cross_entropy(lg, tgt, ignore_index=-100, reduction="sum"), int((tgt != -100).sum())

    pm.eval()
    with torch.no_grad():
        fwd = []
        for s in samples:
            l, n = batch_ce_sum([s]); fwd.append((l / n).item())
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    micro = [samples[i:i + bsz] for i in range(0, len(samples), bsz)]
    steps_per_epoch = math.ceil(len(micro) / ga)
    total = steps_per_epoch * epochs
    warm = math.ceil(total * warmup_ratio)
    sch = get_scheduler(sched, opt, num_warmup_steps=warm, num_training_steps=total)
    losses, gnorms, lrs = [], [], []
    for ep in range(epochs):
        for st in range(steps_per_epoch):
            group = micro[st * ga:(st + 1) * ga]
            n_items = sum(sum(1 for t in s["labels"][1:] if t != -100) for b in group for s in b)
            step_loss = 0.0
            lrs.append(sch.get_last_lr()[0])
            for b in group:
                l, _ = batch_ce_sum(b)
                (l / n_items).backward(); step_loss += (l / n_items).item()
            g = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
            opt.step(); sch.step(); opt.zero_grad()
            losses.append(step_loss); gnorms.append(g.item())
    pm.save_pretrained(os.path.join(out, "adapter_trained"))
    golden = dict(config=cfg, lora_rank=r, lora_alpha=alpha, lr=lr, epochs=epochs, max_grad_norm=clip,
                  gradient_accumulation_steps=ga, per_device_train_batch_size=bsz, lr_scheduler_type=sched,
                  warmup_ratio=warmup_ratio, warmup_steps=warm, weight_decay=weight_decay, total_steps=total,
                  optimizer="AdamW(betas=(0.9,0.999), eps=1e-8), file order, no shuffle, right-padded batches",
                  forward_loss_before_training=fwd, train_loss_per_step=losses, grad_norm_per_step=gnorms,
                  learning_rate_per_step=lrs)
    json.dump(golden, open(os.path.join(out, "golden.json"), "w"), indent=1)
    print(name, "fwd[0]", fwd[0], "loss first/last", losses[0], losses[-1], "steps", len(losses))

FIXTURES = {
    # tied embeddings, a single kv head, odd sizes, GA 4, warmup + cosine, weight decay, clip 0.5
    "tied_1kv_ga4_cosine": lambda: build("tied_1kv_ga4_cosine", 7, dict(hidden_size=48, intermediate_size=100,
        num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=1, vocab_size=301, rope_theta=10000.0,
        rms_norm_eps=1e-5, max_position_embeddings=128, tie_word_embeddings=True), r=4, alpha=16, n_samples=18,
        lr=2e-3, epochs=2, clip=0.5, ga=4, sched="cosine", warmup_ratio=0.2, weight_decay=0.01,
        full_labels_every=5),
    # padded batches of 2 with GA 2, warmup + linear decay, no clipping
    "batch2_ga2_linear": lambda: build("batch2_ga2_linear", 11, dict(hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, vocab_size=200, rope_theta=1e6,
        rms_norm_eps=1e-6, max_position_embeddings=128, tie_word_embeddings=False), r=8, alpha=8, n_samples=12,
        lr=1e-3, epochs=3, clip=0.0, ga=2, bsz=2, sched="linear", warmup_ratio=0.1),
}

if __name__ == "__main__":
    for n in (sys.argv[1:] or list(FIXTURES)): FIXTURES[n]()
