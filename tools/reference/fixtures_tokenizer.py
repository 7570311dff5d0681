"""SentencePiece reference cases: trains the tiny models (train_tokenizer.py) and records what the
Python `sentencepiece` package does with them, as JSON next to each model.

For every model in train_tokenizer.MODELS, writes Fixtures/<model>_cases.json with
  pieces     id -> piece string and type (normal/unknown/control/user_defined/unused/byte)
  encode     sentence -> normalized text and ids, for every test sentence
  decode     ids -> text: the ids of every test sentence, then random id sequences over the whole
             vocabulary (control, unknown and byte pieces included, so invalid UTF-8 byte runs too)
  stream     a text stream as Moshi's LM emits it (the ids of a sentence with EPAD 0 and PAD 3
             sprinkled in) and the text Kyutai's Rust backend shows per token (stream_both.rs
             `text`: decode [previous, current] minus decode [previous]), null where it shows none
The test sentences are tools/reference/tokenizer_test_sentences.txt (hand-written, none of them in
the training corpus; \\uXXXX, \\UXXXXXXXX, \\t, \\n, \\r escapes are expanded) plus sentences drawn
with a fixed seed from words and from character pools most of which the models never saw, runs of
repeated strings (exact score ties) and a long text (path scores past the library's ±1e5
rebasing).
Safetensors cannot hold strings, hence JSON; it carries the same version tags as the other fixtures.
"""
import json
import os
import random
import re

import sentencepiece as spm

import train_tokenizer

SEED = 4242
FORMAT_VERSION = "1"
MAX_BYTES = 2 * 1024 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
SENTENCES = os.path.join(HERE, "tokenizer_test_sentences.txt")
GENERATED_SENTENCES = 240
RANDOM_DECODES = 120
STREAMS = 150

_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[tnr])")


def _unescape(line):
    def repl(m):
        code = m.group(1)
        if code in ("t", "n", "r"):
            return {"t": "\t", "n": "\n", "r": "\r"}[code]
        return chr(int(code[1:], 16))
    return _ESCAPE.sub(repl, line)


def hand_written_sentences():
    with open(SENTENCES, encoding="utf-8") as f:
        return [_unescape(line.rstrip("\n")) for line in f]


# Character pools for drawn sentences: (first, last) code point ranges.
POOLS = [
    (0x20, 0x7E),        # ASCII
    (0xA0, 0xFF),        # Latin-1 supplement (NBSP, ª, ², ¼ … compatibility-decomposable)
    (0x100, 0x17F),      # Latin extended-A (ĳ, ŉ, ſ)
    (0x300, 0x36F),      # combining marks
    (0x370, 0x3FF),      # Greek
    (0x400, 0x4FF),      # Cyrillic
    (0x2000, 0x206F),    # general punctuation: odd spaces, zero-width, dashes
    (0x2150, 0x218F),    # number forms, Roman numerals
    (0x2460, 0x24FF),    # enclosed alphanumerics
    (0x3000, 0x303F),    # CJK punctuation, ideographic space
    (0x3300, 0x33FF),    # CJK squared compatibility words
    (0x4E00, 0x9FFF),    # CJK unified ideographs (mostly unknown to the models)
    (0xAC00, 0xD7A3),    # Hangul syllables
    (0xFB00, 0xFB06),    # Latin ligatures
    (0xFF01, 0xFF9F),    # full- and half-width forms
    (0x1D400, 0x1D7FF),  # mathematical alphanumerics
    (0x1F300, 0x1F6FF),  # emoji
    (0x0, 0x1F),         # C0 controls
    (0x7F, 0x9F),        # DEL and C1 controls
]
SEPARATORS = [" ", " ", " ", "  ", "   ", "\t", "\u3000", "\u00a0", "", "\u2581", " \n "]
SPECIALS = ["<laugh>", "[music]", "<sep>", "<unk>", "<s>", "</s>", "<pad>", "▁", "<0x41>"]


# Runs of one short string: where the Viterbi meets exact ties ("." + "......" = "......" + ".").
RUNS = [".", "-", "!", "?", "a", "ab", "la", "ha", "=", "*", "_", "~", "ä", "ß", "の", "0", "00", " .", "▁"]
TIE_SENTENCES = 60


def tie_sentences(rng, words):
    out = []
    for _ in range(TIE_SENTENCES):
        parts = []
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.6:
                parts.append(rng.choice(RUNS) * rng.randint(2, 40))
            else:
                parts.append(rng.choice(words))
            parts.append(rng.choice(["", " ", " "]))
        out.append("".join(parts))
    return out


def long_sentences(rng, words):
    """6000 unknown characters (score min - 10 each) push path scores past -1e5, where the library
    rebases them; the words after them then round differently than without the rebase."""
    rare = [chr(c) for c in range(0x5000, 0x6000)]
    unknown = "".join(rng.choice(rare) for _ in range(6000))
    return [unknown + " " + " ".join(rng.choice(words) for _ in range(500))]


