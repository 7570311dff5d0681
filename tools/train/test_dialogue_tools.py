"""Tests of the dialogue data tools (issue 15): the domain, the monologue layout, the tokenizer, one
generated dialogue's timing properties, and the encoder (streaming = batch, shapes, ranges, text).

  tools/train/.venv/bin/python -m unittest tools/train/test_dialogue_tools.py

Fast (well under a minute on the shared 2-core machine): one short dialogue (espeak user) is made
in a temporary folder; the codec tests use out/codec/mimi.safetensors and skip where it is absent.
`check_dialogue(out_dir, record)` is the property check, usable on any generated set:
  tools/train/.venv/bin/python tools/train/test_dialogue_tools.py --check out/dialogues
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import unittest
import wave
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import dialogue_domain as dd  # noqa: E402
import make_corpus as mc  # noqa: E402
import monologue  # noqa: E402

CODEC = REPO / "out" / "codec" / "mimi.safetensors"
SR = 24000
EPS = 0.0025   # rounding of times to 1 ms in the JSON, plus sample rounding


class FakeSP:
    """encode(word) from a table: each word's token ids."""

    def __init__(self, table):
        self.table = table

    def encode(self, w):
        return self.table[w]


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == SR and w.getsampwidth() == 2 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0


def check_dialogue(out: Path, rec: dict, sp=None, min_seconds: float = 20.0) -> list[str]:
    """Problems with one dialogue (an empty list when it obeys the rules)."""
    bad = []
    user, system = read_wav(out / rec["user_wav"]), read_wav(out / rec["system_wav"])
    n = int(round(rec["seconds"] * SR))
    if not (user.size == system.size == n):
        bad.append(f"lengths user {user.size} system {system.size} expected {n}")
    turns = rec["turns"]
    sys_turns = [t for t in turns if t["speaker"] == "system"]
    usr_turns = [t for t in turns if t["speaker"] == "user"]
    # System stream: exact zeros outside its turns.
    mask = np.zeros(system.size, bool)
    for t in sys_turns:
        mask[int(round(t["start"] * SR)): int(round(t["end"] * SR)) + 24] = True   # end: to the ms
    if np.any(system[~mask] != 0):
        bad.append("system stream not silent outside its turns")
    for t in sys_turns:
        seg = system[int(round(t["start"] * SR)): int(round(t["end"] * SR))]
        if seg.size and np.max(np.abs(seg)) < 0.05:
            bad.append(f"system turn at {t['start']} is silent")
        q = turns[t["answers_turn"]]
        onset = t["start"] - q["end"]
        if not (0.2 - EPS <= onset <= 0.8 + EPS):
            bad.append(f"onset {onset:.3f} s after turn {t['answers_turn']}")
        ws = t["words"]
        if any(b["start"] < a["start"] for a, b in zip(ws, ws[1:])):
            bad.append("word starts not monotonic")
        for w in ws:
            if not (t["start"] - EPS <= w["start"] < w["end"] <= t["end"] + 0.05 + EPS):
                bad.append(f"word {w} outside its turn [{t['start']}, {t['end']}]")
        spoken = [w["word"] for w in ws]
        if spoken != t["text"].split()[:len(spoken)]:
            bad.append(f"words {spoken} are not a prefix of {t['text']!r}")
        if t["cut_at"] is None:
            if spoken != t["text"].split():
                bad.append(f"uncut reply lost words: {spoken}")
        else:
            if abs(t["end"] - t["cut_at"]) > EPS or any(w["start"] >= t["cut_at"] for w in ws):
                bad.append("cut reply keeps words after the cut")
            barger = [u for u in usr_turns if u.get("barges_in_on") == turns.index(t)]
            if len(barger) != 1:
                bad.append("cut reply without its barge-in")
            else:
                stop = t["cut_at"] - barger[0]["start"]
                if not (0.15 - EPS <= stop <= 0.4 + EPS):
                    bad.append(f"barge-in stop {stop:.3f} s")
    # Silent while the user speaks, except the barge-in windows (onset to cut).
    for u in usr_turns:
        for t in sys_turns:
            lo, hi = max(u["start"], t["start"]), min(u["end"], t["end"])
            if hi > lo + EPS:
                if not (u.get("barges_in_on") == turns.index(t) and hi - lo <= 0.4 + EPS):
                    bad.append(f"system speaks during user turn at {u['start']}")
        if u["pause"] is not None:
            p0, p1 = u["pause"]
            if not (u["start"] < p0 < p1 < u["end"] and 0.5 - EPS <= p1 - p0 <= 1.5 + EPS):
                bad.append(f"pause {u['pause']} in turn [{u['start']}, {u['end']}]")
        seg = user[int(u["start"] * SR): int(u["end"] * SR)]
        if seg.size == 0 or np.max(np.abs(seg)) == 0:
            bad.append(f"user turn at {u['start']} is silent")
    if not min_seconds - EPS <= rec["seconds"] <= 65:
        bad.append(f"length {rec['seconds']} s")
    # Codes, when encoded.
    npz = out / "codes" / f"{rec['id']}.npz"
    if npz.exists():
        z = np.load(npz)
        T = int(math.ceil(round(rec["seconds"] * 12.5, 6)))
        for k in ("user", "system"):
            if z[k].shape != (8, T) or z[k].dtype != np.int16 or z[k].min() < 0 or z[k].max() > 2047:
                bad.append(f"codes {k} {z[k].shape} {z[k].dtype} [{z[k].min()}, {z[k].max()}]")
        if z["text"].shape != (T,) or z["text"].dtype != np.int32:
            bad.append(f"text {z['text'].shape} {z['text'].dtype}")
        if sp is not None:
            ids = [int(i) for i in z["text"] if i not in (monologue.PAD, monologue.EPAD)]
            want = " ".join(w["word"] for w in monologue.words_of(rec))
            if sp.decode(ids) != want:
                bad.append(f"text decodes to {sp.decode(ids)[:80]!r}, not {want[:80]!r}")
    return bad


