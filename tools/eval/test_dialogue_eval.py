#!/usr/bin/env python3
"""Tests of tools/eval/dialogue_eval.py (python unittest; seconds).

  tools/train/.venv/bin/python -m unittest tools/eval/test_dialogue_eval.py
  tools/train/.venv/bin/python tools/eval/test_dialogue_eval.py --make out/dialogue-eval/synthetic   # the test dialogues, to run the harness on

The metric functions are checked on hand-made signals with known answers. The end-to-end tests
build a tiny dialogues folder in the interface's format (espeak-ng speech, 20 dB SNR noise on the
user stream; skipped without espeak-ng) and run the harness on it with --reference (the data's own
system stream: known onsets, a known barge-in stop) and through duplex (skipped without a built
.build/release/duplex) on the embedded default model, unpaced, without Whisper and bench.
"""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import dialogue_eval as de  # noqa: E402

SR = 24000
REPO = HERE.parent.parent
DUPLEX = REPO / ".build" / "release" / "duplex"


def burst(seconds: float, spans, level=0.1, seed=0):
    """Noise at `level` RMS inside the spans [(a, b)] s, exact zeros elsewhere."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(round(seconds * SR)), np.float32)
    for a, b in spans:
        i, j = int(round(a * SR)), int(round(b * SR))
        x[i:j] = rng.standard_normal(j - i).astype(np.float32) * level
    return x


def dialogue(turns, seconds):
    return {"id": "t", "split": "eval", "seconds": seconds, "turns": turns, "user_wav": "u.wav"}


class Metrics(unittest.TestCase):
    def test_contains_answer(self):
        ok = de.contains_answer
        self.assertTrue(ok("seven plus five is twelve.", "twelve"))
        self.assertTrue(ok("Forty-two.", "forty-two"))
        self.assertTrue(ok("it is 42", "forty-two"))
        self.assertTrue(ok("Wednesday", "wednesday"))
        self.assertFalse(ok("forty-two", "two"))
        self.assertFalse(ok("forty-two", "forty"))
        self.assertTrue(ok("twenty", "twenty"))
        self.assertFalse(ok("twelve", "twelve hundred") )
        self.assertFalse(ok("", "twelve"))
        self.assertFalse(ok("twelfth", "twelve"))

    def test_nearest_rank(self):
        self.assertEqual(de.nearest_rank([3, 1, 2], 50), 2)
        self.assertEqual(de.nearest_rank(list(range(1, 101)), 95), 95)
        self.assertEqual(de.nearest_rank([0.1] * 19 + [math.inf], 95), 0.1)
        self.assertEqual(de.nearest_rank([0.1] * 18 + [math.inf] * 2, 95), math.inf)
        self.assertTrue(math.isnan(de.nearest_rank([], 50)))

    def test_spans_and_user_mask(self):
        self.assertEqual(list(de.span_frames(0.8, 4.8, 1000)), list(range(10, 60)))
        turns = [{"speaker": "user", "start": 0.8, "end": 4.8, "pause": [2.0, 2.8]}]
        m = de.user_mask(turns, 100)
        self.assertEqual(sum(m), 50 - 10)
        self.assertFalse(m[25])
        self.assertTrue(m[24] and m[35])

    def test_clean_mask(self):
        raw = [0, 1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0]
        self.assertEqual(de.clean_mask(raw, gap=2, min_run=2),
                         [False, True, True, True, True, True, False, False, False, False, False, False, False])

    def test_threshold_and_speech(self):
        x = burst(4.0, [(1.0, 2.0)], level=0.1) + burst(4.0, [(0, 4.0)], level=0.0005, seed=1)
        mask, thr, db = de.system_speech(x)
        self.assertAlmostEqual(thr, -20.0 - 25.0, delta=1.0)
        self.assertEqual([k for k, v in enumerate(mask) if v], list(range(12, 25)))   # 1.0..2.0 s (+ a partial frame)

    def test_codec_hiss_is_not_speech(self):
        x = burst(4.0, [(1.0, 2.0)], level=0.1) + burst(4.0, [(0, 4.0)], level=0.01, seed=1)   # hiss at -40 dBFS
        mask, thr, _ = de.system_speech(x)
        self.assertAlmostEqual(thr, -34.0, delta=1.0)
        self.assertEqual([k for k, v in enumerate(mask) if v], list(range(12, 25)))

    def test_onset_half_second(self):
        # Question ends at 2.0 s; the system starts speaking exactly 0.5 s later.
        for delay in (0.0, 0.08):
            out = burst(6.0, [(2.5 + delay, 3.5 + delay)])
            turns = [{"speaker": "user", "intent": "add", "start": 1.0, "end": 2.0, "answer_word": "twelve"},
                     {"speaker": "system", "start": 2.5, "end": 3.5, "answers_turn": 0, "text": "x is twelve.",
                      "words": [{"word": "twelve", "start": 3.0, "end": 3.4}]}]
            r = de.score_dialogue(dialogue(turns, 6.0), out, [(37, " tw"), (38, "elve")], delay)
            q = r["questions"][0]
            self.assertLessEqual(abs(q["onset_s"] - 0.5), 0.08)
            self.assertAlmostEqual(q["onset_heard_s"], q["onset_s"] + delay)
            self.assertEqual(q["onset_state"], "after")
            self.assertTrue(q["monologue_ok"] and q["expected"])
            self.assertEqual(r["overlap_frames"], 0)

    def test_onset_missing_anticipated_talking_over(self):
        turns = [{"speaker": "user", "start": 1.0, "end": 2.0},
                 {"speaker": "system", "start": 2.5, "end": 3.0, "answers_turn": 0},
                 {"speaker": "user", "start": 4.0, "end": 5.0},
                 {"speaker": "system", "start": 5.5, "end": 6.0, "answers_turn": 2},
                 {"speaker": "user", "start": 7.0, "end": 8.0},
                 {"speaker": "system", "start": 8.5, "end": 9.0, "answers_turn": 4}]
        # Starts 0.2 s before the first question's end; never speaks after the second; talks over
        # the third from 7.2 s to 8.4 s, then answers at 8.8 s.
        out = burst(10.0, [(1.8, 2.8), (7.2, 8.4), (8.8, 9.5)])
        for delay in (0.0, 0.08):
            x = np.concatenate([np.zeros(int(delay * SR), np.float32), out])[: out.size]
            r = de.score_dialogue(dialogue(turns, 10.0), x, [], delay)
            q0, q1, q2 = r["questions"]
            self.assertEqual((q0["onset_s"], q0["onset_state"]), (0.0, "anticipated"))
            self.assertAlmostEqual(q0["onset_heard_s"], 0.0)
            self.assertIsNone(q1["onset_s"])
            self.assertEqual(q2["onset_state"], "talking_over")
            self.assertLessEqual(abs(q2["onset_s"] - 0.8), 0.08)
            self.assertAlmostEqual(q2["onset_heard_s"], q2["onset_s"] + delay, places=3)
        m = de.summarise([r], 0.0, None, False)
        self.assertEqual((m["onset_missing"], m["onset_anticipated"], m["onset_talking_over"]), (1, 1, 1))
        self.assertEqual(m["onset_p95_s"], math.inf)
        self.assertLessEqual(abs(m["onset_found_p95_s"] - 0.8), 0.08)

    def test_overlap_ten_percent(self):
        # User speaks 0.8–4.8 s (50 frames); the system 4.4–6.0 s: 5 of them overlap.
        turns = [{"speaker": "user", "start": 0.8, "end": 4.8}]
        out = burst(8.0, [(4.4, 6.0)])
        r = de.score_dialogue(dialogue(turns, 8.0), out, [], 0.0)
        self.assertEqual(r["user_frames"], 50)
        self.assertEqual(r["overlap_frames"], 5)
        self.assertAlmostEqual(r["overlap"], 0.10)
        # The engine's one-frame delay: the same speech heard 80 ms later overlaps just as much.
        r = de.score_dialogue(dialogue(turns, 8.0), burst(8.0, [(4.48, 6.08)]), [], 0.08)
        self.assertEqual(r["overlap_frames"], 5)

    def test_barge_in_stop(self):
        # The system talks from 2.0 s; the user barges in at 4.0 s; the system stops 0.3 s later.
        turns = [{"speaker": "user", "start": 1.0, "end": 1.8},
                 {"speaker": "system", "start": 2.0, "end": 4.3, "answers_turn": 0},
                 {"speaker": "user", "intent": "barge_in", "start": 4.0, "end": 5.0}]
        for delay in (0.0, 0.08):
            out = burst(7.0, [(2.0 + delay, 4.3 + delay)])
            r = de.score_dialogue(dialogue(turns, 7.0), out, [], delay)
            b = r["barge_ins"][0]
            self.assertTrue(b["applicable"] and b["stopped"])
            self.assertLessEqual(abs(b["stop_s"] - 0.3), 0.08)
            self.assertAlmostEqual(b["stop_heard_s"], b["stop_s"] + delay)
        # Never stops → infinite; silent at the barge-in → not applicable.
        r = de.score_dialogue(dialogue(turns, 7.0), burst(7.0, [(2.0, 7.0)]), [], 0.0)
        self.assertFalse(r["barge_ins"][0]["stopped"])
        m = de.summarise([r], 0.0, None, False)
        self.assertEqual(m["barge_in_stop_max_s"], math.inf)
        r = de.score_dialogue(dialogue(turns, 7.0), burst(7.0, [(2.0, 3.0)]), [], 0.0)
        self.assertFalse(r["barge_ins"][0]["applicable"])

    def test_accuracy_windows_and_expectation(self):
        turns = [{"speaker": "user", "intent": "add", "start": 0.5, "end": 1.5, "answer_word": "twelve"},
                 {"speaker": "system", "start": 2.0, "end": 3.0, "answers_turn": 0,
                  "words": [{"word": "seven", "start": 2.0, "end": 2.3}]},        # cut before its answer
                 {"speaker": "user", "intent": "after", "start": 4.0, "end": 5.0, "answer_word": "forty-two"}]
        mono = [(int(2.0 / 0.08), " twelve"),        # in the first window (not expected there)
                (int(3.9 / 0.08), " forty-two"),      # before the second question's end: not its answer
                (int(5.5 / 0.08), " forty"), (int(5.5 / 0.08) + 1, "-two")]
        r = de.score_dialogue(dialogue(turns, 8.0), np.zeros(8 * SR, np.float32), mono, 0.0)
        q0, q1 = r["questions"]
        self.assertFalse(q0["expected"])
        self.assertTrue(q0["monologue_ok"])
        self.assertTrue(q1["expected"] and q1["monologue_ok"])
        self.assertEqual(q1["monologue"], "forty-two")
        m = de.summarise([r], 0.0, None, False)
        self.assertEqual((m["questions_scored"], m["questions_not_expected"], m["monologue_accuracy"]), (1, 1, 1.0))

    def test_whisper_segment_goes_to_asr(self):
        seen = []

        def asr(seg):
            seen.append(seg.size)
            return "Seven plus five is 12."
        turns = [{"speaker": "user", "start": 0.5, "end": 1.5, "answer_word": "twelve"}]
        r = de.score_dialogue(dialogue(turns, 4.0), burst(4.0, [(2.0, 3.0)]), [], 0.08, asr=asr)
        self.assertTrue(r["questions"][0]["whisper_ok"])
        self.assertEqual(seen, [int(round((4.0 - 1.5 - 0.08) * SR))])

    def test_monologue_file(self):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "t.tsv"
            p.write_text("    0.08\t seven\n    0.16\t plus\n    0.24\t<0xC3>\n    0.32\t<0xA9>\n   10.00\t tw\n")
            mono = de.parse_monologue(p)
            self.assertEqual([k for k, _ in mono], [1, 2, 3, 4, 125])
            self.assertEqual(de.join_pieces([x for _, x in mono]), " seven plusé tw")
            self.assertEqual(de.window_text(mono, 0.16, 0.33), " plusé")

    def test_check_model_default(self):
        info = de.check_model(str(REPO / "models" / "default"))
        self.assertTrue(info["random_weights"])
        self.assertTrue(de.check_model(None)["random_weights"])

    def test_pause_talk(self):
        turns = [{"speaker": "user", "start": 0.5, "end": 3.0, "pause": [1.2, 2.0]}]
        r = de.score_dialogue(dialogue(turns, 5.0), burst(5.0, [(1.4, 1.8)]), [], 0.0)
        self.assertTrue(r["pauses"][0]["system_spoke"])
        self.assertEqual(r["overlap_frames"], 0)


# ----------------------------------------------------------------------------------------------
# A tiny dialogues folder in the interface's format
# ----------------------------------------------------------------------------------------------

SCRIPTS = [
    [("user", "add", "what is seven plus five?", "twelve", None), ("system", "seven plus five is twelve."),
     ("user", "after", "what comes | after forty-one?", "forty-two", None), ("system", "forty-two."),
     ("user", "out_of_domain", "can you sing me a song?", None, None), ("system", "sorry, I only know numbers and days.", "cut"),
     ("user", "barge_in", "what is two plus two?", "four", None), ("system", "two plus two is four.")],
    [("user", "greeting", "hello there", None, None), ("system", "hello! ask me a number question."),
     ("user", "day_after", "what day comes | after tuesday?", "wednesday", None), ("system", "wednesday."),
     ("user", "month_before", "what month comes before march?", "february", None), ("system", "february.")],
]


def espeak(text: str, voice: str):
    import soundfile as sf
    from scipy.signal import resample_poly
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", "170", "-w", f.name, text], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        x, sr = sf.read(f.name, dtype="float32")
    if x.ndim > 1:
        x = x.mean(axis=1)
    x = resample_poly(x, 160, 147).astype(np.float32) if sr == 22050 else x
    idx = np.flatnonzero(np.abs(x) > 0.01)
    return x[idx[0]: idx[-1] + 1] * 0.5 if idx.size else x


def make_synthetic(folder: Path, n: int = 2, seed: int = 0) -> Path:
    """Writes folder/dialogues.jsonl and folder/audio/*.wav (n ≤ 2 dialogues, split eval)."""
    import soundfile as sf
    rng = np.random.default_rng(seed)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, script in enumerate(SCRIPTS[:n]):
        user, system, turns = [], [], []
        t = 0.6

        def place(buf, x, at):
            i0 = int(round(at * SR))
            need = i0 + x.size
            if len(buf) < need:
                buf.extend([0.0] * (need - len(buf)))
            buf[i0:need] = (np.asarray(buf[i0:need]) + x).tolist()

        k = 0
        while k < len(script):
            s = script[k]
            _, intent, text, answer, _ = s
            parts = [espeak(p.strip(), "en-gb+m3") for p in text.split("|")]
            start = t
            pause = None
            for j, x in enumerate(parts):
                if j:
                    pause = [round(t, 3), round(t + 0.7, 3)]
                    t += 0.7
                place(user, x, t)
                t += x.size / SR
            turns.append({"speaker": "user", "intent": intent, "text": text.replace(" |", ""),
                          "start": round(start, 3), "end": round(t, 3), "pause": pause, "answer_word": answer})
            uturn = len(turns) - 1
            reply = script[k + 1]
            cut = len(reply) > 2
            s0 = t + 0.5
            words, w_t = [], s0
            for w in reply[1].split():
                x = espeak(w, "en-us+f3")
                words.append((w.strip(".,!?"), w_t, x))
                w_t += x.size / SR + 0.06
            end = w_t - 0.06
            cut_at = None
            if cut:
                barge = s0 + 0.6
                cut_at = round(barge + 0.3, 3)
            kept = []
            for w, ws, x in words:
                if cut_at is not None and ws >= cut_at:
                    break
                if cut_at is not None and ws + x.size / SR > cut_at:
                    x = x[: int((cut_at - ws) * SR)]
                place(system, x, ws)
                kept.append({"word": w, "start": round(ws, 3), "end": round(ws + x.size / SR, 3)})
            turns.append({"speaker": "system", "intent": intent, "text": reply[1], "start": round(s0, 3),
                          "end": cut_at if cut_at is not None else round(end, 3), "cut_at": cut_at,
                          "answers_turn": uturn, "words": kept})
            t = (s0 + 0.6) if cut else (end + 0.8)
            k += 2
        seconds = t + 1.0
        n_s = int(math.ceil(seconds * SR))
        u = np.zeros(n_s, np.float32)
        u[: len(user)] = np.asarray(user[:n_s], np.float32)
        sy = np.zeros(n_s, np.float32)
        sy[: len(system)] = np.asarray(system[:n_s], np.float32)
        p_speech = float(np.mean(u[np.abs(u) > 0.01] ** 2))
        u = u + rng.standard_normal(n_s).astype(np.float32) * math.sqrt(p_speech / 100.0)   # 20 dB SNR
        did = f"eval-{i:06d}"
        sf.write(folder / "audio" / f"{did}.user.wav", u, SR, subtype="PCM_16")
        sf.write(folder / "audio" / f"{did}.system.wav", sy, SR, subtype="PCM_16")
        lines.append({"id": did, "split": "eval", "seconds": round(n_s / SR, 2), "sample_rate": SR,
                      "user_voice": "espeak:en-gb+m3", "system_voice": "espeak:en-us+f3", "noise_snr_db": 20.0,
                      "user_wav": f"audio/{did}.user.wav", "system_wav": f"audio/{did}.system.wav", "turns": turns})
    with open(folder / "dialogues.jsonl", "w") as f:
        for d in lines:
            f.write(json.dumps(d) + "\n")
    return folder


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = de.main(argv)
    return rc, out.getvalue(), err.getvalue()


@unittest.skipUnless(shutil.which("espeak-ng"), "espeak-ng is not installed")
class EndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = make_synthetic(Path(cls.tmp.name) / "dlg")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_reference(self):
        js = Path(self.tmp.name) / "ref.json"
        rc, out, err = run_main(["--dialogues", str(self.dir), "--reference", "--no-whisper",
                                 "--work", str(Path(self.tmp.name) / "w-ref"), "--json", str(js)])
        self.assertIn(rc, (0, 1), err)
        rep = json.loads(js.read_text())
        m = rep["metrics"]
        self.assertEqual(m["monologue_accuracy"], 1.0)
        self.assertEqual(m["questions_scored"], 5)
        self.assertEqual(m["questions_not_expected"], 0)
        self.assertEqual(m["onset_missing"], 0)
        self.assertLessEqual(abs(m["onset_p50_s"] - 0.5), 0.081)
        self.assertEqual(m["barge_ins_applicable"], 1)
        self.assertLessEqual(abs(m["barge_in_stop_p50_s"] - 0.3), 0.081)
        self.assertLess(m["overlap"], 0.10)
        self.assertEqual(m["pauses_system_spoke"], 0)
        self.assertIn("response onset", out)

    @unittest.skipUnless(DUPLEX.is_file(), "no .build/release/duplex")
    def test_duplex_unpaced(self):
        js = Path(self.tmp.name) / "dx.json"
        work = Path(self.tmp.name) / "w-dx"
        rc, out, err = run_main(["--dialogues", str(self.dir), "--no-realtime", "--no-whisper", "--no-bench",
                                 "--limit", "1", "--work", str(work), "--json", str(js)])
        self.assertIn(rc, (0, 1), err)
        rep = json.loads(js.read_text())
        self.assertFalse(rep["realtime"])
        self.assertIn("NOT real time", out)
        d = rep["per_dialogue"][0]
        self.assertGreater(d["monologue_pieces"], 0)
        self.assertEqual(len(d["questions"]), 4)
        m = rep["metrics"]
        self.assertTrue(0.0 <= m["overlap"] <= 1.0)
        self.assertTrue(0.0 <= m["monologue_accuracy"] <= 1.0)
        self.assertTrue((work / "eval-000000.out.wav").is_file())

    def test_errors(self):
        tmp = Path(self.tmp.name)
        rc, _, err = run_main(["--dialogues", str(tmp / "nowhere"), "--reference"])
        self.assertEqual(rc, 2)
        self.assertIn("is not a folder", err)
        (tmp / "empty").mkdir(exist_ok=True)
        rc, _, err = run_main(["--dialogues", str(tmp / "empty"), "--reference"])
        self.assertEqual(rc, 2)
        self.assertIn("dialogues.jsonl does not exist", err)
        bad = tmp / "nowav"
        (bad / "audio").mkdir(parents=True, exist_ok=True)
        row = json.loads((self.dir / "dialogues.jsonl").read_text().splitlines()[0])
        (bad / "dialogues.jsonl").write_text(json.dumps(row) + "\n")
        rc, _, err = run_main(["--dialogues", str(bad), "--reference"])
        self.assertEqual(rc, 2)
        self.assertIn("user wav(s) missing", err)
        # A duplex that fails: its stderr is shown.
        fake = tmp / "fake-duplex"
        fake.write_text("#!/bin/sh\necho 'no such model: kaboom' >&2\nexit 3\n")
        fake.chmod(0o755)
        rc, _, err = run_main(["--dialogues", str(self.dir), "--duplex", str(fake), "--no-realtime", "--no-whisper",
                               "--no-bench", "--limit", "1", "--work", str(tmp / "w-fake")])
        self.assertEqual(rc, 2)
        self.assertIn("kaboom", err)
        self.assertIn("exit 3", err)
        # A model folder without what is needed.
        mdir = tmp / "model"
        mdir.mkdir(exist_ok=True)
        (mdir / "config.json").write_text(json.dumps({"tokenizer_name": "tokenizer.model"}))
        rc, _, err = run_main(["--dialogues", str(self.dir), "--model", str(mdir), "--no-whisper", "--no-bench"])
        self.assertEqual(rc, 2)
        self.assertIn("no text tokenizer tokenizer.model", err)
        self.assertIn("no LM weights model.safetensors", err)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make":
        print(make_synthetic(Path(sys.argv[2])))
        sys.exit(0)
    unittest.main()
