#!/usr/bin/env python3
"""Reference logits from HF transformers for the random checkpoints in tests/fixtures/reference/cases.json.

Runs where transformers and torch are installed (the GPU machine); computes on the CPU in fp32 so
that no TF32 or reduced-precision GPU path enters the reference. For every case and prompt length it
records:
  p{L}.ids            I32 [L]      the prompt (random ids, seeded by the case's seed)
  p{L}.logits         F32 [L, V]   logits for every prompt position (the prefill)
  p{L}.greedy         I32 [N]      greedy continuation, N = cases.json's greedy_tokens
  p{L}.greedy_logits  F32 [N, V]   logits after feeding greedy[k] through the KV cache
The greedy loop feeds one token at a time through past_key_values, and is checked against
model.generate(do_sample=False) so both HF paths agree before we compare with ours.

usage: model_reference.py --cases tests/fixtures/reference/cases.json --checkpoints DIR --out DIR
where DIR/<name> holds each case's checkpoint, made by `ultraserve make-checkpoint`.
"""
import argparse
import json
import os
import random

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

PROMPT_LENGTHS = (1, 7, 40)


def load_exactly(checkpoint_dir):
    """The checkpoint in transformers, every tensor used and none missing. Where transformers keeps
    experts as fused [experts, ...] parameters and has no conversion from per-expert tensors for the
    model type, the per-expert tensors are stacked here (gate_up_proj = [gate; up] per expert)."""
    model, info = AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype=torch.float32,
                                                       attn_implementation="eager", output_loading_info=True)
    if not info["missing_keys"] and not info["unexpected_keys"]:
        return model
    from safetensors.torch import load_file
    import glob
    import re
    ours = {}
    for f in sorted(glob.glob(os.path.join(checkpoint_dir, "*.safetensors"))):
        ours.update({k: v.float() for k, v in load_file(f).items()})
    state = {}
    experts = {}
    for name, t in ours.items():
        m = re.match(r"(.*\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$", name)
        if m:
            experts.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = t
        else:
            state[name] = t
    for prefix, by_expert in experts.items():
        order = [by_expert[e] for e in sorted(by_expert)]
        state[prefix + ".gate_up_proj"] = torch.stack([torch.cat([x["gate"], x["up"]], 0) for x in order])
        state[prefix + ".down_proj"] = torch.stack([x["down"] for x in order])
    if model.config.tie_word_embeddings:
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    model.load_state_dict(state, strict=True)
    return model


def reference_for_case(case, checkpoint_dir, greedy_tokens):
    model = load_exactly(checkpoint_dir)
    model.eval()
    vocab = model.config.vocab_size
    rng = random.Random(case["seed"])
    tensors = {}
    for length in PROMPT_LENGTHS:
        ids = [rng.randrange(vocab) for _ in range(length)]
        prompt = torch.tensor([ids])
        out = model(prompt, use_cache=True)
        logits = out.logits[0].float()
        past = out.past_key_values
        greedy, step_logits = [], []
        token = int(logits[-1].argmax())
        for _ in range(greedy_tokens):
            greedy.append(token)
            out = model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            row = out.logits[0, -1].float()
            step_logits.append(row)
            token = int(row.argmax())
        model.generation_config.eos_token_id = None  # random weights: never stop early
        generated = model.generate(prompt, do_sample=False, max_new_tokens=greedy_tokens, pad_token_id=0)
        assert generated[0, length:].tolist() == greedy, f"{case['name']}: generate() and the manual loop disagree"
        tensors[f"p{length}.ids"] = torch.tensor(ids, dtype=torch.int32)
        tensors[f"p{length}.logits"] = logits.contiguous()
        tensors[f"p{length}.greedy"] = torch.tensor(greedy, dtype=torch.int32)
        tensors[f"p{length}.greedy_logits"] = torch.stack(step_logits).contiguous()
    return tensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", required=True)
    ap.add_argument("--checkpoints", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    spec = json.load(open(args.cases))
    os.makedirs(args.out, exist_ok=True)
    for case in spec["cases"]:
        tensors = reference_for_case(case, os.path.join(args.checkpoints, case["name"]), spec["greedy_tokens"])
        metadata = {"config": case["config"], "seed": str(case["seed"]), "dtype": case["dtype"],
                    "generator": "tools/reference/model_reference.py",
                    "transformers": transformers.__version__, "torch": torch.__version__}
        save_file(tensors, os.path.join(args.out, case["name"] + ".safetensors"), metadata=metadata)
        print(f"{case['name']}: {len(tensors)} tensors", flush=True)


if __name__ == "__main__":
    main()
