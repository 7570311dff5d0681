#!/usr/bin/env python3
"""Both streams of each dialogue → Mimi codes, plus the system's inner monologue (issue 15).

For every record of OUT/dialogues.jsonl (make_dialogues.py) writes OUT/codes/ID.npz:
  user    int16 [8, T]   Mimi codes of the user stream
  system  int16 [8, T]   Mimi codes of the system stream
  text    int32 [T]      monologue.monologue_tokens(system words, T, tokenizer), NOT delayed
with T = ceil(seconds × 12.5) frames of 1920 samples. Each stream is zero-padded to T × 1920
samples and encoded separately by moshi 0.2.13's MimiModel with the trained codec:
  --codec FILE.safetensors   an export_codec.py file (Kyutai names; its `config` metadata gives the
                             shape; loaded by moshi.models.loaders.get_mimi, strict)
  --codec FILE.pt            a train_codec.py checkpoint (mimi_arch.build_mimi + its `model` state)
Batch encoding equals streaming encoding: Mimi is causal end to end (causal SEANet convs with
left padding, causal transformer whose batch attention mask applies the same `context` window the
streaming KV cache holds, causal downsampling), so frame t depends on samples < (t+1)·1920 only and
zero padding after a stream (or after a shorter stream in the same batch) changes none of its
frames. test_dialogue_tools.py checks streaming (moshi's `streaming(1)` and 1920-sample chunks)
against batch on a dialogue (and on a 43 s one: identical; 25-frame chunks differ in 4 of 4344
codes, all in codebook 7: float near-ties). Streams are batched by length (--batch streams a call).
`--chunk-frames 25` streams in 2-s chunks instead: ~2.5x faster on this CPU (smaller activations).

Resumable: an existing codes/ID.npz is skipped. `--delete-audio` removes a train dialogue's two
WAVs once its npz is written (eval audio is always kept: the harness plays it). Writes
`codec` (file, sha256, n_q), `tokenizer` (file, sha256) and `encoded` counts into manifest.json.

  python3 tools/train/encode_dialogues.py --out out/dialogues --codec out/codec/mimi.safetensors --threads 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import monologue  # noqa: E402
from train_common import sha256  # noqa: E402

FRAME = 1920
SR = 24000
N_Q = 8


def load_codec(path: str, n_q: int = N_Q):
    import torch
    if path.endswith(".safetensors"):
        from moshi.models import loaders
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            meta = json.loads(f.read(n)).get("__metadata__") or {}
        cfg = json.loads(meta["config"]) if "config" in meta else None
        model = loaders.get_mimi(path, cfg, num_codebooks=n_q)
    else:
        import mimi_arch
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        mimi_arch.patch_codebook_leak()
        model = mimi_arch.build_mimi(ckpt["mimi_config"])
        model.load_state_dict(ckpt["model"])
        model.set_num_codebooks(n_q)
    model.eval()
    return model


def read_wav(path: Path) -> np.ndarray:
    import wave
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == SR and w.getsampwidth() == 2 and w.getnchannels() == 1, path
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0


def n_frames(seconds: float) -> int:
    return int(math.ceil(round(seconds * 12.5, 6)))


def encode_batch(model, streams: list[np.ndarray], frames: list[int], device: str = "cpu",
                 chunk_frames: int = 0) -> list[np.ndarray]:
    """Codes [n_q, T_i] of each stream (zero-padded to T_i × 1920, then to the batch's longest); in one
    call (chunk_frames 0), or through moshi's streaming state chunk_frames frames at a time."""
    import torch
    T = max(frames)
    x = torch.zeros(len(streams), 1, T * FRAME)
    for i, (s, t) in enumerate(zip(streams, frames)):
        n = min(s.size, t * FRAME)
        x[i, 0, :n] = torch.from_numpy(s[:n])
    with torch.no_grad():
        if chunk_frames <= 0:
            codes = model.encode(x.to(device)).cpu()
        else:
            parts = []
            with model.streaming(len(streams)):
                for k in range(0, T, chunk_frames):
                    parts.append(model.encode(x[:, :, k * FRAME:(k + chunk_frames) * FRAME].to(device)).cpu())
            codes = torch.cat(parts, dim=-1)
    return [codes[i, :, :t].numpy().astype(np.int16) for i, t in enumerate(frames)]


def encode_streaming(model, stream: np.ndarray, frames: int) -> np.ndarray:
    """The same codes, fed 1920 samples at a time through moshi's streaming state (what duplex does live)."""
    import torch
    x = np.zeros(frames * FRAME, np.float32)
    n = min(stream.size, x.size)
    x[:n] = stream[:n]
    out = []
    with torch.no_grad(), model.streaming(1):
        for k in range(frames):
            out.append(model.encode(torch.from_numpy(x[k * FRAME:(k + 1) * FRAME]).view(1, 1, -1)))
    return torch.cat(out, dim=-1)[0].numpy().astype(np.int16)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the dialogues folder (dialogues.jsonl, audio/)")
    ap.add_argument("--codec", required=True, help=".safetensors (export_codec.py) or .pt (train_codec.py checkpoint)")
    ap.add_argument("--tokenizer", help="SentencePiece model (default OUT/tokenizer.model)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--batch", type=int, default=4, help="streams per encoder call")
    ap.add_argument("--split", choices=["train", "eval", "all"], default="all")
    ap.add_argument("--limit", type=int, help="encode at most this many dialogues (tests)")
    ap.add_argument("--chunk-frames", type=int, default=0,
                    help="0: whole streams in one call (codes identical to duplex-style 1-frame streaming); N: "
                         "moshi streaming N frames per call (2.5x faster on CPU at N=25, but ~0.1%% of the last "
                         "codebook's codes differ: float near-ties from other matmul shapes)")
    ap.add_argument("--device", default="cpu", help="torch device (cuda on the GPU machine)")
    ap.add_argument("--delete-audio", action="store_true", help="delete train WAVs after encoding them")
    args = ap.parse_args()

    import torch
    import sentencepiece as spm
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    tok = args.tokenizer or str(out / "tokenizer.model")
    if not os.path.exists(tok):
        raise SystemExit(f"encode_dialogues: no tokenizer {tok} (make it with train_dialogue_tokenizer.py --out {out})")
    sp = spm.SentencePieceProcessor(model_file=tok)
    records = [json.loads(l) for l in open(out / "dialogues.jsonl", encoding="utf-8")]
    if args.split != "all":
        records = [r for r in records if r["split"] == args.split]
    codes_dir = out / "codes"
    codes_dir.mkdir(exist_ok=True)
    todo = [r for r in records if not (codes_dir / f"{r['id']}.npz").exists()]
    if args.limit:
        todo = todo[:args.limit]
    print(f"encode_dialogues: {len(records)} dialogues, {len(records) - len(todo) if not args.limit else '?'} done, "
          f"{len(todo)} to encode with {args.codec} ({args.threads} threads, batch {args.batch})", file=sys.stderr)
    t_load = time.perf_counter()
    model = load_codec(args.codec).to(args.device)
    t_load = time.perf_counter() - t_load
    todo.sort(key=lambda r: r["seconds"])                # similar lengths share a batch
    per = max(1, args.batch // 2)                        # dialogues per batch (two streams each)
    t0 = time.perf_counter()
    audio_s = 0.0
    last = 0.0
    for b in range(0, len(todo), per):
        group = todo[b:b + per]
        streams, frames = [], []
        for r in group:
            T = n_frames(r["seconds"])
            streams += [read_wav(out / r["user_wav"]), read_wav(out / r["system_wav"])]
            frames += [T, T]
        codes = encode_batch(model, streams, frames, args.device, args.chunk_frames)
        for k, r in enumerate(group):
            T = frames[2 * k]
            text = monologue.monologue_tokens(monologue.words_of(r), T, sp)
            path = codes_dir / f"{r['id']}.npz"
            tmp = codes_dir / f"{r['id']}.tmp.npz"
            np.savez(tmp, user=codes[2 * k], system=codes[2 * k + 1], text=text)
            os.replace(tmp, path)
            audio_s += 2 * r["seconds"]
            if args.delete_audio and r["split"] == "train":
                for key in ("user_wav", "system_wav"):
                    (out / r[key]).unlink(missing_ok=True)
        el = time.perf_counter() - t0
        if el - last > 10 or b + per >= len(todo):
            last = el
            print(f"encode_dialogues: {min(b + per, len(todo))}/{len(todo)} dialogues, {audio_s / el:.1f} stream-audio-s/s "
                  f"({audio_s / el / max(1, args.threads):.1f} per thread), elapsed {el:.0f} s", file=sys.stderr, flush=True)
    el = time.perf_counter() - t0
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    manifest["codec"] = {"file": os.path.abspath(args.codec), "sha256": sha256(args.codec), "n_q": N_Q}
    manifest["tokenizer"] = {"file": os.path.abspath(tok), "sha256": sha256(tok)}
    manifest["encoded"] = {"npz": len(list(codes_dir.glob("*.npz"))), "chunk_frames": args.chunk_frames, "last_run_s": round(el, 1),
                           "last_run_stream_audio_s": round(audio_s, 1),
                           "stream_audio_s_per_s": round(audio_s / max(el, 1e-9), 2), "threads": args.threads,
                           "codec_load_s": round(t_load, 2)}
    mpath.write_text(json.dumps(manifest, indent=1))
    print(f"encode_dialogues: {len(todo)} dialogues ({audio_s:.0f} s of streams) in {el:.1f} s = "
          f"{audio_s / max(el, 1e-9):.1f} audio-s/s; codes in {codes_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
