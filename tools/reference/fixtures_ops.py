"""Elementwise ops and norms exactly as the reference's modules compute them."""
import torch
import torch.nn.functional as F

from moshi.modules.transformer import create_norm_fn

SEED = 1234


def generate(save):
    torch.manual_seed(SEED)
    x = torch.randn(7, 37) * 3.0
    rms = create_norm_fn("rms_norm_f32", 37)
    with torch.no_grad():
        rms.alpha.copy_(torch.rand_like(rms.alpha) + 0.5)
        ln = create_norm_fn("layer_norm", 37)
        ln.weight.copy_(torch.rand(37) + 0.5)
        ln.bias.copy_(torch.randn(37))
        save("ops", {
            "input": x,
            "gelu": F.gelu(x),
            "silu": F.silu(x),
            "elu": F.elu(x, alpha=1.0),
            "softmax": torch.softmax(x, dim=-1),
            "rms_alpha": rms.alpha.reshape(-1),
            "rms_norm": rms(x[None])[0],
            "ln_weight": ln.weight,
            "ln_bias": ln.bias,
            "layer_norm": ln(x[None])[0],
        }, SEED, rms_eps=rms.eps, ln_eps=ln.eps)
