"""Builds Kyutai's Mimi (moshi==0.2.13) with random but meaningful weights, and a speech-like test
signal. Shared by the tiny CI fixture (fixtures_mimi.py), the real-size parity check
(mimi_parity_real.py) and the side-by-side benchmark (tools/bench_mimi.py).

"Meaningful" matters for the quantizer: with purely random centroids every latent lands on the same
code and a parity test of the codes proves nothing. Here each codebook's centroids are drawn from
the latents (first level) or residuals (deeper levels) of *other* speech-like audio, plus a little
noise, so codes change from frame to frame the way they do with trained weights.
"""
import copy
import math

import numpy as np
import torch

from moshi.models import loaders
from moshi.models.compression import MimiModel
from moshi.modules import transformer as kt
from moshi.modules.seanet import SEANetDecoder, SEANetEncoder
from moshi.quantization import SplitResidualVectorQuantizer

SAMPLE_RATE = 24000
FRAME = 1920

# The released model (what loaders.get_mimi builds).
REAL_CONFIG = copy.deepcopy(loaders._mimi_config)

# Same blocks, same ratios (so a frame is still 1920 samples), same transformer kind, same split
# RVQ with 32 levels; only widths, depth and codebook size shrink so the weights fit a fixture.
TINY_CONFIG = copy.deepcopy(loaders._mimi_config)
TINY_CONFIG["seanet"].update(dimension=32, n_filters=4)
TINY_CONFIG["quantizer"].update(dimension=8, n_q=32, bins=512, input_dimension=32, output_dimension=32)
TINY_CONFIG["transformer"].update(d_model=32, num_heads=4, num_layers=2, dim_feedforward=64,
                                  input_dimension=32, output_dimensions=[32])


def build_mimi(config):
    """MimiModel exactly as loaders.get_mimi assembles it, for any config of that shape."""
    encoder = SEANetEncoder(**config["seanet"])
    decoder = SEANetDecoder(**config["seanet"])
    enc_tr = kt.ProjectedTransformer(device="cpu", **config["transformer"])
    dec_tr = kt.ProjectedTransformer(device="cpu", **config["transformer"])
    quantizer = SplitResidualVectorQuantizer(**config["quantizer"])
    model = MimiModel(encoder, decoder, quantizer, channels=config["channels"], sample_rate=config["sample_rate"],
                      frame_rate=config["frame_rate"], encoder_frame_rate=config["sample_rate"] / encoder.hop_length,
                      causal=True, resample_method="conv", encoder_transformer=enc_tr, decoder_transformer=dec_tr)
    return model.eval()


