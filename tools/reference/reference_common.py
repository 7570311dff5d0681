"""Helpers shared by the fixture generators."""
import re

import torch


def to_checkpoint_names(state_dict):
    """Module-form state dict -> the names Kyutai's released files use.

    PyTorch's `StreamingMultiheadAttention` holds `in_projs.{i}.weight` / `out_projs.{i}.weight`
    (one per depth step when weights_per_step); the files store them stacked step-major under
    the legacy names `in_proj_weight` / `out_proj.weight` (its `_load_hook` splits them again).
    """
    out = {}
    stacked = {}
    for name, value in state_dict.items():
        m = re.match(r"(.*self_attn\.)(in|out)_projs\.(\d+)\.weight$", name)
        if m:
            prefix, kind, index = m.group(1), m.group(2), int(m.group(3))
            target = prefix + ("in_proj_weight" if kind == "in" else "out_proj.weight")
            stacked.setdefault(target, {})[index] = value
            continue
        out[name] = value
    for target, parts in stacked.items():
        out[target] = torch.cat([parts[i] for i in sorted(parts)], dim=0)
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def randomize_(module, seed, scale=None):
    """Fills every parameter and buffer of `module` with seeded values of a sensible spread.

    Norm weights/alphas and layer scales get values around 1 (so layers neither vanish nor
    explode); matrices get N(0, 1/fan_in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("alpha") or (("norm" in name) and name.endswith("weight")) or name.endswith(".scale"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = max(1, p[0].numel()) if p.dim() > 1 else 1
                s = scale if scale is not None else fan_in ** -0.5
                p.copy_(s * torch.randn(p.shape, generator=g))