class TestMonologue(unittest.TestCase):
    def test_hand_made(self):
        sp = FakeSP({"seven": [10], "plus": [11, 12], "five": [13], "is": [14], "twelve.": [15, 16]})
        words = [{"word": "seven", "start": 0.30}, {"word": "plus", "start": 0.50}, {"word": "five", "start": 0.60},
                 {"word": "is", "start": 1.00}, {"word": "twelve.", "start": 1.10}]
        # frames: seven f3 (EPAD f2); plus f6 (EPAD f5), tokens f6 f7; five wants f7 → pushed to f8 (no EPAD,
        # f7 taken); is f12 (EPAD f11); twelve. wants f13 (f12 is "is"'s, so no EPAD), tokens f13 f14.
        got = monologue.monologue_tokens(words, 17, sp)
        want = [3, 3, 0, 10, 3, 0, 11, 12, 13, 3, 3, 0, 14, 15, 16, 3, 3]
        self.assertEqual(got.tolist(), want)
        self.assertEqual(got.dtype, np.int32)

    def test_start_at_zero_and_truncation(self):
        sp = FakeSP({"a": [20, 21, 22], "b": [23]})
        got = monologue.monologue_tokens([{"word": "b", "start": 0.25}, {"word": "a", "start": 0.0}], 4, sp)
        # a at f0 (no frame before: no EPAD), f0-f2; b wants f3 (floor(0.25*12.5)=3), f2 taken by a → f3 free.
        self.assertEqual(got.tolist(), [20, 21, 22, 23])
        got = monologue.monologue_tokens([{"word": "a", "start": 0.16}], 4, sp)   # f2, runs past the end
        self.assertEqual(got.tolist(), [3, 0, 20, 21])
        self.assertEqual(monologue.monologue_tokens([], 3, sp).tolist(), [3, 3, 3])

    def test_pushed_word_keeps_epad_rule(self):
        sp = FakeSP({"x": [30, 31, 32, 33], "y": [40]})
        # y wants f1 but x occupies f0-f3 → y at f4, no EPAD (f3 is x's).
        got = monologue.monologue_tokens([{"word": "x", "start": 0.0}, {"word": "y", "start": 0.1}], 6, sp)
        self.assertEqual(got.tolist(), [30, 31, 32, 33, 40, 3])


