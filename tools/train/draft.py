"""Training a DFlash draft for a trained target, following the paper's recipe (docs/dflash.md):
target-generated continuations, random anchors, block-masked attention, position-decayed loss."""
import math
import time

import torch
import torch.nn.functional as F

from corpus import random_windows
from dflash_model import DFlashDraft
from schedule import steps_in, train
from accelerator import DEVICE, autocast


@torch.no_grad()
def greedy_continuations(target, prompts, new_tokens):
    """The target's own greedy continuations of the prompts ([n, p] -> [n, p + new_tokens])."""
    with autocast():
        out = target(input_ids=prompts, use_cache=True, output_router_logits=False)
        tokens = [prompts, out.logits[:, -1:].argmax(-1)]
        for _ in range(new_tokens - 1):
            out = target(input_ids=tokens[-1], past_key_values=out.past_key_values, use_cache=True,
                         output_router_logits=False)
            tokens.append(out.logits[:, -1:].argmax(-1))
    return torch.cat(tokens, 1)


def make_training_sequences(target, prompts, new_tokens, batch, log, what):
    """The target's greedy continuations of every prompt ([n, p] -> [n, p + new_tokens])."""
    sequences, t0 = [], time.time()
    for chunk in prompts.to(DEVICE).split(batch):
        sequences.append(greedy_continuations(target, chunk, new_tokens))
    log(f"{what}: {prompts.shape[0]} target continuations of {new_tokens} tokens in {time.time() - t0:.1f} s")
    return torch.cat(sequences)


class TargetTaps:
    """The target's tapped layer OUTPUTS (HF hidden_states[id + 1]), captured by forward hooks."""

    def __init__(self, target, layer_ids):
        self.target, self.outputs = target, {}
        self.hooks = [target.model.layers[i].register_forward_hook(self._keep(i)) for i in layer_ids]
        self.layer_ids = layer_ids

    def _keep(self, i):
        def hook(_module, _inputs, output):
            self.outputs[i] = output[0] if isinstance(output, tuple) else output
        return hook

    @torch.no_grad()
    def __call__(self, tokens):
        with autocast():
            self.target.model(input_ids=tokens)
        return torch.cat([self.outputs[i] for i in self.layer_ids], -1)


def anchored_blocks(tokens, anchors, block_size, mask_id):
    """Block inputs, positions, labels and the attention mask for anchors [n, a] of tokens [n, s]."""
    n, s = tokens.shape
    offsets = torch.arange(block_size, device=tokens.device)
    positions = (anchors[:, :, None] + offsets).reshape(n, -1)                  # [n, a * b]
    labels = tokens.gather(1, positions)
    inputs = torch.full_like(labels, mask_id).view(n, -1, block_size)
    inputs[:, :, 0] = tokens.gather(1, anchors)                                  # slot 0: the anchor
    anchor_of_row = anchors.repeat_interleave(block_size, 1)                     # [n, t]
    sees_ctx = torch.arange(s, device=tokens.device)[None, None, :] < anchor_of_row[:, :, None]
    block_of = torch.arange(positions.shape[1], device=tokens.device) // block_size
    sees_block = (block_of[:, None] == block_of[None, :]).expand(n, -1, -1)
    mask = torch.cat([sees_ctx, sees_block], -1)[:, None]
    return inputs.view(n, -1), positions, labels, mask


def slot_weights(block_size, gamma, device):
    """Slot 0 (the anchor) predicts nothing; slot k >= 1 weighs exp(-(k - 1) / gamma)."""
    k = torch.arange(block_size, device=device, dtype=torch.float32)
    w = torch.exp(-(k - 1) / gamma)
    w[0] = 0
    return w


def draft_logits(draft, target, taps, tokens, anchors, block_size, mask_id):
    inputs, positions, labels, mask = anchored_blocks(tokens, anchors, block_size, mask_id)
    ctx_positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
    with autocast():
        ctx = draft.context(taps(tokens))
        hidden = draft(target.model.embed_tokens(inputs), positions, ctx, ctx_positions, mask)
        logits = F.linear(hidden, target.lm_head.weight)
    return logits.float(), labels


def sample_anchors(n, per_sequence, low, high, generator):
    return torch.randint(low, high, (n, per_sequence), generator=generator)


def train_draft(config, target, sequences, prompt_tokens, steps, batch, anchors_per_sequence, lr, gamma, seed, log,
                seconds=0):
    """`steps` optimiser steps; with steps == 0, as many as fit in `seconds` (reported, as for the target)."""
    torch.manual_seed(seed)
    target.requires_grad_(False)  # frozen: the draft shares its embedding and LM head
    draft = DFlashDraft(config).to(DEVICE)
    taps = TargetTaps(target, config["dflash_config"]["target_layer_ids"])
    b, mask_id = config["block_size"], config["dflash_config"]["mask_token_id"]
    weights = slot_weights(b, gamma, DEVICE)
    s = sequences.shape[1]

    timing, generator = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed)
    draw = [timing]  # the timing steps draw from their own generator, so the run does not depend on them

    def loss_of_batch():
        rows = torch.randint(0, sequences.shape[0], (batch,), generator=draw[0]).to(DEVICE)
        tokens = sequences[rows]
        # Anchors in the generated part only: its next tokens are the target's own choices.
        anchors = sample_anchors(batch, anchors_per_sequence, prompt_tokens, s - b + 1, draw[0]).to(DEVICE)
        logits, labels = draft_logits(draft, target, taps, tokens, anchors, b, mask_id)
        ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), reduction="none").view(batch, -1, b)
        return (ce * weights).sum() / (weights.sum() * batch * anchors_per_sequence)

    if steps == 0:
        steps = steps_in(seconds, lambda: (loss_of_batch().backward(), draft.zero_grad(set_to_none=True)), log, "draft")
    draw[0] = generator
    seconds_taken = train(draft.parameters(), loss_of_batch, steps, lr, 0.04, 0.01, log, "draft")
    draft.eval()
    return draft, taps, seconds_taken, steps


@torch.no_grad()
def offline_tau(draft, target, taps, sequences, prompt_tokens, block_size, mask_id, anchors_per_sequence=8,
                horizon=None):
    """Mean tokens per round if each block were verified against the target's greedy continuation:
    1 (the target's own token) + the draft's leading matches, for anchors in the first `horizon` generated
    tokens (all of them by default). ultraserve's engine measures the real one."""
    generator = torch.Generator().manual_seed(1234)
    last = sequences.shape[1] - block_size + 1
    if horizon:
        last = min(last, prompt_tokens + horizon - block_size + 1)
    total, rounds = 0.0, 0
    for chunk in sequences.split(64):
        anchors = sample_anchors(chunk.shape[0], anchors_per_sequence, prompt_tokens, last, generator).to(DEVICE)
        logits, labels = draft_logits(draft, target, taps, chunk, anchors, block_size, mask_id)
        hits = (logits.argmax(-1) == labels).view(chunk.shape[0], -1, block_size)[:, :, 1:]
        leading = hits.int().cumprod(-1).sum(-1)
        total += (leading + 1).sum().item()
        rounds += leading.numel()
    return total / rounds
