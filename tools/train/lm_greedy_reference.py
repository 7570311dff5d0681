#!/usr/bin/env python3
"""Kyutai's PyTorch moshi, greedy, on a model folder and one dialogue: the reference for "duplex and
moshi generate the same greedy tokens on a held-out dialogue" (issue 15).

Loads FOLDER/model.safetensors with moshi 0.2.13's `loaders.get_moshi_lm` (strict; the config is
FOLDER/config.json minus the repository keys and `duplex`), computes in f32 on CPU, and runs
`LMGen(use_sampling=False, temp=0, temp_text=0, top_k=0, top_k_text=0)` over the dialogue's user
codes (the npz's `user` [8, T]), user frame t given to call t, exactly as
tools/reference/lm_reference.py's greedy_run does for the lm_tiny fixture.

Writes a safetensors file in the lm_tiny fixture's format (Tests/DuplexCoreTests/LMReferenceTests
reads it), without the weights (they are the folder's):
  fixture.user_codes    int32 [8, calls]          what call t is given (column t)
  fixture.returned      int32 [calls - 1, 9]      what calls 1.. returned (call 0 returns None):
                                                  text token, then the system's 8 Mimi codes
  fixture.text_logits   f32 [K, text_card]        text logits of the first K calls (--logit-calls)
  fixture.depth_logits  f32 [K, dep_q, card]      each depformer step's logits, first K calls
metadata: format_version, generator, moshi/torch versions, config (the LM kwargs as JSON), calls,
logit_calls, first_call_returns "None", model_sha256 (of the folder's model file), dialogue (the
npz's file name), monologue (the decoded greedy text, when the tokenizer is in the folder).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm_arch  # noqa: E402
from train_common import sha256  # noqa: E402

# tools/reference's lm_reference.py only defines things when imported (moshi and torch, both in
# this venv too): its greedy_run is the capture the lm_tiny fixture was made with.
sys.path.append(os.path.join(lm_arch.REPO, "tools", "reference"))
import lm_reference  # noqa: E402

FORMAT_VERSION = "1"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="model folder: model.safetensors (or the config's moshi_name) + config.json")
    p.add_argument("codes", help="a dialogue's codes .npz (user int16 [8, T])")
    p.add_argument("-o", "--out", required=True, help="fixture .safetensors to write")
    p.add_argument("--calls", type=int, default=0, help="run only the first N frames (0: the whole dialogue)")
    p.add_argument("--logit-calls", type=int, default=12, help="calls whose logits are recorded (keeps the file < 2 MB)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def load_folder_model(folder):
    from moshi.models import loaders
    raw, kwargs = lm_arch.read_config(os.path.join(folder, "config.json"))
    path = os.path.join(folder, raw.get("moshi_name", "model.safetensors"))
    model = loaders.get_moshi_lm(path, lm_kwargs=dict(kwargs), device="cpu", dtype=torch.float32).eval()
    return model, raw, kwargs, path


def greedy_run(model, user):
    """LMGen greedy over user codes [8, T]; returns (returned: per call the [9] frame or None, text
    logits [T, text_card], depth logits [T, dep_q, card]): tools/reference/lm_reference.py's
    greedy_run and its capture, on the greedy LMGen it builds (cfg_coef 1)."""
    gen = lm_reference.greedy_lmgen(model)
    r = lm_reference.greedy_run(gen, user)
    return r["returned"], r["text_logits"], r["depth_logits"]


def make_reference(folder, codes_path, out, calls=0, logit_calls=12, log=print):
    import moshi
    model, raw, kwargs, weights = load_folder_model(folder)
    with np.load(codes_path) as z:
        user = torch.from_numpy(np.asarray(z["user"]).astype(np.int64))
    if user.shape[0] != 8:
        raise SystemExit(f"{codes_path}: user codes {tuple(user.shape)}, need [8, T]")
    if calls:
        user = user[:, :calls]
    T = user.shape[1]
    returned, text_logits, depth_logits = greedy_run(model, user)
    assert returned[0] is None and all(r is not None for r in returned[1:])
    ret = torch.stack(returned[1:]).to(torch.int32)
    k = min(logit_calls, T)
    tensors = {
        "fixture.user_codes": user.to(torch.int32),
        "fixture.returned": ret,
        "fixture.text_logits": text_logits[:k].contiguous(),
        "fixture.depth_logits": depth_logits[:k].contiguous(),
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "generator": "tools/train/lm_greedy_reference.py",
        "moshi_version": moshi.__version__,
        "torch_version": torch.__version__,
        "config": json.dumps(kwargs),
        "calls": str(T),
        "logit_calls": str(k),
        "first_call_returns": "None",
        "model_sha256": sha256(weights),
        "dialogue": os.path.basename(codes_path),
    }
    tok = raw.get("tokenizer_name")
    text = ret[:, 0].tolist()
    if tok and os.path.exists(os.path.join(folder, tok)):
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(folder, tok))
        words = [t for t in text if t not in (lm_arch.PAD, lm_arch.EPAD) and 0 <= t < sp.get_piece_size()]
        meta["monologue"] = sp.decode(words)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file({k2: v.contiguous() for k2, v in tensors.items()}, out, metadata=meta)
    n_words = sum(t not in (lm_arch.PAD, lm_arch.EPAD) for t in text)
    log(f"wrote {out} ({os.path.getsize(out) / 1024:.0f} KiB): {T} calls, {n_words} non-PAD text tokens, "
        f"logits of {k} calls" + (f"; monologue: {meta['monologue']!r}" if "monologue" in meta else ""))
    return tensors, meta


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    make_reference(args.folder, args.codes, args.out, args.calls, args.logit_calls)


if __name__ == "__main__":
    main()
