#!/usr/bin/env python3
"""Writes a tiny, randomly initialised Moshi (Mimi + LM + SentencePiece tokenizer + config.json)
that Kyutai's own `moshi.server` (moshi==0.2.13) loads from local files, so interop with their
server can be checked on a CPU without any download.

Same architectures as the released model, shrunk: Mimi with 8 SEANet filters and a 1-layer
32-wide transformer, an LM of 2 layers × 64 wide with a 1-layer depformer, a 48-piece tokenizer
trained on a few sentences. Seeded, so the files are the same every run.

Run with the reference venv:  tools/reference/.venv/bin/python tools/interop/make_tiny_moshi.py OUTDIR
"""
import copy
import json
import sys
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
from reference_common import randomize_, to_checkpoint_names  # noqa: E402

from moshi.models import loaders  # noqa: E402

SEED = 20240917
CODEBOOK_BINS = 256


def mimi_config() -> dict:
    cfg = copy.deepcopy(loaders._mimi_config)
    dim = 32
    cfg["seanet"].update(n_filters=8, dimension=dim)
    cfg["quantizer"].update(dimension=16, n_q=8, bins=CODEBOOK_BINS, input_dimension=dim, output_dimension=dim)
    cfg["transformer"].update(d_model=dim, num_heads=2, num_layers=1, dim_feedforward=64, context=25,
                              input_dimension=dim, output_dimensions=[dim])
    return cfg


def train_tokenizer(out: Path, vocab: int) -> None:
    sentences = [
        "hello there how are you doing today", "i am fine thank you and you", "what a nice day it is",
        "let us talk about the weather", "the quick brown fox jumps over the lazy dog",
        "speech in and speech out at the same time", "one frame in one frame out forever",
    ] * 20
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(sentences) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=vocab,
                                   model_type="unigram", character_coverage=1.0, bos_id=-1, eos_id=-1,
                                   unk_id=0, pad_id=3, user_defined_symbols=["<epad>", "<x>"],
                                   minloglevel=2)
    corpus.unlink()


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tools/interop/out/tiny-moshi").resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    vocab = 48
    train_tokenizer(out, vocab)

    mcfg = mimi_config()
    (out / "mimi_config.json").write_text(json.dumps(mcfg, indent=1))
    mimi = loaders.get_mimi(None, mcfg, device="cpu", num_codebooks=8)
    randomize_(mimi, SEED)
    save_file({k: v.detach().float().contiguous() for k, v in mimi.state_dict().items()}, str(out / "mimi.safetensors"))

    lm_kwargs = dict(loaders._lm_kwargs)
    lm_kwargs.update(dim=64, text_card=vocab, card=CODEBOOK_BINS, num_heads=4, num_layers=2, hidden_scale=2, context=100,
                     depformer_dim=32, depformer_dim_feedforward=64, depformer_num_heads=2, depformer_num_layers=1)
    lm = loaders.get_moshi_lm(None, lm_kwargs=lm_kwargs, device="cpu", dtype=torch.float32)
    randomize_(lm, SEED + 1)
    save_file(to_checkpoint_names(lm.state_dict()), str(out / "moshi.safetensors"))

    config = dict(lm_kwargs)
    config.update(model_type="moshi", moshi_name="moshi.safetensors",
                  mimi_name="file://" + str(out / "mimi.safetensors"),
                  mimi_config_name="file://" + str(out / "mimi_config.json"),
                  tokenizer_name="file://" + str(out / "tokenizer.model"))
    (out / "config.json").write_text(json.dumps(config, indent=1))
    print(out)


if __name__ == "__main__":
    with torch.no_grad():
        main()
