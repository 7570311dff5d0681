#!/usr/bin/env python3
"""Trains the tiny SentencePiece models the Swift tokenizer is tested against, with the Python
`sentencepiece` package, on the committed corpus tools/reference/tokenizer_corpus.txt.

Usage:  "$(tools/reference/setup_venv.sh)" tools/reference/train_tokenizer.py

Writes Tests/DuplexCoreTests/Fixtures/<name>.model for every entry of MODELS. Training is
single-threaded, unshuffled and seeded, so the same package version gives the same files.
The three models cover the code paths of the Swift reader between them:
  tokenizer_tiny        unigram, nmt_nfkc (the default rule set, as a precompiled charsmap),
                        user-defined and control symbols, unknown characters -> <unk>
  tokenizer_tiny_bytes  unigram, identity normalisation, byte fallback, extra whitespace kept
  tokenizer_tiny_suffix unigram, identity, whitespace as a suffix, no dummy prefix
Ids 0..3 are <unk> <s> </s> <pad> in all three, as in Moshi's text vocabulary (0 and 3 are the ids
Moshi's display skips).
"""
import io
import os

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "Tests", "DuplexCoreTests", "Fixtures")
CORPUS = os.path.join(HERE, "tokenizer_corpus.txt")
SEED = 20240917

COMMON = dict(
    model_type="unigram",
    unk_id=0, bos_id=1, eos_id=2, pad_id=3,
    num_threads=1,
    shuffle_input_sentence=False,
    input_sentence_size=0,
    hard_vocab_limit=False,
    max_sentencepiece_length=8,
)

MODELS = {
    "tokenizer_tiny": dict(
        vocab_size=500,
        normalization_rule_name="nmt_nfkc",
        character_coverage=0.98,
        user_defined_symbols=["<laugh>", "[music]"],
        control_symbols=["<sep>"],
    ),
    "tokenizer_tiny_bytes": dict(
        vocab_size=800,
        normalization_rule_name="identity",
        character_coverage=0.98,
        byte_fallback=True,
        remove_extra_whitespaces=False,
    ),
    "tokenizer_tiny_suffix": dict(
        vocab_size=500,
        normalization_rule_name="identity",
        character_coverage=0.98,
        treat_whitespace_as_suffix=True,
        add_dummy_prefix=False,
    ),
}


def corpus_lines():
    with open(CORPUS, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def train(name):
    """Trains MODELS[name] and returns the path of the written .model file."""
    spm.set_random_generator_seed(SEED)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()), model_writer=model,
        minloglevel=2, **COMMON, **MODELS[name])
    os.makedirs(FIXTURES, exist_ok=True)
    path = os.path.join(FIXTURES, name + ".model")
    with open(path, "wb") as f:
        f.write(model.getvalue())
    print(f"wrote {os.path.relpath(path, ROOT)} ({len(model.getvalue()) / 1024:.1f} KiB)")
    return path


def main():
    for name in MODELS:
        train(name)


if __name__ == "__main__":
    main()
