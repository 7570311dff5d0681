"""The default model's Mimi, built from moshi 0.2.13's own classes, and what training and export
share: the Kyutai-style config dict, the model builder, the codebook memory-leak fix, the
conversion of the module state dict to the names Kyutai's Mimi checkpoints use, and duplex's tensor
table for that config (MimiTensorNames.table in Sources/DuplexCore/Mimi/MimiTensorNames.swift,
re-derived here so a file can be checked without a Swift build).
"""
import copy
import json
import os
import sys

import torch

from moshi.models import loaders
from moshi.models.compression import MimiModel
from moshi.modules import transformer as moshi_transformer
from moshi.modules.seanet import SEANetDecoder, SEANetEncoder
from moshi.quantization import SplitResidualVectorQuantizer
from moshi.quantization import core_vq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_common import stack_attention  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_MODEL_CONFIG = os.path.join(REPO, "models", "default", "config.json")
FRAME = 1920  # samples per 12.5 Hz code frame at 24 kHz


def mimi_config(model_config=DEFAULT_MODEL_CONFIG, n_q=8):
    """Kyutai's `loaders._mimi_config` with the sizes of `duplex.mimi` in a duplex model folder's
    config.json (filters, dimension, transformer layers/heads/feed-forward, codebook dimension) and
    `n_q` codebooks in all (1 semantic + n_q-1 acoustic). Everything else (ratios 8-6-5-4, causal,
    norm none, layer scale 0.01, context 250, RoPE, 2048 bins, conv resampling to 12.5 Hz) stays the
    released model's, which is exactly what duplex's MimiConfig(kyutaiJSON:) accepts."""
    cfg = copy.deepcopy(loaders._mimi_config)
    with open(model_config) as f:
        shape = json.load(f)["duplex"]["mimi"]
    dim = int(shape["dimension"])
    cfg["seanet"].update(dimension=dim, n_filters=int(shape["filters"]))
    cfg["transformer"].update(d_model=dim, num_heads=int(shape["transformer_heads"]),
                              num_layers=int(shape["transformer_layers"]),
                              dim_feedforward=int(shape["transformer_feedforward"]),
                              input_dimension=dim, output_dimensions=[dim])
    cfg["quantizer"].update(dimension=int(shape["codebook_dimension"]), n_q=int(n_q),
                            input_dimension=dim, output_dimension=dim)
    return cfg


def build_mimi(cfg, device="cpu", **quantizer_training_kwargs):
    """MimiModel assembled exactly as `loaders.get_mimi` does for `cfg`; extra keyword arguments go
    to the quantizer only (training knobs such as no_quantization_rate, which change no tensor)."""
    encoder = SEANetEncoder(**cfg["seanet"])
    decoder = SEANetDecoder(**cfg["seanet"])
    enc_tr = moshi_transformer.ProjectedTransformer(device="cpu", **cfg["transformer"])
    dec_tr = moshi_transformer.ProjectedTransformer(device="cpu", **cfg["transformer"])
    quantizer = SplitResidualVectorQuantizer(**cfg["quantizer"], **quantizer_training_kwargs)
    model = MimiModel(encoder, decoder, quantizer, channels=cfg["channels"], sample_rate=cfg["sample_rate"],
                      frame_rate=cfg["frame_rate"], encoder_frame_rate=cfg["sample_rate"] / encoder.hop_length,
                      causal=True, resample_method="conv", encoder_transformer=enc_tr, decoder_transformer=dec_tr)
    return model.to(device)


def init_for_signal_propagation(model, gain=1.0):
    """Re-initialises every convolution (SEANet, the ×2 resampling, the RVQ projections) so each
    one preserves the variance of its input: weights N(0, gain² / fan_in), biases 0.

    Why: PyTorch's default conv init (kaiming-uniform with a = √5, variance 1/(3·fan_in)) shrinks
    the signal about √3× per conv. Through SEANet's 15 encoder convs the part of the latent that
    depends on the input fell to 0.0045 (std over time) against biases of 0.028 — the latent was
    nearly constant — and the decoder's output was 25-45 dB below its target in every band after
    1000 steps (measured). With this init the encoder's output varies 37× more (0.17) and an
    untrained model's output is already at the input's level (0.115 against 0.080). The
    transformers keep moshi's own init (their residual branches start at layer scale 0.01)."""
    import math
    for mod in model.modules():
        if isinstance(mod, torch.nn.ConvTranspose1d):
            w = mod.weight  # [in, out / groups, k]: each output sample sums in/groups · k/stride taps
            fan_in = w.shape[0] / mod.groups * w.shape[2] / mod.stride[0]
        elif isinstance(mod, torch.nn.Conv1d):
            w = mod.weight  # [out, in / groups, k]
            fan_in = w.shape[1] * w.shape[2]
        else:
            continue
        with torch.no_grad():
            w.normal_(0.0, gain / math.sqrt(fan_in))
            if mod.bias is not None:
                mod.bias.zero_()
    return model


def patch_codebook_leak():
    """moshi 0.2.13's VectorQuantization.forward hands the un-detached latent to
    EuclideanCodebook.forward, whose EMA updates and dead-code replacement then write autograd
    history into the buffers: about 9 MB more resident memory per training step (OOM after ~760
    steps in the feasibility study). The codebook never needs gradients (the straight-through
    estimator sits outside it, in VectorQuantization.forward), so it gets `x.detach()`. `.float()`
    keeps the EMA scatter-adds in float32 under bf16 autocast (scatter_add_ wants equal dtypes)."""
    cls = core_vq.EuclideanCodebook
    if getattr(cls, "_duplex_detach_fix", False):
        return
    original = cls.forward

    def forward(self, x, initialize=True):
        return original(self, x.detach().float(), initialize)

    cls.forward = forward
    cls._duplex_detach_fix = True


