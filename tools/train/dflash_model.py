"""The DFlash draft (published format, see docs/dflash.md) in plain PyTorch, for training.

Parameter names are the checkpoint's tensor names: fc, hidden_norm, layers.{i}.self_attn.*,
layers.{i}.mlp.*, layers.{i}.input_layernorm / post_attention_layernorm, norm. The math is the one
ultraserve's model/dflash.cpp runs: the context (the target's tapped layer outputs, fused by fc and
hidden_norm) enters every layer only as keys and values; block rows attend to the context before
their anchor and to their whole block, not causally.
"""
import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight.to(x.dtype)


def rope_tables(positions, head_dim, theta):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[..., None] * inv_freq
    angles = torch.cat([angles, angles], -1)
    return angles.cos()[..., None, :], angles.sin()[..., None, :]  # broadcast over heads


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, hd = c["hidden_size"], c["head_dim"]
        self.heads, self.kv_heads, self.head_dim = c["num_attention_heads"], c["num_key_value_heads"], hd
        self.q_proj = nn.Linear(h, self.heads * hd, bias=False)
        self.k_proj = nn.Linear(h, self.kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(h, self.kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(self.heads * hd, h, bias=False)
        self.q_norm = RMSNorm(hd, c["rms_norm_eps"])
        self.k_norm = RMSNorm(hd, c["rms_norm_eps"])

    def keys_values(self, x, rope):
        n, t, _ = x.shape
        k = apply_rope(self.k_norm(self.k_proj(x).view(n, t, self.kv_heads, self.head_dim)), *rope)
        return k, self.v_proj(x).view(n, t, self.kv_heads, self.head_dim)

    def forward(self, x, ctx, block_rope, ctx_rope, mask):
        n, t, _ = x.shape
        q = apply_rope(self.q_norm(self.q_proj(x).view(n, t, self.heads, self.head_dim)), *block_rope)
        kc, vc = self.keys_values(ctx, ctx_rope)
        kb, vb = self.keys_values(x, block_rope)
        k, v = torch.cat([kc, kb], 1), torch.cat([vc, vb], 1)
        group = self.heads // self.kv_heads
        q, k, v = q.transpose(1, 2), k.repeat_interleave(group, 2).transpose(1, 2), v.repeat_interleave(group, 2).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)).float() * self.head_dim ** -0.5
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1).to(v.dtype)
        return self.o_proj((weights @ v).transpose(1, 2).reshape(n, t, -1))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], c["hidden_size"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, ctx, block_rope, ctx_rope, mask):
        x = x + self.self_attn(self.input_layernorm(x), ctx, block_rope, ctx_rope, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class DFlashDraft(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        h, taps = config["hidden_size"], len(config["dflash_config"]["target_layer_ids"])
        self.fc = nn.Linear(taps * h, h, bias=False)
        self.hidden_norm = RMSNorm(h, config["rms_norm_eps"])
        self.layers = nn.ModuleList(Layer(config) for _ in range(config["num_hidden_layers"]))
        self.norm = RMSNorm(h, config["rms_norm_eps"])
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)

    def context(self, taps):
        """One feature per committed token from the concatenated tapped layer outputs."""
        return self.hidden_norm(self.fc(taps))

    def forward(self, block, block_positions, ctx, ctx_positions, mask):
        """block [n, t, h]: target embeddings of [anchor, MASK...] blocks; ctx [n, s, h]: context
        features; mask [n, 1, t, s + t] (True = may attend). Returns the normed hidden states."""
        hd, theta = self.config["head_dim"], self.config["rope_theta"]
        block_rope, ctx_rope = rope_tables(block_positions, hd, theta), rope_tables(ctx_positions, hd, theta)
        x = block
        for layer in self.layers:
            x = layer(x, ctx, block_rope, ctx_rope, mask)
        return self.norm(x)
