#!/usr/bin/env python3
"""The reference system for tools/bench/gpu_decode_bench: HF transformers on the same GPU, same model shape
(config.json), bf16 everywhere (transformers has no MXFP4 path for Qwen3-MoE; a quantization_config is
dropped), random weights made on the GPU. Batch-1 greedy decode ms/token after a prompt of each --contexts
length, timed over --steps forward calls with the model's own KV cache, as `generate` would run them.
--layers N keeps the first N layers (as gpu_decode_bench --layers does).

usage: hf_gpu_decode_bench.py --config FILE [--layers N] [--contexts 128,4096] [--steps 20] [--json FILE]
"""
import argparse
import json
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--contexts", default="128,4096")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    with open(args.config) as f:
        fields = json.load(f)
    fields.pop("quantization_config", None)
    if args.layers:
        fields["num_hidden_layers"] = args.layers  # the layer-type defaults follow it
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("cuda"):  # random weights made on the GPU: a 60 GB file is not needed
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    print(f"HF transformers {transformers.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"bf16, {sum(p.numel() for p in model.parameters()) / 1e9:.1f} B parameters", flush=True)
    print("| context | ms/token | tokens/s |\n|---|---|---|")
    runs = []
    for context in [int(c) for c in args.contexts.split(",")]:
        cache = DynamicCache(config=config)
        prompt = torch.randint(0, config.vocab_size, (1, context), device="cuda")
        logits = model(prompt, past_key_values=cache, use_cache=True).logits
        token = logits[:, -1:].argmax(-1)
        for _ in range(3):  # warm-up
            token = model(token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            token = model(token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        token.item()
        ms = (time.perf_counter() - start) / args.steps * 1e3
        runs.append({"context": context, "ms_per_token": ms})
        print(f"| {context} | {ms:.2f} | {1e3 / ms:.1f} |", flush=True)
        del cache
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "hf_gpu_decode", "config": args.config, "layers": config.num_hidden_layers,
                       "device": torch.cuda.get_device_name(), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
