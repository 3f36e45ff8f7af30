"""The target: transformers' own Qwen3MoeForCausalLM, trained from scratch on the corpus stream."""
import math
import time

import torch
import torch.nn.functional as F
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

from schedule import steps_in, train
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
    stream = stream.to(DEVICE)
    timing, generator = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed)
    draw = [timing]  # the timing steps draw from their own generator, so the run does not depend on them

    def loss_of_batch():
        x = random_windows(stream, batch, seq, draw[0])
        with autocast():
            return model(input_ids=x, labels=x).loss  # includes the router's load-balancing loss

    if steps == 0:
        steps = steps_in(seconds, lambda: (loss_of_batch().backward(), model.zero_grad(set_to_none=True)), log, "target")
    draw[0] = generator
    seconds_taken = train(model.parameters(), loss_of_batch, steps, lr, 0.02, 0.1, log, "target")
    model.eval()
    return model, seconds_taken, steps


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
