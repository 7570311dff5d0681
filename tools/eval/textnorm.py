"""Text normalisation for WER/CER between a corpus's reference text and Whisper's transcripts.

Whisper writes "7 plus 5 is 12.", "9:30", "41st", "$5", "colour"; the corpus text says "seven plus
five is twelve.". Both sides go through `normalise` before jiwer compares them:

  * lower case; "&" → "and", "%" → "percent", "+" → "plus", "=" → "equals", "7 - 5" → "7 minus 5",
    "$N" → "N dollars"
  * digits → words: cardinals ("41" → "forty one", "2,000" → "two thousand", "3.5" → "three point
    five"), ordinals ("41st" → "forty first"), clock times ("9:30" → "nine thirty", "9:05" → "nine oh
    five", "9:00" → "nine o'clock" without the o'clock: "nine")
  * hyphens and slashes split words ("forty-one" → "forty one"); other punctuation is dropped,
    apostrophes inside words are kept ("don't")
  * a few spelling variants are folded (British → American, "okay"/"ok")
  * "and" between number words is dropped ("one hundred and five" → "one hundred five")

Only the standard library: it imports anywhere (make_corpus, the gate, the training recipe).
"""
from __future__ import annotations

import re

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")]
ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                 "nine": "ninth", "twelve": "twelfth"}


def number_words(n: int) -> str:
    """Cardinal in words, American style without "and": 105 → "one hundred five"."""
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return ONES[n]
    if n < 100:
        t, o = divmod(n, 10)
        return TENS[t] + ("" if o == 0 else " " + ONES[o])
    if n < 1000:
        h, r = divmod(n, 100)
        return ONES[h] + " hundred" + ("" if r == 0 else " " + number_words(r))
    for value, name in SCALES:
        if n >= value:
            q, r = divmod(n, value)
            return number_words(q) + " " + name + ("" if r == 0 else " " + number_words(r))
    raise AssertionError(n)


def ordinal_words(n: int) -> str:
    words = number_words(n).split()
    last = words[-1]
    if last in ORDINAL_WORDS:
        words[-1] = ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


SPELLING = {
    "colour": "color", "colours": "colors", "favourite": "favorite", "favour": "favor", "neighbour": "neighbor",
    "neighbours": "neighbors", "centre": "center", "theatre": "theater", "metre": "meter", "metres": "meters",
    "grey": "gray", "realise": "realize", "organise": "organize", "travelling": "traveling", "travelled": "traveled",
    "ok": "okay", "o.k.": "okay", "mum": "mom", "programme": "program", "cheque": "check", "tyre": "tire",
    "aeroplane": "airplane", "mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint",
}
NUMBER_WORDS = set(ONES) | set(TENS[2:]) | {"hundred", "thousand", "million", "billion", "trillion"}


def _clock(m: re.Match) -> str:
    h, mnt = int(m.group(1)), int(m.group(2))
    if mnt == 0:
        return f" {number_words(h)} "
    if mnt < 10:
        return f" {number_words(h)} oh {number_words(mnt)} "
    return f" {number_words(h)} {number_words(mnt)} "


def _decimal(m: re.Match) -> str:
    whole, frac = m.group(1), m.group(2)
    return f" {number_words(int(whole))} point {' '.join(ONES[int(d)] for d in frac)} "


def normalise(text: str) -> str:
    s = text.lower()
    s = s.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    s = s.replace("&", " and ").replace("%", " percent ").replace("+", " plus ").replace("=", " equals ")
    s = s.replace("×", " times ").replace("−", " minus ")
    s = re.sub(r"(?<=\d)\s+-\s+(?=\d)", " minus ", s)                # "7 - 5" (a hyphen alone splits words)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)                      # 2,000 → 2000
    s = re.sub(r"\$(\d+)", lambda m: f" {m.group(1)} dollars ", s)
    s = re.sub(r"\b(\d{1,2}):(\d{2})\b", _clock, s)
    s = re.sub(r"\b(\d+)\.(\d+)\b", _decimal, s)
    s = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: f" {ordinal_words(int(m.group(1)))} ", s)
    s = re.sub(r"\d+", lambda m: f" {number_words(int(m.group(0)))} ", s)
    s = re.sub(r"[-/–—_]", " ", s)
    s = re.sub(r"[^a-z' ]+", " ", s)
    words = []
    for w in s.split():
        w = w.strip("'")
        if not w:
            continue
        words.append(SPELLING.get(w, w))
    # "one hundred and five" → "one hundred five": drop "and" between number words.
    out = []
    for i, w in enumerate(words):
        if w == "and" and 0 < i < len(words) - 1 and words[i - 1] in NUMBER_WORDS and words[i + 1] in NUMBER_WORDS \
                and words[i - 1] in {"hundred", "thousand", "million", "billion", "trillion"}:
            continue
        out.append(w)
    return " ".join(out)


if __name__ == "__main__":
    import sys
    for line in (sys.argv[1:] or sys.stdin):
        print(normalise(line))
