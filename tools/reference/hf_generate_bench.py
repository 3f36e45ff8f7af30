#!/usr/bin/env python3
"""The reference system for tools/bench/cpu_generate_bench: HF transformers generating on the CPU, in fp32,
from the same checkpoint, the same prompt ids ((i * 7919) % 256, 32 tokens) and the same number of new tokens.

usage: hf_generate_bench.py --model DIR [--threads 1,2,16] [--prompt-tokens 32] [--new-tokens 64] [--json FILE]
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def timed_generate(model, prompt, new_tokens):
    start = time.perf_counter()
    model.generate(prompt, do_sample=False, max_new_tokens=new_tokens, pad_token_id=0)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # always generate the full count, as our bench does
    prompt = torch.tensor([[(i * 7919) % 256 for i in range(args.prompt_tokens)]])
    runs = []
    print("HF transformers", __import__("transformers").__version__, "torch", torch.__version__, "(CPU, fp32)")
    print("| threads | prefill tok/s | decode tok/s | decode ms/token |")
    print("|---|---|---|---|")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        timed_generate(model, prompt, 2)  # warm-up
        prefill = timed_generate(model, prompt, 1)
        total = timed_generate(model, prompt, args.new_tokens)
        decode = (args.new_tokens - 1) / (total - prefill)
        runs.append({"threads": threads, "prefill_tokens_per_s": args.prompt_tokens / prefill,
                     "decode_tokens_per_s": decode, "decode_ms_per_token": 1e3 / decode})
        print(f"| {threads} | {args.prompt_tokens / prefill:.1f} | {decode:.1f} | {1e3 / decode:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "hf_cpu_generate", "model": args.model, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