class TestDomain(unittest.TestCase):
    def test_turns_parse_back_and_split(self):
        r = random.Random(5)
        for split in ("train", "eval"):
            for _ in range(1500):
                t = dd.sample_turn(r, split)
                self.assertIn(t.intent, dd.INTENTS)
                if t.intent in dd.ANSWERABLE:
                    self.assertEqual(dd.answer_for(t.question_text), t.reply_text, t.question_text)
                    self.assertIn(t.answer_word, t.reply_text.replace(".", " ").split())
                    calendar = t.intent.startswith(("day_", "month_"))
                    if not calendar:
                        self.assertEqual(dd.is_heldout_item(t.item), split == "eval", t.item)
                elif t.intent == "unclear":
                    self.assertEqual(dd.answer_for(t.question_text), dd.UNCLEAR_REPLY, t.question_text)
                else:
                    self.assertIsNone(t.answer_word)
                if t.intent == "out_of_domain" and t.question_text not in dd.EVERYDAY_Q:
                    self.assertEqual(mc.is_heldout_sentence(t.question_text, dd.OOD_HELDOUT_PER_MILLE), split == "eval")

    def test_examples(self):
        self.assertEqual(dd.answer_for("what is seven plus five?"), "seven plus five is twelve.")
        self.assertEqual(dd.answer_for("what comes after forty-one?"), "forty-two.")
        self.assertEqual(dd.answer_for("what day comes after sunday?"), "monday.")
        self.assertEqual(dd.answer_for("what month comes before january?"), "december.")
        self.assertEqual(dd.answer_for("what is three minus five?"), None)
        self.assertEqual(dd.answer_for("hello!"), dd.GREETING_REPLY)
        items = dd.all_items()
        held = [k for k in (dd.item_key(i, o) for i, o in items) if dd.is_heldout_item(k)]
        self.assertTrue(40 < len(held) < 150)
        self.assertEqual(len(dd.all_replies()), 794)


class TestTokenizer(unittest.TestCase):
    def test_train_deterministic_one_piece(self):
        import subprocess
        import sentencepiece as spm
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            for d in (a, b):
                p = subprocess.run([sys.executable, str(HERE / "train_dialogue_tokenizer.py"), "--out", d,
                                    "--questions", "3000", "--general", "3000"], capture_output=True, text=True)
                self.assertEqual(p.returncode, 0, p.stderr[-2000:] + p.stdout[-2000:])
            ba, bb = (Path(d, "tokenizer.model").read_bytes() for d in (a, b))
            self.assertEqual(ba, bb)
            sp = spm.SentencePieceProcessor(model_file=str(Path(a, "tokenizer.model")))
            self.assertEqual(sp.get_piece_size(), 800)
            self.assertEqual([sp.id_to_piece(i) for i in range(4)], ["<unk>", "<s>", "</s>", "<pad>"])
            for w in ["twelve", "february", "wednesday", "ninety", "plus", "minus", "question", "sorry,"[:-1]]:
                self.assertEqual(len(sp.encode(w)), 1, w)
            self.assertEqual(sp.encode("forty-two.", out_type=str), ["\u2581forty", "-", "two", "."])
            from sentencepiece import sentencepiece_model_pb2 as pb
            m = pb.ModelProto()
            m.ParseFromString(ba)
            self.assertEqual(m.trainer_spec.model_type, pb.TrainerSpec.UNIGRAM)   # duplex reads unigram only
            self.assertTrue(m.trainer_spec.byte_fallback)


