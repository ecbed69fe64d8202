"""The QLoRA parity fixture: HF transformers + PEFT training LoRA on tests/fixtures/tiny_public's
model whose seven projection weights per layer were replaced by their NF4 round trip
(nf4_reference.py: bf16 -> NF4 + double quant -> bf16, as bitsandbytes' QLoRA computes with).

QLoRA's forward is exactly LoRA on the dequantised weights, so this is the golden for our
Qwen2<Lora<>, Nf4Fp32, Cpu>. Compute is fp32 (the dequantised weights are bf16 values held in
fp32; embedding, norms, lm_head and biases stay the fixture's fp32), so the tolerances are the
fp32 parity ones; bf16 compute would add bf16 rounding noise on top of the quantisation.
Same adapter init, samples and hyperparameters as tiny_public (batch 1, AdamW, constant lr, clip
1.0, file order), the loop written out as in tiny_golden.py.

Usage: python3 make_qlora_fixture.py --out DIR [--fixtures tests/fixtures]
Writes DIR/qlora_tiny/{golden.json, adapter_trained/}."""
import argparse, json, os, sys
import torch
from transformers import Qwen2ForCausalLM
from peft import PeftModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nf4_reference import nf4_round_trip  # noqa: E402

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--fixtures", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                       "tests", "fixtures"))
    a = ap.parse_args()
    tiny = os.path.join(a.fixtures, "tiny_public")
    out = os.path.join(a.out, "qlora_tiny")
    os.makedirs(out, exist_ok=True)
    src = json.load(open(os.path.join(tiny, "golden.json")))

    m = Qwen2ForCausalLM.from_pretrained(os.path.join(tiny, "model"), torch_dtype=torch.float32)
    sums = {}
    with torch.no_grad():
        for name, mod in m.named_modules():
            if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in PROJECTIONS:
                deq = nf4_round_trip(mod.weight.data).float()
                mod.weight.copy_(deq)
                sums[name + ".weight"] = deq.double().sum().item()
    pm = PeftModel.from_pretrained(m, os.path.join(tiny, "adapter"), is_trainable=True)
    assert pm.peft_config["default"].lora_dropout == 0.0
    samples = [json.loads(line) for line in open(os.path.join(tiny, "tokens.jsonl")) if line.strip()]

    def loss_of(s):
        return pm(input_ids=torch.tensor([s["input_ids"]]), labels=torch.tensor([s["labels"]])).loss

    pm.eval()
    with torch.no_grad():
        fwd = [loss_of(s).item() for s in samples]
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=src["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    clip = src["max_grad_norm"]
    losses, gnorms = [], []
    for _ in range(src["epochs"]):
        for s in samples:
            loss = loss_of(s)
            loss.backward()
            g = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
            opt.step(); opt.zero_grad()
            losses.append(loss.item()); gnorms.append(g.item())
    pm.save_pretrained(os.path.join(out, "adapter_trained"))
    golden = dict(config=src["config"], lora_rank=src["lora_rank"], lora_alpha=src["lora_alpha"], lr=src["lr"],
                  epochs=src["epochs"], max_grad_norm=clip,
                  base="tiny_public/model with q,k,v,o,gate,up,down weights replaced by their NF4 round trip "
                       "(bf16, blocksize 64, double quant 256); fp32 compute",
                  optimizer=src["optimizer"], samples="tiny_public/tokens.jsonl", adapter_init="tiny_public/adapter",
                  forward_loss_before_training=fwd, train_loss_per_step=losses, grad_norm_per_step=gnorms,
                  dequantized_weight_sums=sums)
    json.dump(golden, open(os.path.join(out, "golden.json"), "w"), indent=1)
    print("qlora_tiny fwd[0]", fwd[0], "(tiny_public", src["forward_loss_before_training"][0], ") loss first/last",
          losses[0], losses[-1], "steps", len(losses))


if __name__ == "__main__":
    main()
