"""What both trainings share: AdamW with linear warm-up and cosine decay, and how many steps fit a time."""
import math
import time

import torch

from accelerator import DEVICE


def adamw_with_cosine(params, lr, steps, warmup_fraction, weight_decay, final_fraction=0.1):
    fused = {"fused": True} if torch.cuda.is_available() else {}  # one kernel for all parameters
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay, **fused)
    warmup = max(1, int(steps * warmup_fraction))

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_in(seconds, step, log, what):
    """How many calls of step() fit in `seconds`, timed over a few calls after a warm-up."""
    step()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(5):
        step()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    per_step = (time.time() - t0) / 5
    steps = max(1, int(seconds / per_step))
    log(f"{what}: {per_step * 1e3:.1f} ms a step, {steps} steps fit in {seconds:.0f} s")
    return steps


def train(params, loss_of_batch, steps, lr, warmup_fraction, weight_decay, log, what):
    """`steps` AdamW steps on loss_of_batch() (it draws its own batch), gradients clipped at 1.0, with the
    cosine schedule. Returns the seconds taken."""
    params = list(params)
    optimizer, schedule = adamw_with_cosine(params, lr, steps, warmup_fraction, weight_decay)
    t0 = time.time()
    for step in range(steps):
        loss = loss_of_batch()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 200 == 0 or step == steps - 1:
            log(f"{what} step {step:5}/{steps}  loss {loss.item():.3f}  lr {schedule.get_last_lr()[0]:.2e}  "
                f"{time.time() - t0:6.1f} s")
    return time.time() - t0
