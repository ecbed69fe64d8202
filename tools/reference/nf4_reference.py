"""NF4 + double quantisation written in torch from bitsandbytes' published algorithm, the oracle
for include/peft/quant/nf4.hpp (bitsandbytes itself is not installed where this runs).

What it follows, and where from (bitsandbytes functional.py and csrc/kernels.cu):
  - quantize_4bit(quant_type="nf4", blocksize=64): per block of 64 along the flattened tensor,
    absmax = max|x| (fp32); scaled = x * (1.0f / absmax) in fp32; the code is dQuantizeNF4's
    decision tree (strict > against 15 float thresholds: the count of thresholds exceeded, NaN
    -> 0); two codes per byte, element 2i in the high nibble; the last block padded with zeros.
  - compress_statistics=True: offset = mean(absmax); quantize_blockwise(absmax - offset,
    blocksize=256) with create_dynamic_map(signed=True): absmax2 = max|.| per 256, scaled by
    1/absmax2, then dQuantize<0>'s 7-step binary search and midpoint rounding.
  - dequantize_4bit: absmax = code[q8] * absmax2 (fp32), + offset (fp32); w = bf16(nf4[q4] * absmax).
The one deliberate choice: bitsandbytes' offset is torch's fp32 absmax.mean(), whose last bit
depends on the device's reduction order; here (and in the C++) it is the float64 mean rounded
once to fp32. torch's fp32 mean is recorded beside it ("offset_torch_fp32_mean").

Usage: python3 nf4_reference.py --out DIR   (writes DIR/golden.json, numbers as hex bit patterns,
and DIR/dynamic_map.inc, the map as the C++ table nf4.hpp pins)"""
import argparse, json, os
import torch

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]
NF4_THRESHOLDS = [-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
                  -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
                  0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
                  0.5016634166240692, 0.6427869200706482, 0.8614784181118011]
