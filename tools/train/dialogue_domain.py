"""The conversing default model's domain (issue 15): what the user asks and what the system answers.

Intents and the system's exact reply (lower case words as spoken; the reply is the monologue text):

  add / sub        "what is seven plus five?"            → "seven plus five is twelve."
                   operands 0-20, plus and minus, results ≥ 0
  after / before   "what comes after forty-one?"         → "forty-two."        (0-99; before 0 is not asked)
  day_after / day_before       "what day comes after tuesday?"   → "wednesday."  (wraps)
  month_after / month_before   "what month comes before march?"  → "february."   (wraps)
  greeting         "hello" / "hi there" / "good morning" → "hello! ask me a number question."
  out_of_domain    everyday sentences and questions      → "sorry, I only know numbers and days."
  unclear          "sorry?", a question cut off, "um, what is, uh" → "could you say that again?"

`sample_turn(rng, split)` draws a Turn; `answer_for(question_text)` parses a question back to its
reply (None where it cannot); `is_heldout_item(item)` is the held-out split of question items: a
hash of the item key ("add:7:5", "after:41", ...) as make_corpus.is_heldout_sentence hashes
sentences, so no train dialogue ever asks an eval item (intent and operands). Calendar items
(7 days, 12 months) are NOT held out by default: a day or month whose successor is never heard in
training cannot be learnt at all, so for them the eval split differs by voice, noise and phrasing
only (set CALENDAR_HELDOUT = True to hold them out too). Out-of-domain sentences are held out with
make_corpus.is_heldout_sentence itself (the same sentences the codec corpus holds out).

`rng` is a random.Random. Number words come from make_corpus.spoken ("forty-two").
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_corpus as mc  # noqa: E402

spoken = mc.spoken
DAYS = mc.DAYS
MONTHS = mc.MONTHS

SPLITS = ("train", "eval")
ITEM_HELDOUT_PER_MILLE = 100       # share of (intent, operands) items held out for eval (‰)
OOD_HELDOUT_PER_MILLE = 30         # make_corpus's default: the codec corpus holds out the same sentences
CALENDAR_HELDOUT = False

GREETING_REPLY = "hello! ask me a number question."
OOD_REPLY = "sorry, I only know numbers and days."
UNCLEAR_REPLY = "could you say that again?"

INTENTS = ("add", "sub", "after", "before", "day_after", "day_before", "month_after", "month_before",
           "greeting", "out_of_domain", "unclear")
# Draw weights of the intents (first turn of a dialogue: see make_dialogues, greetings are likelier).
WEIGHTS = {"add": 0.19, "sub": 0.14, "after": 0.12, "before": 0.09, "day_after": 0.07, "day_before": 0.05,
           "month_after": 0.07, "month_before": 0.05, "greeting": 0.06, "out_of_domain": 0.09, "unclear": 0.07}
ANSWERABLE = ("add", "sub", "after", "before", "day_after", "day_before", "month_after", "month_before")

ADD_Q = ["what is {a} plus {b}?", "what's {a} plus {b}?", "how much is {a} plus {b}?", "{a} plus {b}?",
         "can you tell me {a} plus {b}?", "what is {a} plus {b}, please?", "tell me, what's {a} plus {b}?"]
SUB_Q = ["what is {a} minus {b}?", "what's {a} minus {b}?", "how much is {a} minus {b}?", "{a} minus {b}?",
         "can you tell me {a} minus {b}?", "what is {a} minus {b}, please?", "tell me, what's {a} minus {b}?"]
AFTER_Q = ["what comes after {n}?", "what number comes after {n}?", "which number follows {n}?",
           "what's after {n}?", "what number is after {n}?", "what comes after {n}, please?"]
BEFORE_Q = ["what comes before {n}?", "what number comes before {n}?", "which number is before {n}?",
            "what's before {n}?", "what number is before {n}?", "what comes before {n}, please?"]
DAY_AFTER_Q = ["what day comes after {d}?", "what day is after {d}?", "which day follows {d}?",
               "what's the day after {d}?", "what day comes after {d}, please?"]
DAY_BEFORE_Q = ["what day comes before {d}?", "what day is before {d}?", "which day is before {d}?",
                "what's the day before {d}?", "what day comes before {d}, please?"]
MONTH_AFTER_Q = ["what month comes after {m}?", "what month is after {m}?", "which month follows {m}?",
                 "what's the month after {m}?", "what month comes after {m}, please?"]
MONTH_BEFORE_Q = ["what month comes before {m}?", "what month is before {m}?", "which month is before {m}?",
                  "what's the month before {m}?", "what month comes before {m}, please?"]
GREETINGS = ["hello.", "hello!", "hi there.", "hi there!", "hi!", "good morning.", "good afternoon.", "good evening.",
             "hey there.", "hello there!", "hi, hello."]
EVERYDAY_Q = ["what's the weather like today?", "can you play some music?", "what time is it?", "where is the station?",
              "do you like football?", "what should I cook tonight?", "can you call my mother?",
              "tell me a joke.", "what is your name?", "where do you live?", "is it going to rain tomorrow?",
              "can you turn on the lights?", "how do I get to the airport?", "what's the capital of france?",
              "who won the game last night?", "can you recommend a good book?", "set an alarm for me.",
              "what's on television tonight?", "how tall is the tallest mountain?", "do you have a favourite colour?",
              "can you order a pizza?", "what's a good name for a dog?", "how do you make pancakes?",
              "where did I leave my keys?", "can you help me with my homework?", "what's the best film ever?"]
UNCLEAR_PLAIN = ["sorry?", "what?", "pardon?", "huh?", "sorry, what?", "um, what?", "uh, sorry?", "hmm?"]
FILLERS = ["um, what is, uh", "uh, what, um", "so, um, what's the", "um, which, uh", "what is the, um",
           "hmm, what comes, uh", "uh, the, um"]


@dataclass
class Turn:
    intent: str
    question_text: str
    reply_text: str
    answer_word: str | None
    item: str | None = None      # held-out key: "add:7:5", "after:41", "day_after:tuesday", ...; None for the rest


def _hash_per_mille(key: str) -> int:
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big")
    return h % 1000


def is_heldout_item(item: str, per_mille: int = ITEM_HELDOUT_PER_MILLE) -> bool:
    """True if the question item (intent and operands) belongs to the eval split only."""
    if item.startswith(("day_", "month_")) and not CALENDAR_HELDOUT:
        return False
    return _hash_per_mille("dialogue-item:" + item) < per_mille


def all_items() -> list[tuple[str, tuple]]:
    """Every answerable (intent, operands) pair of the domain."""
    out = []
    for a in range(21):
        for b in range(21):
            out.append(("add", (a, b)))
    for a in range(21):
        for b in range(a + 1):
            out.append(("sub", (a, b)))
    out += [("after", (n,)) for n in range(99)] + [("before", (n,)) for n in range(1, 100)]
    out += [("day_after", (i,)) for i in range(7)] + [("day_before", (i,)) for i in range(7)]
    out += [("month_after", (i,)) for i in range(12)] + [("month_before", (i,)) for i in range(12)]
    return out


def item_key(intent: str, ops: tuple) -> str:
    if intent in ("day_after", "day_before"):
        return f"{intent}:{DAYS[ops[0]]}"
    if intent in ("month_after", "month_before"):
        return f"{intent}:{MONTHS[ops[0]]}"
    return intent + ":" + ":".join(str(o) for o in ops)


def reply_and_answer(intent: str, ops: tuple) -> tuple[str, str | None]:
    if intent == "add":
        a, b = ops
        return f"{spoken(a)} plus {spoken(b)} is {spoken(a + b)}.", spoken(a + b)
    if intent == "sub":
        a, b = ops
        return f"{spoken(a)} minus {spoken(b)} is {spoken(a - b)}.", spoken(a - b)
    if intent == "after":
        return f"{spoken(ops[0] + 1)}.", spoken(ops[0] + 1)
    if intent == "before":
        return f"{spoken(ops[0] - 1)}.", spoken(ops[0] - 1)
    if intent in ("day_after", "day_before", "month_after", "month_before"):
        cycle = DAYS if intent.startswith("day") else MONTHS
        w = cycle[(ops[0] + (1 if intent.endswith("after") else -1)) % len(cycle)]
        return f"{w}.", w
    raise ValueError(intent)


def question_text(intent: str, ops: tuple, rng: random.Random) -> str:
    if intent == "add":
        return rng.choice(ADD_Q).format(a=spoken(ops[0]), b=spoken(ops[1]))
    if intent == "sub":
        return rng.choice(SUB_Q).format(a=spoken(ops[0]), b=spoken(ops[1]))
    if intent == "after":
        return rng.choice(AFTER_Q).format(n=spoken(ops[0]))
    if intent == "before":
        return rng.choice(BEFORE_Q).format(n=spoken(ops[0]))
    if intent == "day_after":
        return rng.choice(DAY_AFTER_Q).format(d=DAYS[ops[0]])
    if intent == "day_before":
        return rng.choice(DAY_BEFORE_Q).format(d=DAYS[ops[0]])
    if intent == "month_after":
        return rng.choice(MONTH_AFTER_Q).format(m=MONTHS[ops[0]])
    if intent == "month_before":
        return rng.choice(MONTH_BEFORE_Q).format(m=MONTHS[ops[0]])
    raise ValueError(intent)


def _draw_ops(intent: str, rng: random.Random) -> tuple:
    if intent == "add":
        return (rng.randint(0, 20), rng.randint(0, 20))
    if intent == "sub":
        a = rng.randint(0, 20)
        return (a, rng.randint(0, a))
    if intent == "after":
        return (rng.randint(0, 98),)
    if intent == "before":
        return (rng.randint(1, 99),)
    if intent.startswith("day_"):
        return (rng.randrange(7),)
    return (rng.randrange(12),)


def answerable_turn(intent: str, rng: random.Random, split: str) -> Turn:
    want_eval = split == "eval"
    for _ in range(10000):
        ops = _draw_ops(intent, rng)
        key = item_key(intent, ops)
        held = is_heldout_item(key)
        calendar_shared = intent.startswith(("day_", "month_")) and not CALENDAR_HELDOUT
        if calendar_shared or held == want_eval:
            reply, ans = reply_and_answer(intent, ops)
            return Turn(intent, question_text(intent, ops, rng), reply, ans, key)
    raise RuntimeError(f"no {split} item for {intent}")


def ood_sentence(rng: random.Random, split: str) -> str:
    want_eval = split == "eval"
    for _ in range(10000):
        if rng.random() < 0.35:
            s = rng.choice(EVERYDAY_Q)
        else:
            s = mc.general_sentence(rng)
            if len(s.split()) > 14:
                continue
        held = mc.is_heldout_sentence(s, OOD_HELDOUT_PER_MILLE)
        if held == want_eval or s in EVERYDAY_Q:
            return s
    raise RuntimeError("no out-of-domain sentence")


def unclear_text(rng: random.Random, split: str) -> str:
    k = rng.random()
    if k < 0.4:
        return rng.choice(UNCLEAR_PLAIN)
    if k < 0.7:
        return rng.choice(FILLERS) + "..."
    # A question cut off: its first one to three words ("what is seven", "what day comes").
    intent = rng.choice(ANSWERABLE)
    q = answerable_turn(intent, rng, split).question_text
    words = q.rstrip("?").replace(",", "").split()
    n = rng.randint(1, max(1, min(3, len(words) - 2)))
    return " ".join(words[:n]) + "..."


def sample_turn(rng: random.Random, split: str, intent: str | None = None) -> Turn:
    """One user question and the system's reply; `intent` forces the intent (else drawn by WEIGHTS)."""
    if split not in SPLITS:
        raise ValueError(split)
    if intent is None:
        intent = rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
    if intent in ANSWERABLE:
        return answerable_turn(intent, rng, split)
    if intent == "greeting":
        return Turn("greeting", rng.choice(GREETINGS), GREETING_REPLY, None)
    if intent == "out_of_domain":
        return Turn("out_of_domain", ood_sentence(rng, split), OOD_REPLY, None)
    if intent == "unclear":
        return Turn("unclear", unclear_text(rng, split), UNCLEAR_REPLY, None)
    raise ValueError(intent)