def checkpoint_state(model):
    """The module state dict under Kyutai's checkpoint names: StreamingMultiheadAttention keeps
    `in_projs.{i}.weight` / `out_projs.{i}.weight`, the released files store them (stacked by step)
    as `in_proj_weight` / `out_proj.weight`, which its load hook maps back. All other names (the
    codebooks' `_codebook.embedding_sum`, `cluster_usage`, `_initialized` included) are as they are,
    the stacked names after them."""
    out = stack_attention(model.state_dict(), lambda parts: torch.cat(parts, dim=0))
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def duplex_table(cfg):
    """{name: shape} of every tensor duplex's MimiTensorNames.table expects for `cfg`, plus the set
    of optional names (`_initialized`). Mirrors the Swift table: SEANet encoder (first conv, per
    ratio reversed: residual blocks, ELU, strided conv; ELU; last conv), encoder transformer
    layers, downsample conv, rvq_first/rvq_rest (input/output projections, per level the three
    codebook buffers), upsample transposed depthwise conv, decoder transformer, SEANet decoder."""
    s, t, q = cfg["seanet"], cfg["transformer"], cfg["quantizer"]
    table, optional = {}, set()

    def conv(prefix, shape, bias, suffix=".conv.conv."):
        table[prefix + suffix + "weight"] = list(shape)
        if bias is not None:
            table[prefix + suffix + "bias"] = [bias]

    def res(prefix, dim):
        hidden = dim // s["compress"]
        conv(prefix + "block.1", [hidden, dim, s["residual_kernel_size"]], hidden)
        conv(prefix + "block.3", [dim, hidden, 1], dim)

    ratios = list(s["ratios"])
    ch, i = s["n_filters"], 0
    conv(f"encoder.model.{i}", [ch, s["channels"], s["kernel_size"]], ch); i += 1
    for r in reversed(ratios):
        for _ in range(s["n_residual_layers"]):
            res(f"encoder.model.{i}.", ch); i += 1
        i += 1  # ELU
        conv(f"encoder.model.{i}", [2 * ch, ch, 2 * r], 2 * ch); i += 1
        ch *= 2
    i += 1  # ELU
    conv(f"encoder.model.{i}", [s["dimension"], ch, s["last_kernel_size"]], s["dimension"])

    def transformer(prefix):
        d, ff = t["d_model"], t["dim_feedforward"]
        for l in range(t["num_layers"]):
            p = f"{prefix}layers.{l}."
            for n in ("norm1", "norm2"):
                table[p + n + ".weight"] = [d]
                table[p + n + ".bias"] = [d]
            table[p + "self_attn.in_proj_weight"] = [3 * d, d]
            table[p + "self_attn.out_proj.weight"] = [d, d]
            table[p + "linear1.weight"] = [ff, d]
            table[p + "linear2.weight"] = [d, ff]
            if t.get("layer_scale") is not None:
                table[p + "layer_scale_1.scale"] = [d]
                table[p + "layer_scale_2.scale"] = [d]

    dim = s["dimension"]
    hop = 1
    for r in ratios:
        hop *= r
    stride = int(round(cfg["sample_rate"] / cfg["frame_rate"])) // hop
    transformer("encoder_transformer.transformer.")
    table["downsample.conv.conv.conv.weight"] = [dim, dim, 2 * stride]
    semantic = q.get("n_q_semantic", 1)
    for name, levels in (("rvq_first", semantic), ("rvq_rest", q["n_q"] - semantic)):
        p = f"quantizer.{name}."
        table[p + "input_proj.weight"] = [q["dimension"], dim, 1]
        table[p + "output_proj.weight"] = [dim, q["dimension"], 1]
        for l in range(levels):
            b = f"{p}vq.layers.{l}._codebook."
            table[b + "_initialized"] = [1]
            optional.add(b + "_initialized")
            table[b + "cluster_usage"] = [q["bins"]]
            table[b + "embedding_sum"] = [q["bins"], q["dimension"]]
    table["upsample.convtr.convtr.convtr.weight"] = [dim, 1, 2 * stride]
    transformer("decoder_transformer.transformer.")
    ch = s["n_filters"] << len(ratios)
    i = 0
    conv(f"decoder.model.{i}", [ch, dim, s["kernel_size"]], ch); i += 1
    for r in ratios:
        i += 1  # ELU
        conv(f"decoder.model.{i}", [ch, ch // 2, 2 * r], ch // 2, suffix=".convtr.convtr."); i += 1
        ch //= 2
        for _ in range(s["n_residual_layers"]):
            res(f"decoder.model.{i}.", ch); i += 1
    i += 1  # ELU
    conv(f"decoder.model.{i}", [s["channels"], ch, s["last_kernel_size"]], s["channels"])
    return table, optional


def compare_to_table(tensors, cfg):
    """Lists of (missing, misshaped, extra) names of `tensors` against duplex_table(cfg)."""
    table, optional = duplex_table(cfg)
    missing = [n for n in table if n not in tensors and n not in optional]
    misshaped = [(n, list(tensors[n].shape), table[n]) for n in table if n in tensors and list(tensors[n].shape) != table[n]]
    extra = [n for n in tensors if n not in table]
    return missing, misshaped, extra
