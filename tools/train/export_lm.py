#!/usr/bin/env python3
"""Exports an LM training checkpoint (train_lm.py's ckpt_*.pt) as a model folder's LM:
OUT/model.safetensors under Kyutai's released names (attention projections stacked as
`self_attn.in_proj_weight` / `self_attn.out_proj.weight`, everything else the modules' names;
bf16 with --bf16, else f32) and OUT/config.json: the base config (models/default/config.json)
with the checkpoint's LM keys, `duplex.random_weights_seed` removed (so duplex reads the file)
and `duplex.training` added (step, data, recipe, eval figures; no machine paths). --mimi copies a
trained codec in under the config's `mimi_name`; the tokenizer beside the base config is copied
when OUT has none.

Checks, any failure exits non-zero: every name and shape against the layout Kyutai's loader
builds for the config (meta device); the file reloaded by moshi's `loaders.get_moshi_lm(file,
lm_kwargs=config.json minus repository keys)` (a strict load_state_dict); its logits on a batch of
codes against the checkpoint's model (identical for f32; for bf16 against the checkpoint's weights
rounded to bf16, identical too).
"""
import argparse
import datetime
import json
import math
import os
import shutil
import sys

import numpy as np
import moshi
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm_arch  # noqa: E402
from train_common import sha256  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="train_lm.py checkpoint (.pt)")
    p.add_argument("-o", "--out", required=True, help="model folder to write (model.safetensors, config.json)")
    p.add_argument("--base-config", default=lm_arch.DEFAULT_CONFIG, help="config.json the folder's config starts from")
    p.add_argument("--bf16", action="store_true", help="weights in bf16 (the released files' dtype); default f32")
    p.add_argument("--mimi", help="codec .safetensors to copy in as the config's mimi_name")
    p.add_argument("--tokenizer", help="SentencePiece model to copy in as the config's tokenizer_name "
                   "(default: the one training used, recorded in the checkpoint, else the base config's)")
    p.add_argument("--note", help="replace duplex.note")
    p.add_argument("--check-frames", type=int, default=40, help="frames of the logits check")
    return p.parse_args(argv)


def training_facts(ckpt, dtype_name):
    a = ckpt.get("args", {})
    # no NaN in config.json: JSON has none (Swift's JSONSerialization refuses the file)
    ev = {k: (round(v, 5) if math.isfinite(v) else None) if isinstance(v, float) else v
          for k, v in (ckpt.get("eval") or {}).items()}
    frames_seen = int(ckpt["step"]) * int(a.get("batch_size", 0)) * int(a.get("frames", 0))
    return {
        "recipe": "tools/train/train_lm.py",
        "step": int(ckpt["step"]),
        "train_minutes": round(float(ckpt.get("train_seconds", 0.0)) / 60, 1),
        "frames_seen": frames_seen,
        "data_dialogues": ckpt.get("data_dialogues"),
        "data_hours": round(ckpt.get("data_frames", 0) / 12.5 / 3600, 2),
        "data": os.path.basename(os.path.normpath(a["data"])) if a.get("data") else None,
        "batch_size": a.get("batch_size"), "frames": a.get("frames"), "start_fraction": a.get("start_fraction"),
        "lr": a.get("lr"), "warmup_steps": a.get("warmup_steps"), "schedule": a.get("schedule"),
        "steps_horizon": a.get("steps"), "weight_decay": a.get("weight_decay"),
        "text_pad_weight": a.get("text_pad_weight"),
        "text_epad_weight": a.get("text_pad_weight") if a.get("text_epad_weight") is None else a.get("text_epad_weight"),
        "semantic_weight": a.get("semantic_weight"), "seed": a.get("seed"),
        "device": a.get("device"), "bf16_autocast": bool(a.get("bf16")),
        "eval": ev,
        "tokenizer_sha256": ckpt.get("tokenizer_sha256"),
        "codec_sha256": ((ckpt.get("data_manifest") or {}).get("codec") or {}).get("sha256"),
        "data_generator": (ckpt.get("data_manifest") or {}).get("generator"),
        "weights_dtype": dtype_name,
        "exported": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "moshi": moshi.__version__,
    }


def folder_config(base_raw, lm_kwargs, ckpt, dtype_name, note=None):
    cfg = json.loads(json.dumps(base_raw))
    for k, v in lm_kwargs.items():
        cfg[k] = v
    duplex = cfg.setdefault("duplex", {})
    duplex.pop("random_weights_seed", None)
    duplex["training"] = training_facts(ckpt, dtype_name)
    if note is not None:
        duplex["note"] = note
    elif "note" in duplex and "made-up weights" in duplex["note"]:
        duplex["note"] = ("The embedded default model: Moshi's structure (Mimi at half width and half depth, 8 codebooks "
                          "of 2048; a small temporal transformer and depformer), its LM trained here on synthetic "
                          "dialogues (duplex.training; tools/train/README.md).")
    return cfg


