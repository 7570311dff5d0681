"""Kyutai's StreamingTransformer in its two flavours, streamed two steps per call past its context,
so the ring KV cache's wrap-around and absolute RoPE positions are pinned down."""
import torch

from moshi.modules.transformer import StreamingTransformer
from reference_common import randomize_, to_checkpoint_names

SEED = 4321
FLAVOURS = {
    # Mimi's encoder/decoder transformer: LayerNorm, GELU MLP, layer scale, RoPE.
    "mimi_like": dict(d_model=32, num_heads=4, num_layers=2, dim_feedforward=64, causal=True, context=5,
                      positional_embedding="rope", max_period=10000, layer_scale=0.01, norm="layer_norm",
                      gating="none", conv_layout=False),
    # Moshi's temporal transformer: RMSNorm f32, SiLU gating, no layer scale, RoPE.
    "lm_like": dict(d_model=32, num_heads=2, num_layers=2, dim_feedforward=4.125 * 32, causal=True, context=6,
                    positional_embedding="rope", max_period=10000, layer_scale=None, norm="rms_norm_f32",
                    gating="silu"),
}


def generate(save):
    for name, kwargs in FLAVOURS.items():
        kwargs = dict(kwargs)
        kwargs.pop("conv_layout", None)
        if isinstance(kwargs["dim_feedforward"], float):
            kwargs["dim_feedforward"] = int(kwargs["dim_feedforward"])
        torch.manual_seed(SEED)
        model = StreamingTransformer(**kwargs).eval()
        randomize_(model, SEED)
        steps, per_call = 14, 2
        x = torch.randn(1, steps, kwargs["d_model"], generator=torch.Generator().manual_seed(SEED + 1))
        outputs = []
        with torch.no_grad(), model.streaming(1):
            for t in range(0, steps, per_call):
                outputs.append(model(x[:, t:t + per_call]))
        y = torch.cat(outputs, dim=1)
        tensors = {"weights." + k: v for k, v in to_checkpoint_names(model.state_dict()).items()}
        tensors["input"] = x[0]
        tensors["output_streaming"] = y[0]
        save("transformer_" + name, tensors, SEED, steps_per_call=per_call, context=kwargs["context"],
             dim_feedforward=kwargs["dim_feedforward"])