class TestDialogueAndEncode(unittest.TestCase):
    """One short dialogue, made by the real worker code, then encoded."""

    @classmethod
    def setUpClass(cls):
        import make_dialogues as md
        cls.md = md
        cls.tmp = tempfile.mkdtemp(prefix="dlg-test-")
        md._init({"out": cls.tmp, "espeak": mc.espeak_binary(), "whisper_model": None})
        cls.records = []
        for i, (voice, p_barge) in enumerate([("en-gb+m3", 1.0), ("en-us+m1", 0.0)]):
            job = {"split": "train", "index": i, "seed": 7, "family": "espeak", "voice": voice, "p_barge": p_barge,
                   "p_reverb": 1.0, "p_noise": 1.0, "p_gain": 1.0, "length": (6.0, 8.0)}
            cls.records.append(md.render(job)["record"])
        cls.again = md.render({"split": "train", "index": 1, "seed": 7, "family": "espeak", "voice": "en-us+m1",
                               "p_barge": 0.0, "p_reverb": 1.0, "p_noise": 1.0, "p_gain": 1.0,
                               "length": (6.0, 8.0)})["record"]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_properties(self):
        for rec in self.records:
            problems = check_dialogue(Path(self.tmp), rec, min_seconds=6.0)
            self.assertEqual(problems, [], json.dumps(rec)[:1500])
        self.assertTrue(any(t.get("cut_at") is not None for t in self.records[0]["turns"]), "p_barge 1: no barge-in")

    def test_deterministic(self):
        self.assertEqual(self.records[1]["turns"], self.again["turns"])

    def test_alignment_sane(self):
        for p in Path(self.tmp, "cache").glob("*.json"):
            m = json.loads(p.read_text())
            self.assertEqual(m["method"], "whisper-prefix", m)
            self.assertTrue(self.md.check_words(m["words"], m["text"], m["seconds"]))

    @unittest.skipUnless(CODEC.exists(), f"{CODEC} absent")
    def test_encode_streaming_equals_batch(self):
        import torch
        import encode_dialogues as ed
        torch.set_num_threads(1)
        model = ed.load_codec(str(CODEC))
        rec = self.records[0]
        T = ed.n_frames(rec["seconds"])
        user = ed.read_wav(Path(self.tmp) / rec["user_wav"])
        system = ed.read_wav(Path(self.tmp) / rec["system_wav"])
        batch = ed.encode_batch(model, [user, system, user[: 40 * 1920]], [T, T, 40])
        self.assertEqual(batch[0].shape, (8, T))
        self.assertTrue(np.array_equal(batch[2], batch[0][:, :40]), "a shorter stream in the batch changed")
        alone = ed.encode_batch(model, [system], [T])[0]
        self.assertTrue(np.array_equal(alone, batch[1]), "batching changed the codes")
        chunked = ed.encode_batch(model, [user, system], [T, T], chunk_frames=25)
        for c, b in zip(chunked, batch[:2]):
            self.assertEqual(c.shape, b.shape)
            self.assertGreater(float(np.mean(c == b)), 0.99)        # float near-ties only
        stream = ed.encode_streaming(model, user, T)
        self.assertTrue(np.array_equal(stream, batch[0]), f"streaming differs at {np.argwhere(stream != batch[0])[:5]}")

    @unittest.skipUnless(CODEC.exists(), f"{CODEC} absent")
    def test_encode_cli_and_text(self):
        import subprocess
        import sentencepiece as spm
        out = Path(self.tmp) / "cli"
        (out / "audio").mkdir(parents=True)
        for r in self.records:
            for k in ("user_wav", "system_wav"):
                shutil.copy(Path(self.tmp) / r[k], out / r[k])
        with open(out / "dialogues.jsonl", "w") as f:
            for r in self.records:
                f.write(json.dumps(r) + "\n")
        p = subprocess.run([sys.executable, str(HERE / "train_dialogue_tokenizer.py"), "--out", str(out),
                            "--questions", "2000", "--general", "2000"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr[-1500:])
        p = subprocess.run([sys.executable, str(HERE / "encode_dialogues.py"), "--out", str(out), "--codec", str(CODEC),
                            "--threads", "1", "--delete-audio"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr[-1500:])
        sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
        for rec in self.records:
            z = np.load(out / "codes" / f"{rec['id']}.npz")
            T = int(math.ceil(round(rec["seconds"] * 12.5, 6)))
            self.assertEqual(z["user"].shape, (8, T))
            self.assertEqual(z["system"].shape, (8, T))
            self.assertEqual(z["user"].dtype, np.int16)
            self.assertTrue(0 <= z["user"].min() and z["system"].max() < 2048)
            ids = [int(i) for i in z["text"] if i not in (0, 3)]
            self.assertEqual(sp.decode(ids), " ".join(w["word"] for w in monologue.words_of(rec)))
            self.assertFalse((out / rec["user_wav"]).exists(), "--delete-audio kept a train WAV")


def main_check(folder: str) -> int:
    import sentencepiece as spm
    out = Path(folder)
    tok = out / "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(tok)) if tok.exists() else None
    n_bad = 0
    for line in open(out / "dialogues.jsonl"):
        rec = json.loads(line)
        if not (out / rec["user_wav"]).exists():
            continue
        problems = check_dialogue(out, rec, sp)
        if problems:
            n_bad += 1
            print(rec["id"], problems[:5])
    print(f"check: {n_bad} dialogues with problems")
    return 1 if n_bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(main_check(sys.argv[2]))
    unittest.main()
