"""Tensor names and shapes (no weights) of Kyutai's models as moshi==0.2.13 builds them, for the
tiny test configs the other fixtures use, the embedded default model's LM, and the released
configs (Mimi with 8 and 32 active codebooks, the moshiko/moshika 7B LM). Every model is built on
the meta device, so the 7B costs no memory.

Two name forms exist and both are recorded:
  state_dict — the module's own names (moshi 0.2.13's `StreamingMultiheadAttention` holds
               `self_attn.in_projs.{i}.weight` [3·dim, dim] and `self_attn.out_projs.{i}.weight`
               [dim, dim], one per depth step when weights_per_step);
  checkpoint — the names in Kyutai's released files, which predate that split: the per-step
               projections stacked step-major under `self_attn.in_proj_weight` and
               `self_attn.out_proj.weight`. duplex's tensor tables must equal this form.
The mapping (RENAMES below) is checked here explicitly: a fresh meta model accepts the
checkpoint form through Kyutai's own `load_state_dict(strict=True)` (its `_load_hook` splits the
stacked names again), and the round trip gives back exactly the state_dict's names and shapes.

Writes Tests/DuplexCoreTests/Fixtures/tensor_names.json.
"""
import copy
import json
import os
import re

import torch

from moshi.models import loaders
from moshi.models.compression import MimiModel
from moshi.models.lm import LMModel
from moshi.modules import transformer as kt
from moshi.modules.seanet import SEANetDecoder, SEANetEncoder
from moshi.quantization import SplitResidualVectorQuantizer

from lm_reference import CONFIGS as LM_CONFIGS
from mimi_reference import TINY_CONFIG as MIMI_TINY

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "Tests", "DuplexCoreTests", "Fixtures", "tensor_names.json")

# state_dict name pattern -> checkpoint name; group 1 is the attention prefix, group 2 the step.
RENAMES = [
    (r"^(.*self_attn\.)in_projs\.(\d+)\.weight$", r"\1in_proj_weight"),
    (r"^(.*self_attn\.)out_projs\.(\d+)\.weight$", r"\1out_proj.weight"),
]


def to_checkpoint_form(state_shapes):
    """{state_dict name: shape} -> {checkpoint name: shape}: per-step projections stacked on axis 0
    in step order; every other name unchanged."""
    out, stacked = {}, {}
    for name, shape in state_shapes.items():
        for pattern, target in RENAMES:
            m = re.match(pattern, name)
            if m:
                stacked.setdefault(m.expand(target), {})[int(m.group(2))] = shape
                break
        else:
            out[name] = shape
    for target, parts in stacked.items():
        steps = sorted(parts)
        assert steps == list(range(len(steps))), f"{target}: steps {steps}"
        assert all(parts[s][1:] == parts[0][1:] for s in steps), f"{target}: unequal step shapes"
        out[target] = [sum(parts[s][0] for s in steps)] + parts[0][1:]
    return out


def shapes(model):
    return {name: list(t.shape) for name, t in model.state_dict().items()}


def check_round_trip(build, state_shapes, checkpoint_shapes):
    """Kyutai's loader (strict) accepts the checkpoint form, and splits it back into the state_dict form."""
    model = build()
    dtypes = {n: t.dtype for n, t in model.state_dict().items()}
    def dtype_of(name):
        if name in dtypes:
            return dtypes[name]
        return next(d for n, d in dtypes.items() if n.startswith(name.rsplit("_proj", 1)[0]))
    fake = {n: torch.empty(s, dtype=dtype_of(n), device="meta") for n, s in checkpoint_shapes.items()}
    model.load_state_dict(fake, strict=True, assign=True)
    assert shapes(model) == state_shapes, "checkpoint form does not load back into the module's shapes"


def mimi_build(config, codebooks):
    def build():
        with torch.device("meta"):
            encoder = SEANetEncoder(**config["seanet"])
            decoder = SEANetDecoder(**config["seanet"])
            enc_tr = kt.ProjectedTransformer(device="meta", **config["transformer"])
            dec_tr = kt.ProjectedTransformer(device="meta", **config["transformer"])
            quantizer = SplitResidualVectorQuantizer(**config["quantizer"])
            model = MimiModel(encoder, decoder, quantizer, channels=config["channels"],
                              sample_rate=config["sample_rate"], frame_rate=config["frame_rate"],
                              encoder_frame_rate=config["sample_rate"] / encoder.hop_length, causal=True,
                              resample_method="conv", encoder_transformer=enc_tr, decoder_transformer=dec_tr)
        model.set_num_codebooks(codebooks)
        return model
    return build


def lm_build(config):
    def build():
        with torch.device("meta"):
            return LMModel(**config)
    return build


def default_lm_config():
    """The embedded default model's LM: its config.json minus duplex's own keys and file names."""
    with open(os.path.join(ROOT, "models", "default", "config.json")) as f:
        config = json.load(f)
    for key in ("duplex", "model_type", "mimi_name", "moshi_name", "tokenizer_name", "lm_gen_config"):
        config.pop(key, None)
    return config


def entry(model, config, build, **extra):
    state = shapes(build())
    checkpoint = to_checkpoint_form(state)
    check_round_trip(build, state, checkpoint)
    renamed = sorted(n for n in state if n not in checkpoint)
    print(f"  {model}: {len(state)} state_dict tensors, {len(checkpoint)} in the checkpoint form"
          f" ({len(renamed)} per-step projections stacked)")
    return dict(model=model, config=config, state_dict=state, checkpoint=checkpoint, **extra)


def generate(save):
    import moshi

    entries = {}
    for name, config, codebooks in [("mimi_tiny", MIMI_TINY, 8), ("mimi_released_q8", loaders._mimi_config, 8),
                                    ("mimi_released_q32", loaders._mimi_config, 32)]:
        entries[name] = entry("mimi", copy.deepcopy(config), mimi_build(config, codebooks), codebooks=codebooks)
    for name, config in [("lm_tiny", LM_CONFIGS["tiny"]), ("lm_default", default_lm_config()),
                         ("lm_moshiko_7b", LM_CONFIGS["7b"])]:
        entries[name] = entry("lm", copy.deepcopy(config), lm_build(config))
    # Kyutai's loader builds Mimi with all 32 levels whatever the active count: same names.
    assert entries["mimi_released_q8"]["checkpoint"] == entries["mimi_released_q32"]["checkpoint"]
    document = {
        "format_version": "1",
        "generator": "tools/reference/make_fixtures.py names",
        "moshi_version": moshi.__version__,
        "torch_version": torch.__version__,
        "renames": [{"state_dict": p, "checkpoint": t, "stacked_on_axis_0_by_step": True} for p, t in RENAMES],
        "entries": entries,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(document, f, indent=None, sort_keys=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(OUT, ROOT)} ({os.path.getsize(OUT) / 1024:.0f} KiB, {len(entries)} configs)")
