"""Where training runs: the GPU when there is one (the GPU machine), else the CPU (quick checks here)."""
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def autocast():
    """BF16 compute with FP32 master weights (never FP16: DFlash feature fusion overflows in it)."""
    return torch.autocast(DEVICE, dtype=torch.bfloat16)