def randomize_mimi_(model, seed):
    """Seeded weights that keep activations at a sensible scale through every block: convs get
    N(0, 1/fan_in) with the fan-in each output really sees (a transposed conv of stride S sums
    Cin·K/S terms), norms and layer scales ≈ 1, biases small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.ConvTranspose1d):
                cin, _, k = module.weight.shape
                fan = cin // module.groups * k / module.stride[0]
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * fan ** -0.5)
                if module.bias is not None:
                    module.bias.copy_(0.05 * torch.randn(module.bias.shape, generator=g))
            elif isinstance(module, torch.nn.Conv1d):
                fan = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * fan ** -0.5)
                if module.bias is not None:
                    module.bias.copy_(0.05 * torch.randn(module.bias.shape, generator=g))
            elif isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * module.weight.shape[1] ** -0.5)
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
            elif isinstance(module, kt.LayerScale):
                module.scale.copy_(1 + 0.1 * torch.randn(module.scale.shape, generator=g))


def speech_like(n, seed, sr=SAMPLE_RATE):
    """A synthetic voice: a glottal pulse train with a wandering pitch through three time-varying
    formant resonators, cut into syllables with fricative noise and pauses, plus a noise floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    base = rng.uniform(95, 210)
    f0 = base * (1 + 0.18 * np.sin(2 * np.pi * rng.uniform(0.3, 0.9) * t + rng.uniform(0, 6))
                 + 0.04 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    phase = np.cumsum(f0 / sr) % 1.0
    open_q = 0.6
    flow = np.where(phase < open_q, 0.5 * (1 - np.cos(np.pi * phase / open_q)),
                    np.cos(0.5 * np.pi * np.clip((phase - open_q) / (1 - open_q), 0, 1)))
    excitation = np.diff(flow, prepend=flow[0])

    # Syllables: voiced (with formant targets), fricative, or silence.
    env = np.zeros(n)
    voiced = np.zeros(n)
    formants = np.zeros((n, 3))
    pos = 0
    current = np.array([500.0, 1500.0, 2500.0])
    while pos < n:
        kind = rng.choice(["voiced", "voiced", "voiced", "fricative", "pause"])
        length = int(sr * rng.uniform(0.08, 0.25))
        end = min(n, pos + length)
        seg = end - pos
        ramp = np.minimum(1, np.minimum(np.arange(seg), seg - np.arange(seg)) / (0.015 * sr))
        target = np.array([rng.uniform(300, 800), rng.uniform(900, 2300), rng.uniform(2400, 3200)])
        alpha = np.linspace(0, 1, seg)[:, None]
        formants[pos:end] = current * (1 - alpha) + target * alpha
        current = target
        if kind == "voiced":
            env[pos:end] = ramp * rng.uniform(0.5, 1.0)
            voiced[pos:end] = 1
        elif kind == "fricative":
            env[pos:end] = ramp * rng.uniform(0.1, 0.3)
        pos = end

    noise = rng.standard_normal(n)
    source = env * np.where(voiced > 0, excitation * 20, noise * 0.3)
    out = source
    for i, bw in enumerate((70.0, 100.0, 140.0)):
        r = math.exp(-math.pi * bw / sr)
        y = np.zeros(n)
        y1 = y2 = 0.0
        block = 48
        for start in range(0, n, block):
            theta = 2 * np.pi * formants[start, i] / sr
            a1, a2, gain = 2 * r * math.cos(theta), -r * r, (1 - r)
            for j in range(start, min(n, start + block)):
                v = gain * out[j] + a1 * y1 + a2 * y2
                y[j] = v
                y2, y1 = y1, v
        out = y
    out = out / (np.max(np.abs(out)) + 1e-9) * 0.5
    out = out + 10 ** (-45 / 20) * rng.standard_normal(n)
    return out.astype(np.float32)


@torch.no_grad()
def seed_codebooks_(model, pool_latent, seed, noise=0.05, dead_fraction=0.01):
    """Draws every codebook's centroids from projected latents (level 0) or residuals (deeper
    levels) of `pool_latent` [1, D, N], plus `noise`·std of Gaussian noise. Residuals are taken
    leave-neighbours-out, else each level would see only the noise of the one before. Cluster usages are
    random, and a few are below the ε the reference clamps to (their sums are scaled to match),
    so the loader's embedding_sum / max(cluster_usage, ε) is exercised."""
    g = torch.Generator().manual_seed(seed)
    q = model.quantizer
    for rvq in (q.rvq_first, q.rvq_rest):
        r = rvq.input_proj(pool_latent)[0].T.contiguous()  # [N, d]
        for layer in rvq.vq.layers:
            cb = layer._codebook
            bins, d = cb.embedding_sum.shape
            idx = torch.randint(0, r.shape[0], (bins,), generator=g)
            std = r.std(dim=0, keepdim=True)
            centroids = r[idx] + noise * std * torch.randn(bins, d, generator=g)
            usage = 0.5 + 1.5 * torch.rand(bins, generator=g)
            dead = torch.rand(bins, generator=g) < dead_fraction
            usage[dead] = 1e-7
            cb.embedding_sum.copy_(centroids * usage.clamp(min=cb.epsilon)[:, None])
            cb.cluster_usage.copy_(usage)
            cb._initialized.fill_(1.0)
            cb._embedding = None
            # Residuals for the next level, as audio the centroids were not drawn from would
            # leave them: a pool frame may not use centroids made from itself or its neighbours.
            dists = torch.cdist(r[None], cb.embedding[None])[0]
            own = (torch.arange(r.shape[0])[:, None] - idx[None, :]).abs() <= 2
            codes = dists.masked_fill(own, float("inf")).argmin(dim=-1)
            r = r - cb.embedding[codes]


def make_model(config, seed, pool_seconds):
    """A seeded Mimi whose codebooks come from `pool_seconds` of other speech-like audio."""
    torch.manual_seed(seed)
    model = build_mimi(config)
    randomize_mimi_(model, seed)
    pool = np.concatenate([speech_like(int(SAMPLE_RATE * 6), seed + 100 + i) for i in range(int(pool_seconds // 6))])
    with torch.no_grad():
        latent = model._encode_to_unquantized_latent(torch.from_numpy(pool)[None, None])
    seed_codebooks_(model, latent, seed + 1)
    return model


def checkpoint_tensors(model):
    """The state dict under the released file's names (legacy attention names, float32)."""
    from reference_common import to_checkpoint_names
    return to_checkpoint_names(model.state_dict())


@torch.no_grad()
def run_reference(model, audio, num_codebooks):
    """Streaming (one 1920-sample frame per call, fresh state) and offline results of `model`
    on `audio` (1-D, a multiple of the frame). Latents time-major [frames, D]."""
    model.set_num_codebooks(num_codebooks)
    x = torch.from_numpy(audio)[None, None]
    frames = x.shape[-1] // FRAME
    out = {}
    with model.streaming(1):
        lat = [model._encode_to_unquantized_latent(x[..., i * FRAME:(i + 1) * FRAME]) for i in range(frames)]
    with model.streaming(1):
        codes_s = torch.cat([model.encode(x[..., i * FRAME:(i + 1) * FRAME]) for i in range(frames)], dim=-1)
    out["latent_streaming"] = torch.cat(lat, dim=-1)[0].T
    out["codes_streaming"] = codes_s[0]
    with model.streaming(1):
        audio_s = torch.cat([model.decode(codes_s[..., i:i + 1]) for i in range(frames)], dim=-1)
    out["decoded_streaming"] = audio_s[0, 0]
    out["quantized_streaming"] = model.decode_latent(codes_s)[0].T

    out["latent_offline"] = model._encode_to_unquantized_latent(x)[0].T
    codes_o = model.encode(x)
    out["codes_offline"] = codes_o[0]
    out["quantized_offline"] = model.decode_latent(codes_o)[0].T
    out["decoded_offline"] = model.decode(codes_o)[0, 0]
    return out
