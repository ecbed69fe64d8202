#!/usr/bin/env python3
"""Writes a Qwen2.5-7B-shaped checkpoint of all-zero bf16 weights in about a second: one
model.safetensors whose 15.2 GB of data is a sparse hole (header written, file extended), plus
config.json. Why: a memory measurement needs the real shapes and tensor names, not the values,
and bench/load_bench.cu's random checkpoint takes ~45 s of device time to write. Zero weights
train to finite numbers (RMSNorm of a zero row is zero, the loss is ln(vocab)); do not time
anything on them (zeros can run faster than real data).
    tools/gpu/sparse_7b_checkpoint.py DIR
"""
import json
import os
import sys

H, I, L, HEADS, KV, V = 3584, 18944, 28, 28, 4, 152064  # Qwen2.5-7B (models/presets.hpp)
D = H // HEADS


def tensors():
    yield "model.embed_tokens.weight", [V, H]
    for i in range(L):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", [H]
        yield p + "post_attention_layernorm.weight", [H]
        for name, out, inp, bias in (("q_proj", H, H, True), ("k_proj", KV * D, H, True), ("v_proj", KV * D, H, True),
                                     ("o_proj", H, H, False)):
            yield p + f"self_attn.{name}.weight", [out, inp]
            if bias:
                yield p + f"self_attn.{name}.bias", [out]
        for name, out, inp in (("gate_proj", I, H), ("up_proj", I, H), ("down_proj", H, I)):
            yield p + f"mlp.{name}.weight", [out, inp]
    yield "model.norm.weight", [H]
    yield "lm_head.weight", [V, H]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors():
        n = 2
        for s in shape:
            n *= s
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        f.truncate(8 + len(h) + offset)
    config = {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
              "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": H, "initializer_range": 0.02,
              "intermediate_size": I, "max_position_embeddings": 32768, "max_window_layers": L, "model_type": "qwen2",
              "num_attention_heads": HEADS, "num_hidden_layers": L, "num_key_value_heads": KV, "rms_norm_eps": 1e-6,
              "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
              "use_cache": True, "use_sliding_window": False, "vocab_size": V}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"sparse_7b_checkpoint: {out}: {len(header) - 1} tensors, {offset / 1e9:.2f} GB of zero bf16")


if __name__ == "__main__":
    main()