def export(checkpoint, out, base_config=lm_arch.DEFAULT_CONFIG, bf16=False, mimi=None, note=None, check_frames=40,
           tokenizer=None, log=print):
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    lm_kwargs = ckpt["lm_kwargs"]
    base_raw, _ = lm_arch.read_config(base_config)
    model = lm_arch.build_lm(lm_kwargs)
    model.load_state_dict(ckpt["model"], strict=True)
    model.eval()
    dtype = torch.bfloat16 if bf16 else torch.float32
    dtype_name = "bf16" if bf16 else "f32"
    tensors = {k: v.to(dtype) if v.dtype.is_floating_point else v for k, v in lm_arch.kyutai_state(model).items()}
    missing, misshaped, extra = lm_arch.check_names(tensors, lm_kwargs)
    if missing or misshaped or extra:
        raise SystemExit(f"names: missing {missing[:5]}, misshaped {misshaped[:5]}, extra {extra[:5]}")
    os.makedirs(out, exist_ok=True)
    cfg = folder_config(base_raw, lm_kwargs, ckpt, dtype_name, note)
    weights_name = cfg.get("moshi_name", "model.safetensors")
    path = os.path.join(out, weights_name)
    meta = {"format": "pt", "generator": "tools/train/export_lm.py", "step": str(ckpt["step"])}
    save_file(tensors, path + ".partial", metadata=meta)
    os.replace(path + ".partial", path)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, allow_nan=False)
        f.write("\n")
    base_dir = os.path.dirname(os.path.abspath(base_config))
    tok = cfg.get("tokenizer_name", "tokenizer.model")
    src = tokenizer or ckpt.get("tokenizer")
    if not src or not os.path.exists(src):
        src = os.path.join(base_dir, tok)
    if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(out, tok)):
        shutil.copyfile(src, os.path.join(out, tok))
        if ckpt.get("tokenizer_sha256") and sha256(src) != ckpt["tokenizer_sha256"]:
            log(f"warning: {src} is not the tokenizer training used (sha256 {ckpt['tokenizer_sha256'][:12]}…)")
        base_tok = os.path.join(base_dir, tok)
        if os.path.exists(base_tok) and sha256(base_tok) != sha256(src):
            log(f"note: the tokenizer differs from {base_tok}: ship {tok} from {out} with the weights")
    if mimi:
        shutil.copyfile(mimi, os.path.join(out, cfg.get("mimi_name", "mimi.safetensors")))
    log(f"wrote {path} ({len(tensors)} tensors, {os.path.getsize(path) / 2**20:.1f} MiB, {dtype_name}; "
        f"names and shapes = Kyutai's layout) and config.json (step {ckpt['step']})")

    # Back through Kyutai's loader, strictly, and the same logits as the checkpoint's model.
    from moshi.models import loaders
    _, kwargs_back = lm_arch.read_config(os.path.join(out, "config.json"))
    if kwargs_back != lm_kwargs:
        raise SystemExit("config.json's LM keys differ from the checkpoint's")
    back = loaders.get_moshi_lm(path, lm_kwargs=dict(kwargs_back), device="cpu", dtype=torch.float32).eval()
    ref = model
    if bf16:
        ref = lm_arch.build_lm(lm_kwargs)
        ref.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in ckpt["model"].items()}, strict=True)
        ref.eval()
    g = np.random.default_rng(0)
    T = check_frames
    codes = np.zeros((2, 17, T), np.int64)
    codes[:, 0] = g.integers(0, lm_kwargs["text_card"], (2, T))
    codes[:, 1:] = g.integers(0, lm_kwargs["card"], (2, 16, T))
    x = torch.from_numpy(codes)
    with torch.no_grad():
        a, b = ref(x), back(x)
    same = all(torch.equal(torch.nan_to_num(p), torch.nan_to_num(q)) for p, q in
               ((a.text_logits, b.text_logits), (a.logits, b.logits)))
    diff = max(float((torch.nan_to_num(p) - torch.nan_to_num(q)).abs().max()) for p, q in
               ((a.text_logits, b.text_logits), (a.logits, b.logits)))
    if not same:
        raise SystemExit(f"reloaded model's logits differ from the checkpoint's (max |Δ| {diff:.3g})")
    log(f"reloaded with moshi loaders.get_moshi_lm (strict): logits identical to the checkpoint's "
        f"({'bf16-rounded ' if bf16 else ''}f32 model) on 2 × {T} frames; sha256 {sha256(path)[:16]}…")
    return path, cfg


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))
    export(args.checkpoint, args.out, args.base_config, args.bf16, args.mimi, args.note, args.check_frames, args.tokenizer)


if __name__ == "__main__":
    main()
