"""Writing the trained pair as checkpoints in the published layouts (safetensors, BF16):
the target as a genuine HF Qwen3-MoE checkpoint with one tensor per expert (the layout of the
published Qwen3-MoE checkpoints, which ultraserve and transformers both load), the draft in
z-lab's DFlashDraftModel layout (no `model.` prefix, no embedding or LM head)."""
import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from accelerator import DEVICE

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def per_expert_tensors(model):
    """The state dict with fused expert tensors (transformers 5 keeps [experts, ...] parameters)
    split into the per-expert names of the published checkpoints. Each split is checked against the
    experts module itself, so a layout change in transformers fails here, not in the served model."""
    out = {}
    for name, t in model.state_dict().items():
        if name.endswith("mlp.experts.gate_up_proj") or name.endswith("mlp.experts.down_proj"):
            continue
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        out[name] = t
    for i, layer in enumerate(model.model.layers):
        experts = layer.mlp.experts
        if not hasattr(experts, "gate_up_proj"):
            continue  # already a ModuleList of per-expert MLPs: names are per expert
        for e in range(model.config.num_experts):
            gate_up, down = experts.gate_up_proj[e], experts.down_proj[e]
            h, width = model.config.hidden_size, model.config.moe_intermediate_size
            if gate_up.shape == (h, 2 * width):  # [in, out] layout
                gate_up, down = gate_up.t(), down.t()
            gate, up = gate_up[:width], gate_up[width:]
            prefix = f"model.layers.{i}.mlp.experts.{e}."
            out[prefix + "gate_proj.weight"], out[prefix + "up_proj.weight"] = gate, up
            out[prefix + "down_proj.weight"] = down
            check_expert(experts, e, gate, up, down)
    return out


@torch.no_grad()
def check_expert(experts, e, gate, up, down):
    x = torch.randn(4, gate.shape[1], device=gate.device)
    mine = torch.nn.functional.linear(torch.nn.functional.silu(x @ gate.t()) * (x @ up.t()), down)
    index = torch.full((4, 1), e, device=x.device, dtype=torch.long)
    try:
        theirs = experts(x, index, torch.ones(4, 1, device=x.device))
    except TypeError:  # another forward signature: check_reload and ultraserve's own perplexity still check
        return
    err = (mine - theirs).abs().max().item() / max(theirs.abs().max().item(), 1e-12)
    if err > 1e-3:
        raise RuntimeError(f"expert {e}: the per-expert split disagrees with transformers (rel err {err:.2e})")


def save_target(model, tokenizer, tokenizer_config, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in per_expert_tensors(model).items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.update(architectures=["Qwen3MoeForCausalLM"], torch_dtype="bfloat16", dtype="bfloat16",
                  output_router_logits=False, num_experts=model.config.num_experts)  # the name older readers know
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": config["eos_token_id"],
                                                            "pad_token_id": config["pad_token_id"]}, indent=2) + "\n")
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


def save_draft(draft, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in draft.state_dict().items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(draft.config, indent=2) + "\n")


def draft_config(target_config, layers, intermediate, taps, mask_id, block_size):
    t = target_config
    return {"architectures": ["DFlashDraftModel"], "model_type": "qwen3", "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size, "intermediate_size": intermediate, "num_hidden_layers": layers,
            "num_attention_heads": t.num_attention_heads, "num_key_value_heads": t.num_key_value_heads,
            "head_dim": t.head_dim, "max_position_embeddings": t.max_position_embeddings,
            "rms_norm_eps": t.rms_norm_eps, "rope_theta": 1e6, "tie_word_embeddings": False, "hidden_act": "silu",
            "attention_bias": False, "num_target_layers": t.num_hidden_layers, "block_size": block_size,
            "dflash_config": {"mask_token_id": mask_id, "target_layer_ids": taps, "block_size": block_size},
            "torch_dtype": "bfloat16"}


@torch.no_grad()
def check_reload(model, out: Path, tokens):
    """transformers loads the exported folder and gives the trained model's logits (BF16 rounding aside)."""
    from transformers import AutoModelForCausalLM
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).to(DEVICE).eval()
    a = model(input_ids=tokens).logits.float()
    b = reloaded(input_ids=tokens).logits.float()
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    err = ((a - b).abs().max() / a.abs().max()).item()
    return {"top1_agreement": agree, "max_rel_error": err}


def dequantize_mxfp4(blocks, scales):
    """ultraserve's MXFP4 tensors (model/mxfp4.h: two E2M1 codes a byte, the even element in the low
    nibble; one E8M0 scale per 32) as the float matrix they stand for."""
    rows = blocks.shape[0]
    codes = torch.stack([blocks & 0xF, blocks >> 4], -1).view(rows, -1).long()
    values = E2M1[codes].view(rows, -1, 32)
    return (values * torch.exp2(scales.float() - 127)[..., None]).view(rows, -1)


@torch.no_grad()
def load_served_target(folder: Path):
    """A target folder as ultraserve serves it (models/default: experts in MXFP4) as transformers'
    model of it. The MXFP4 experts become the values the engine multiplies by; bf16 holds them
    exactly (an E2M1 code times a power of two), so this is the served target, not an approximation."""
    tensors = {}
    for shard in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(shard))
    weights = {}
    for name, t in tensors.items():
        if name.endswith(".blocks"):
            base = name[: -len(".blocks")]
            weights[base + ".weight"] = dequantize_mxfp4(t, tensors[base + ".scales"]).to(torch.bfloat16)
        elif not name.endswith(".scales"):
            weights[name] = t
    from transformers import AutoModelForCausalLM
    with tempfile.TemporaryDirectory() as tmp:
        save_file(weights, Path(tmp) / "model.safetensors", metadata={"format": "pt"})
        shutil.copy(folder / "config.json", tmp)
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
    return model.to(DEVICE).eval()