BLOCK, ABSMAX_BLOCK = 64, 256


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """bitsandbytes.functional.create_dynamic_map, as published."""
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    if additional_items > 0:
        boundaries = torch.linspace(0.1, 1, additional_items + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data += [0] * (256 - len(data))
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def quantize_nf4_values(scaled):
    thr = torch.tensor(NF4_THRESHOLDS, dtype=torch.float32)
    return (scaled.unsqueeze(-1) > thr).sum(-1).to(torch.uint8)


def quantize_dynamic_values(code, x):
    """dQuantize<STOCHASTIC=0> for every element of x (fp32), vectorised."""
    n = x.numel()
    pivot = torch.full((n,), 127, dtype=torch.long)
    upper_pivot = torch.full((n,), 255, dtype=torch.long)
    lower_pivot = torch.zeros(n, dtype=torch.long)
    lower = torch.full((n,), -1.0); upper = torch.full((n,), 1.0)
    val = code[pivot]
    i = 64
    while i > 0:
        gt = x > val
        lower_pivot = torch.where(gt, pivot, lower_pivot); lower = torch.where(gt, val, lower)
        upper_pivot = torch.where(gt, upper_pivot, pivot); upper = torch.where(gt, upper, val)
        pivot = torch.where(gt, pivot + i, pivot - i)
        val = code[pivot]
        i >>= 1
    upper = torch.where(upper_pivot == 255, code[255], upper)
    lower = torch.where(lower_pivot == 0, code[0], lower)
    gt = x > val
    up_mid = (upper + val) * 0.5
    lo_mid = (lower + val) * 0.5
    out = torch.where(gt, torch.where(x > up_mid, upper_pivot, pivot), torch.where(x < lo_mid, lower_pivot, pivot))
    return out.to(torch.uint8)


def quantize_nf4(w):
    """w: any-shape bf16 tensor -> dict of the stored state (bitsandbytes' QuantState, nested)."""
    flat = w.reshape(-1).float()
    n = flat.numel()
    blocks = (n + BLOCK - 1) // BLOCK
    padded = torch.zeros(blocks * BLOCK); padded[:n] = flat
    pb = padded.view(blocks, BLOCK)
    absmax = pb.abs().amax(1)
    inv = 1.0 / absmax  # fp32; inf for an all-zero block, and 0 * inf = NaN -> code 0, as on the GPU
    q = quantize_nf4_values(pb * inv.unsqueeze(1)).reshape(-1)
    keep = n + (n % 2)  # the kernel stores ceil(n/2) bytes; an odd tail's partner is a padding zero
    q = q[:keep]
    packed = (q[0::2] << 4) | q[1::2]
    offset = absmax.double().mean().float()
    centred = absmax - offset
    groups = (blocks + ABSMAX_BLOCK - 1) // ABSMAX_BLOCK
    code = create_dynamic_map()
    absmax_code = torch.empty(blocks, dtype=torch.uint8)
    absmax_scale = torch.empty(groups)
    for g in range(groups):
        part = centred[g * ABSMAX_BLOCK:(g + 1) * ABSMAX_BLOCK]
        m = part.abs().max()
        absmax_scale[g] = m
        absmax_code[g * ABSMAX_BLOCK:(g + 1) * ABSMAX_BLOCK] = quantize_dynamic_values(code, part * (1.0 / m))
    return dict(numel=n, shape=list(w.shape), packed=packed, absmax=absmax, offset=offset,
                offset_torch_fp32_mean=absmax.mean(), absmax_code=absmax_code, absmax_scale=absmax_scale)


def dequantize_nf4(s):
    code = create_dynamic_map()
    scale = s["absmax_scale"].repeat_interleave(ABSMAX_BLOCK)[:s["absmax_code"].numel()]
    absmax = code[s["absmax_code"].long()] * scale  # fp32 product, rounded
    absmax = absmax + s["offset"]                   # then the offset: two roundings
    q = torch.stack([s["packed"] >> 4, s["packed"] & 0x0F], 1).reshape(-1)[:s["numel"]].long()
    nf4 = torch.tensor(NF4, dtype=torch.float32)
    out = nf4[q] * absmax.repeat_interleave(BLOCK)[:s["numel"]]
    return out.to(torch.bfloat16).reshape(s["shape"]), absmax


def nf4_round_trip(w):
    """The bf16 weight PEFT's QLoRA computes with for the (bf16) weight w."""
    return dequantize_nf4(quantize_nf4(w.to(torch.bfloat16)))[0]


def hex_u8(t): return "".join(f"{v:02x}" for v in t.reshape(-1).to(torch.uint8).tolist())
def hex_f32(t): return [f"{v & 0xffffffff:08x}" for v in t.reshape(-1).float().view(torch.int32).tolist()]
def hex_bf16(t): return "".join(f"{v & 0xffff:04x}" for v in t.reshape(-1).to(torch.bfloat16).view(torch.int16).tolist())


def cases():
    g = torch.Generator().manual_seed(20260415)
    out = {}
    # A weight-like matrix of 264 blocks: two double-quant groups, the second partial.
    out["normal_96x176"] = (torch.randn(96, 176, generator=g) * 0.05).to(torch.bfloat16)
    # Odd element count: a partial last block and an odd tail nibble.
    out["odd_7x13"] = (torch.randn(7, 13, generator=g) * 3.0).to(torch.bfloat16)
    # An all-zero block, a block of tiny values, a block with one outlier, heavy tails.
    x = torch.randn(4, 64, generator=g)
    x[0].zero_(); x[1] *= 1e-30; x[2, 17] = 4000.0; x[3] = torch.randn(64, generator=g) ** 3
    out["edge_4x64"] = x.to(torch.bfloat16)
    # Values at the bf16 neighbours of every NF4 threshold (absmax 1 makes scaled == x).
    thr = torch.tensor(NF4_THRESHOLDS, dtype=torch.float32)
    bits = thr.to(torch.bfloat16).view(torch.int16)
    near = torch.cat([bits, bits + 1, bits - 1]).view(torch.bfloat16).float()
    near = torch.cat([near, torch.tensor([1.0, -1.0, 0.0])])
    out["thresholds_1x48"] = near.to(torch.bfloat16).reshape(1, -1)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    code = create_dynamic_map()
    with open(os.path.join(a.out, "dynamic_map.inc"), "w") as f:  # the table nf4.hpp pins
        words = [f"0x{h}u" for h in hex_f32(code)]
        f.write("\n".join("    " + ", ".join(words[i:i + 8]) + "," for i in range(0, 256, 8)) + "\n")
    golden = {"about": "tools/reference/nf4_reference.py: bitsandbytes NF4, blocksize 64, double quant 256; "
                       "hex bit patterns (f32 as 8 hex digits, bf16 4, bytes 2)",
              "torch_version": torch.__version__, "dynamic_map_f32": hex_f32(code), "cases": {}}
    for name, w in cases().items():
        s = quantize_nf4(w)
        deq, absmax_deq = dequantize_nf4(s)
        golden["cases"][name] = dict(
            shape=s["shape"], input_bf16=hex_bf16(w), packed=hex_u8(s["packed"]), absmax_f32=hex_f32(s["absmax"]),
            offset_f32=hex_f32(s["offset"])[0], offset_torch_fp32_mean_f32=hex_f32(s["offset_torch_fp32_mean"])[0],
            absmax_code=hex_u8(s["absmax_code"]), absmax_scale_f32=hex_f32(s["absmax_scale"]),
            absmax_dequantized_f32=hex_f32(absmax_deq), dequantized_bf16=hex_bf16(deq))
        print(name, "numel", s["numel"], "blocks", s["absmax"].numel(), "groups", s["absmax_scale"].numel(),
              "offset == torch fp32 mean:", bool(s["offset"] == s["offset_torch_fp32_mean"]))
    with open(os.path.join(a.out, "golden.json"), "w") as f:
        json.dump(golden, f, separators=(",", ":"))
    print("wrote", os.path.join(a.out, "golden.json"), os.path.getsize(os.path.join(a.out, "golden.json")), "bytes")


if __name__ == "__main__":
    main()
