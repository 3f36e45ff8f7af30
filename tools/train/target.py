"""The target: transformers' own Qwen3MoeForCausalLM, trained from scratch on the corpus stream."""
import math
import time

import torch
import torch.nn.functional as F
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

from schedule import adamw_with_cosine, steps_in
from corpus import random_windows
from accelerator import DEVICE, autocast

# 8 layers, hidden 256, 8 experts of width 256 (top-2): with MXFP4 experts about 12 MB.
SHAPE = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=8, num_attention_heads=4,
             num_key_value_heads=2, head_dim=64, moe_intermediate_size=256, num_experts=8, num_experts_per_tok=2)


def make_config(vocab_size, eos_ids, pad_id):
    return Qwen3MoeConfig(vocab_size=vocab_size, **SHAPE, norm_topk_prob=True, decoder_sparse_step=1,
                          mlp_only_layers=[], max_position_embeddings=4096, rms_norm_eps=1e-6,
                          rope_parameters={"rope_type": "default", "rope_theta": 1e6}, tie_word_embeddings=True,
                          attention_bias=False, use_sliding_window=False, output_router_logits=True,
                          router_aux_loss_coef=0.01, bos_token_id=None, eos_token_id=eos_ids, pad_token_id=pad_id)


def train_target(config, stream, steps, batch, seq, lr, seed, log, seconds=0):
    """`steps` optimiser steps; with steps == 0, as many as fit in `seconds` (the count is reported,
    so a rerun with --target-steps N repeats the run exactly)."""
    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(config).to(DEVICE)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    stream = stream.to(DEVICE)
    if steps == 0:
        timing_generator = torch.Generator().manual_seed(seed + 1)

        def forward_backward():  # no optimiser step: the weights stay as initialised
            x = random_windows(stream, batch, seq, timing_generator)
            with autocast():
                model(input_ids=x, labels=x).loss.backward()
            model.zero_grad(set_to_none=True)

        steps = steps_in(seconds, forward_backward, log, "target")
    optimizer, schedule = adamw_with_cosine(model.parameters(), lr, steps, 0.02, 0.1)
    t0 = time.time()
    for step in range(steps):
        x = random_windows(stream, batch, seq, generator)
        with autocast():
            loss = model(input_ids=x, labels=x).loss  # includes the router's load-balancing loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 200 == 0 or step == steps - 1:
            log(f"target step {step:5}/{steps}  loss {loss.item():.3f}  lr {schedule.get_last_lr()[0]:.2e}  "
                f"{time.time() - t0:6.1f} s")
    model.eval()
    return model, time.time() - t0, steps


@torch.no_grad()
def perplexity(model, stream, seq, max_tokens):
    """exp(mean next-token NLL) over non-overlapping windows of the stream (the router loss left out)."""
    stream = stream[: max_tokens].to(DEVICE)
    windows = stream[: stream.numel() // seq * seq].view(-1, seq)
    total, count = 0.0, 0
    for chunk in windows.split(64):
        with autocast():
            logits = model(input_ids=chunk).logits
        nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1),
                              reduction="sum")
        total += nll.item()
        count += chunk[:, 1:].numel()
    return math.exp(total / count), count
