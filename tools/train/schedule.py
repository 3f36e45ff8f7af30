"""The optimiser and learning-rate schedule both trainings share: AdamW, linear warm-up, cosine decay."""
import math

import torch


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