def drawn_sentences(rng, words):
    out = []
    for _ in range(GENERATED_SENTENCES):
        parts = []
        for _ in range(rng.randint(1, 9)):
            r = rng.random()
            if r < 0.55:
                parts.append(rng.choice(words))
            elif r < 0.65:
                parts.append(rng.choice(SPECIALS))
            elif r < 0.75:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 7))))
            else:
                lo, hi = rng.choice(POOLS)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 4))))
            parts.append(rng.choice(SEPARATORS))
        if rng.random() < 0.7:
            parts.pop()
        out.append("".join(parts))
    return out


# Moshi's text-stream conventions (spec section 5).
EPAD, PAD, START = 0, 3, 32000


def rust_backend_texts(sp, stream):
    """stream_both.rs AppStateInner::text over a stream, with sentencepiece's decode."""
    out, prev = [], START
    for tok in stream:
        if tok in (START, PAD, EPAD):
            out.append(None)
        elif prev == START:
            out.append(sp.decode([tok]))
        else:
            alone = sp.decode([prev]).encode("utf-8")
            pair = sp.decode([prev, tok]).encode("utf-8")
            out.append(pair[len(alone):].decode("utf-8", errors="replace") if len(pair) > len(alone) else "")
        prev = tok
    return out


def with_pads(rng, ids):
    stream = []
    for i in ids:
        while rng.random() < 0.3:
            stream.append(rng.choice([PAD, PAD, EPAD]))
        stream.append(i)
    return stream


PIECE_TYPES = ["normal", "unknown", "control", "user_defined", "unused", "byte"]


def piece_type(sp, i):
    if sp.is_unknown(i):
        return "unknown"
    if sp.is_control(i):
        return "control"
    if sp.is_byte(i):
        return "byte"
    if sp.is_unused(i):
        return "unused"
    return None  # normal or user-defined: told apart below


def dumps_one_case_per_line(cases):
    """Compact JSON, one list element per line, so diffs stay readable and the file small."""
    def dump(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    lines = ["{"]
    items = list(cases.items())
    for k, (key, value) in enumerate(items):
        comma = "," if k < len(items) - 1 else ""
        if isinstance(value, list):
            body = ",\n".join(dump(v) for v in value)
            lines.append(f"{dump(key)}:[\n{body}\n]{comma}")
        else:
            lines.append(f"{dump(key)}:{dump(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def generate(save):
    del save  # JSON, not safetensors: see the module docstring
    import moshi

    hand = hand_written_sentences()
    words = sorted({w for s in hand for w in s.split()})
    rng = random.Random(SEED)
    sentences = hand + drawn_sentences(rng, words) + tie_sentences(rng, words) + long_sentences(rng, words)
    for name in train_tokenizer.MODELS:
        path = train_tokenizer.train(name)
        sp = spm.SentencePieceProcessor(model_file=path)
        user_defined = set(train_tokenizer.MODELS[name].get("user_defined_symbols", []))
        pieces = []
        for i in range(sp.get_piece_size()):
            piece = sp.id_to_piece(i)
            kind = piece_type(sp, i) or ("user_defined" if piece in user_defined else "normal")
            pieces.append({"piece": piece, "type": kind})
        encode = [{"text": s, "normalized": sp.normalize(s), "ids": sp.encode(s)} for s in sentences]
        rng = random.Random(SEED + 1)
        decode = [{"ids": e["ids"], "text": sp.decode(e["ids"])} for e in encode if len(e["ids"]) < 2000]
        for _ in range(RANDOM_DECODES):
            ids = [rng.randrange(sp.get_piece_size()) for _ in range(rng.randint(1, 12))]
            decode.append({"ids": ids, "text": sp.decode(ids)})
        stream = []
        for e in encode[:STREAMS]:
            ids = with_pads(rng, e["ids"])
            stream.append({"ids": ids, "texts": rust_backend_texts(sp, ids)})
        cases = {
            "format_version": FORMAT_VERSION,
            "generator": "tools/reference/make_fixtures.py tokenizer",
            "sentencepiece_version": spm.__version__,
            "moshi_version": moshi.__version__,
            "seed": SEED,
            "model": os.path.basename(path),
            "pieces": pieces,
            "encode": encode,
            "decode": decode,
            "stream": stream,
        }
        out = os.path.join(os.path.dirname(path), name + "_cases.json")
        with open(out, "w", encoding="utf-8") as f:
            f.write(dumps_one_case_per_line(cases))
        size = os.path.getsize(out)
        assert size < MAX_BYTES, f"{out} is {size} bytes: fixtures must stay under 2 MB"
        n_unk = sum(sp.unk_id() in e["ids"] for e in encode)
        print(f"wrote {os.path.basename(out)} ({size / 1024:.0f} KiB): {len(encode)} sentences "
              f"({n_unk} with unknown characters), {len(decode)} decodes")
