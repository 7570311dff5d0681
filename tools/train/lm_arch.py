"""The default model's Moshi LM, built from moshi 0.2.13's own classes, and what training, export and
the greedy reference share: the config (a model folder's config.json minus the repository keys
Kyutai's `CheckpointInfo` pops and duplex's own `duplex` object), the builder (exactly
`loaders.get_moshi_lm(None, lm_kwargs=...)`), the 17-stream layout, the conversion of the module
state dict to the names Kyutai's released checkpoints use, the check of a tensor set against that
layout, and loading a training checkpoint or an exported file.

Streams in LM order (moshi-spec 3.7): 0 = text (inner monologue), 1..8 = the system's Mimi
codebooks 0..7 (what the model generates: dep_q 8), 9..16 = the user's codebooks 0..7 (input only).
Text ids: PAD 3, EPAD 0 (`existing_text_padding_id`, `existing_text_end_padding_id`); the initial
tokens are text_card (text) and card (audio); -1 (`zero_token_id`) is "no input" (zero embedding)
and is excluded from the loss by LMModel.forward's masks.
"""
import copy
import json
import os
import sys

import numpy as np
import torch

from moshi.models import loaders
from moshi.models.lm import LMModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_common import stack_attention  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_CONFIG = os.path.join(REPO, "models", "default", "config.json")

# Keys of a Kyutai repository's config.json that CheckpointInfo.from_hf_repo pops before the rest
# goes to LMModel as keyword arguments, plus duplex's own object.
REPO_KEYS = ("moshi_name", "mimi_name", "mimi_config_name", "tokenizer_name", "lora_name", "model_type",
             "lm_gen_config", "tts_config", "stt_config", "model_id", "duplex")

PAD, EPAD = 3, 0
ZERO = -1  # LMModel.zero_token_id


def read_config(path=DEFAULT_CONFIG):
    """(raw config.json dict, LM kwargs): the kwargs are what `CheckpointInfo.get_moshi` hands to
    `get_moshi_lm` for that file, with the `duplex` key dropped too."""
    with open(path) as f:
        raw = json.load(f)
    return raw, lm_kwargs_of(raw)


def lm_kwargs_of(raw):
    return {k: copy.deepcopy(v) for k, v in raw.items() if k not in REPO_KEYS}


def build_lm(lm_kwargs, device="cpu", dtype=torch.float32):
    """LMModel exactly as `loaders.get_moshi_lm(None, lm_kwargs=...)` builds it (same kwargs
    handling, moshi's own initialisation from the current torch seed), in `dtype` on `device`.
    Returned in eval mode, as the loader returns it."""
    return loaders.get_moshi_lm(None, lm_kwargs=dict(lm_kwargs), device=device, dtype=dtype)


def stack_streams(user, system, text):
    """[17, T] int64 in LM order from one codes npz's arrays: user int16 [8, T], system int16 [8, T],
    text int32 [T]."""
    user, system, text = np.asarray(user), np.asarray(system), np.asarray(text)
    T = text.shape[-1]
    if user.shape != (8, T) or system.shape != (8, T):
        raise ValueError(f"codes shapes user {user.shape}, system {system.shape}, text {text.shape}: need [8, T], [8, T], [T]")
    return np.concatenate([text[None].astype(np.int64), system.astype(np.int64), user.astype(np.int64)], axis=0)


def load_codes(path):
    with np.load(path) as z:
        return stack_streams(z["user"], z["system"], z["text"])


# ---------------------------------------------------------------- Kyutai's names

def kyutai_state(model):
    """The module state dict under the released checkpoints' names: `self_attn.in_projs.{i}.weight`
    / `out_projs.{i}.weight` (one per weight set: 1 for the temporal transformer, dep_q for the
    depformer with weights per step) stacked step-major as `self_attn.in_proj_weight` /
    `self_attn.out_proj.weight`, which StreamingMultiheadAttention's load hook splits back. All
    other names are the modules' own, in the state dict's order. Detached CPU tensors in the model's
    dtype."""
    out = stack_attention(model.state_dict(), lambda parts: torch.cat(parts, dim=0), keep_order=True)
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def kyutai_layout(lm_kwargs):
    """{name: shape} of the checkpoint Kyutai's loader expects for these kwargs (built on the meta
    device, no weights)."""
    with torch.device("meta"):
        model = LMModel(**lm_kwargs)
    return {k: list(v.shape) for k, v in kyutai_state_meta(model).items()}


def kyutai_state_meta(model):
    """kyutai_state's names and shapes for a model on the meta device (empty meta tensors)."""
    def empty(parts):
        return torch.empty([sum(p.shape[0] for p in parts)] + list(parts[0].shape[1:]), device="meta")

    return stack_attention(model.state_dict(), empty, keep_order=True)


def check_names(tensors, lm_kwargs):
    """(missing, misshaped, extra) of `tensors` (name -> tensor) against kyutai_layout(lm_kwargs)."""
    layout = kyutai_layout(lm_kwargs)
    missing = [n for n in layout if n not in tensors]
    misshaped = [(n, list(tensors[n].shape), s) for n, s in layout.items() if n in tensors and list(tensors[n].shape) != s]
    extra = [n for n in tensors if n not in layout]
    return missing, misshaped, extra


# ---------------------------------------------------------------- loading

def load_lm(path, device="cpu", dtype=torch.float32, config=None):
    """(model in eval mode, lm_kwargs) from a training checkpoint (.pt: its recorded kwargs and module
    state) or an exported .safetensors (through `loaders.get_moshi_lm`, which loads strictly; the
    config is `config`, else the config.json beside the file)."""
    if str(path).endswith(".safetensors"):
        cfg_path = config or os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
        _, kwargs = read_config(cfg_path)
        model = loaders.get_moshi_lm(str(path), lm_kwargs=dict(kwargs), device=device, dtype=dtype)
        return model.eval(), kwargs
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    kwargs = ckpt["lm_kwargs"]
    model = build_lm(kwargs, device="cpu", dtype=torch.float32)
    model.load_state_dict(ckpt["model"], strict=True)
    return model.to(device=device, dtype=dtype).eval(), kwargs