def all_replies() -> list[str]:
    """Every distinct reply the system can say (the finite set make_dialogues synthesises once)."""
    out = {GREETING_REPLY, OOD_REPLY, UNCLEAR_REPLY}
    for intent, ops in all_items():
        out.add(reply_and_answer(intent, ops)[0])
    return sorted(out)


# ----------------------------------------------------------------------------------------------
# Parsing a question back
# ----------------------------------------------------------------------------------------------

WORD_TO_NUM = {spoken(n): n for n in range(100)}
_NUM = r"([a-z]+(?:-[a-z]+)?)"


def _num(w: str) -> int | None:
    return WORD_TO_NUM.get(w)


def answer_for(question_text: str) -> str | None:
    """The system's reply to `question_text` where it parses as a domain question (or a greeting,
    or an unclear fragment); None for anything else (out-of-domain is not decided here)."""
    q = question_text.lower().strip()
    q = re.sub(r"\s+", " ", q)
    if q.endswith("...") or q in UNCLEAR_PLAIN:
        return UNCLEAR_REPLY
    if q in [g.lower() for g in GREETINGS]:
        return GREETING_REPLY
    m = re.search(_NUM + r" (plus|minus) " + _NUM + r"\b", q)
    if m:
        a, b = _num(m.group(1)), _num(m.group(3))
        if a is not None and b is not None:
            if m.group(2) == "plus":
                return reply_and_answer("add", (a, b))[0]
            if a >= b:
                return reply_and_answer("sub", (a, b))[0]
        return None
    m = re.search(r"\b(after|follows|before) ([a-z]+(?:-[a-z]+)?)\b", q)
    if m:
        rel, w = m.group(1), m.group(2)
        after = rel in ("after", "follows")
        if w in DAYS:
            return reply_and_answer("day_after" if after else "day_before", (DAYS.index(w),))[0]
        if w in MONTHS:
            return reply_and_answer("month_after" if after else "month_before", (MONTHS.index(w),))[0]
        n = _num(w)
        if n is not None:
            if after and n <= 98:
                return reply_and_answer("after", (n,))[0]
            if not after and n >= 1:
                return reply_and_answer("before", (n,))[0]
    return None
