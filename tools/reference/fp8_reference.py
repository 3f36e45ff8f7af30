#!/usr/bin/env python3
"""Reference for block-scaled FP8 checkpoints: torch's dequantization and transformers' logits.

Reads an FP8 checkpoint written by `ultraserve make-checkpoint --dtype fp8` (DeepSeek-V3's layout:
`X.weight` F8_E4M3 and `X.weight_scale_inv` F32 [ceil(rows/B0), ceil(cols/B1)] for config.json's
quantization_config.weight_block_size [B0, B1]) and writes a small safetensors fixture:
  <tensor name>   F32 [rows, cols]   the dequantized weight, for a few FP8 tensors (TENSORS)
  ids             I32 [L]            a prompt of random ids (seeded by --seed)
  logits          F32 [L, V]         transformers' fp32 logits at every prompt position

Dequantization is done here with torch, w = weight.float() * scale_inv expanded over its blocks
and cut to the matrix's shape, because transformers' own FP8 support does not serve this case:
its Fp8Dequantize refuses matrices whose sides are not multiples of the block size (the test
checkpoint has partial blocks on purpose), and FP8Linear runs Triton kernels on a GPU and
quantizes activations too. The dequantized weights are written as an F32 checkpoint without
quantization_config, which transformers then loads like any float model (its own name mapping,
fused experts and all), on the CPU in fp32 so that no reduced-precision path enters the reference.
When every FP8 matrix is whole blocks, the script also loads the checkpoint itself through
transformers' FP8 support (FineGrainedFP8Config(dequantize=True)) and asserts the same logits, so
the layout is checked against transformers' reading of it, not only against ours.

usage (on the machine with torch and transformers):
  ultraserve make-checkpoint --config tests/fixtures/configs/moe_fp8_partial_blocks.json --seed 11 \
      --dtype fp8 --out /tmp/fp8
  python3 tools/reference/fp8_reference.py --checkpoint /tmp/fp8 \
      --out tests/fixtures/reference/fp8_moe_partial_blocks.safetensors
tests/fp8_test.cpp (Fp8Reference) writes the same checkpoint again and compares.
"""
import argparse
import json
import os
import random
import tempfile

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, FineGrainedFP8Config

# A few FP8 tensors with partial blocks in one or both dimensions (shapes for moe_fp8_partial_blocks).
TENSORS = (
    "model.layers.0.self_attn.k_proj.weight",         # [80, 192]: one partial block row
    "model.layers.1.self_attn.o_proj.weight",         # [192, 160]: partial in both
    "model.layers.1.mlp.experts.2.down_proj.weight",  # [192, 136]: a routed expert
)
PROMPT_LENGTH = 8


def load_tensors(checkpoint):
    """Every tensor of the checkpoint, from model.safetensors or the shards its index lists."""
    index = os.path.join(checkpoint, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        with safe_open(os.path.join(checkpoint, name), framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    return tensors


def dequantize(weight, scale_inv, block):
    rows, cols = weight.shape
    scale = scale_inv.to(torch.float32)
    scale = scale.repeat_interleave(block[0], dim=0)[:rows].repeat_interleave(block[1], dim=1)[:, :cols]
    return weight.to(torch.float32) * scale


def transformers_fp8_logits(checkpoint, ids):
    """Logits of the checkpoint as transformers' own FP8 support dequantizes it, on the CPU in fp32."""
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint, quantization_config=FineGrainedFP8Config(dequantize=True), dtype=torch.float32)
    model.eval()
    return model(torch.tensor([ids])).logits[0].float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True, help="an FP8 checkpoint made by make-checkpoint --dtype fp8")
    ap.add_argument("--out", required=True, help="the fixture to write (.safetensors)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt's random ids")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    config = json.load(open(os.path.join(args.checkpoint, "config.json")))
    quantization = config.pop("quantization_config")
    assert quantization["quant_method"] == "fp8" and quantization.get("fmt", "e4m3") == "e4m3", quantization
    block = quantization.get("weight_block_size", [128, 128])

    stored = load_tensors(args.checkpoint)
    dense = {}
    for name, tensor in stored.items():
        if name.endswith(".weight_scale_inv"):
            continue
        if tensor.dtype == torch.float8_e4m3fn:
            dense[name] = dequantize(tensor, stored[name + "_scale_inv"], block)
        else:
            assert name + "_scale_inv" not in stored, f"{name}: a scale beside a {tensor.dtype} tensor"
            dense[name] = tensor.to(torch.float32)
    for name in TENSORS:
        assert name not in stored or stored[name].dtype == torch.float8_e4m3fn, f"{name} is not FP8"

    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.contiguous() for k, v in dense.items()}, os.path.join(tmp, "model.safetensors"),
                  metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f)
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
        model.eval()
        rng = random.Random(args.seed)
        ids = [rng.randrange(config["vocab_size"]) for _ in range(PROMPT_LENGTH)]
        logits = model(torch.tensor([ids])).logits[0].float().contiguous()

    whole_blocks = all(t.shape[0] % block[0] == 0 and t.shape[1] % block[1] == 0
                       for t in stored.values() if t.dtype == torch.float8_e4m3fn)
    if whole_blocks:
        difference = (transformers_fp8_logits(args.checkpoint, ids) - logits).abs().max().item()
        print(f"transformers' FP8 loading: logits differ by at most {difference}", flush=True)
        assert difference <= 1e-4 * logits.abs().max().item(), difference

    fixture = {name: dense[name].contiguous() for name in TENSORS if name in dense}
    fixture["ids"] = torch.tensor(ids, dtype=torch.int32)
    fixture["logits"] = logits
    metadata = {"generator": "tools/reference/fp8_reference.py",
                "weight_block_size": json.dumps(block), "transformers": transformers.__version__,
                "torch": torch.__version__}
    save_file(fixture, args.out, metadata=metadata)
    print(f"{args.out}: {len(fixture) - 2} dequantized tensors, logits {list(logits.shape)}", flush=True)


if __name__ == "__main__":
    main()
