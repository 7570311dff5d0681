"""Moshi's inner monologue for one dialogue's system stream (issue 15).

`monologue_tokens(words, n_frames, sp)` → int32 [n_frames], NOT delayed (the LM recipe applies
Moshi's delays):
  * PAD (3) everywhere nothing is said;
  * each word's SentencePiece tokens (`sp.encode(word)`, the word as written in the reply, with its
    punctuation: "twelve." → ▁twelve .) from frame floor(start × 12.5) on, one token per frame;
  * a word whose frame is still occupied by the previous word's tokens is pushed later, to the first
    free frame;
  * EPAD (0) in the frame just before a word's first token when that frame would otherwise be PAD
    (not before a word that follows the previous one's tokens directly, not at frame -1);
  * tokens past the last frame are dropped.
`words`: [{"word": str, "start": seconds, ...}] (a dialogue's system turns' words, any order).
`sp`: a sentencepiece.SentencePieceProcessor (or anything with encode(str) -> list[int]).
"""
from __future__ import annotations

import math

import numpy as np

PAD = 3
EPAD = 0
FRAME_RATE = 12.5


def monologue_tokens(words, n_frames: int, sp, frame_rate: float = FRAME_RATE) -> np.ndarray:
    text = np.full(int(n_frames), PAD, dtype=np.int32)
    free = 0                                   # first frame not taken by a previous word's tokens
    for w in sorted(words, key=lambda w: float(w["start"])):
        toks = list(sp.encode(w["word"].strip()))
        if not toks:
            continue
        f = max(int(math.floor(float(w["start"]) * frame_rate + 1e-9)), free)
        if f >= n_frames:
            break
        if f >= 1 and text[f - 1] == PAD:
            text[f - 1] = EPAD
        for k, t in enumerate(toks):
            if f + k < n_frames:
                text[f + k] = int(t)
        free = f + len(toks)
    return text


def words_of(record: dict) -> list[dict]:
    """All system words of a dialogues.jsonl record, in time order."""
    out = []
    for t in record["turns"]:
        if t["speaker"] == "system":
            out += t.get("words") or []
    return sorted(out, key=lambda w: w["start"])
