"""MXFP4 round trip in torch, the rule of ultraserve's quantizer (model/mxfp4.h): blocks of 32 along a
row share the scale 2^(floor(log2(amax)) - 2); values round to the nearest E2M1 code (0, .5, 1, 1.5, 2,
3, 4, 6; ties to the even code), saturating at 6. The draft is trained against the target as it will be
served, experts in MXFP4, so that its context features are the ones it will see."""
import torch

MIDPOINTS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
CODES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def mxfp4_round_trip(w):
    rows, cols = w.shape
    x = w.detach().to(torch.bfloat16).float().view(rows, cols // 32, 32)  # what the BF16 export holds
    amax = x.abs().amax(-1, keepdim=True)
    exponent = torch.floor(torch.log2(amax.clamp_min(torch.finfo(torch.float32).tiny))) - 2
    scale = torch.where(amax > 0, torch.exp2(exponent.clamp(-127, 127)), torch.ones_like(amax))
    v = (x / scale).abs()
    mid = MIDPOINTS.to(v.device)
    # Past an even code's upper midpoint only when strictly above it; past an odd one's at equality.
    even = torch.arange(7, device=v.device) % 2 == 0
    code = torch.where(even, v[..., None] > mid, v[..., None] >= mid).sum(-1)
    return (CODES.to(v.device)[code] * scale * torch.sign(x)).view(rows, cols).to(w.dtype)


@torch.no_grad()
def as_served(model):
    """The model with every weight rounded to BF16 and the routed experts to MXFP4, in place."""
    for p in model.parameters():
        p.copy_(p.to(torch.bfloat16).float())
    for layer in model.model.layers:
        experts = layer.mlp.experts
        if hasattr(experts, "gate_up_proj"):  # fused [experts, out, in] parameters
            for param in (experts.gate_up_proj, experts.down_proj):
                for e in range(param.shape[0]):
                    param[e].copy_(mxfp4_round_trip(param[e]))
        else:
            for expert in experts:
                for proj in (expert.gate_proj, expert.up_proj, expert.down_proj):
                    proj.weight.copy_(mxfp4_round_trip(proj.weight))
    return model
