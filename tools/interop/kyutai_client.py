#!/usr/bin/env python3
"""Talks to a chat server the way Kyutai's own client does, and checks what comes back.

Like `moshi.client` (moshi==0.2.13): an aiohttp websocket to /api/chat, one 1920-sample frame
(80 ms at 24 kHz) at a time through `sphn.OpusStreamWriter(24000).append_pcm`, each non-empty
result sent as b"\\x01" + bytes; received kind 1 goes through `sphn.OpusStreamReader(24000)`,
kind 2 is text. Sampling parameters travel as query parameters, as Kyutai's web client sends them.

Checks (exit status 1 if any fails; a JSON summary goes to stdout):
  * the first message is the handshake (kind 0), and it arrives before any audio is sent;
  * audio comes back continuously: about one 80 ms frame per input frame, no long gaps;
  * it decodes (Kyutai's sphn reader), and is not silent;
  * text (kind 2) arrives (at least --min-text pieces);
  * with --expect-echo (the test server's echo processor): the returned audio follows the input.

Usage: kyutai_client.py --url ws://127.0.0.1:8998/api/chat [--wav speech.wav] [--frames 50] [--fast]
"""
import argparse
import asyncio
import json
import os
import sys
import time

import aiohttp
import numpy as np
import sphn


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from finite_json import finite_json  # noqa: E402


SAMPLE_RATE = 24000
FRAME = 1920


def speech_like(n: int) -> np.ndarray:
    """A voiced, speech-like signal: harmonics of a gliding pitch under a 3 Hz syllable envelope."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    s = sum(np.sin(phase * h) / h for h in range(1, 7))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 3 * t)
    return (0.2 * s * syllables).astype(np.float32)


def envelope(x: np.ndarray, block: int = 480) -> np.ndarray:
    n = len(x) // block
    return np.sqrt((x[: n * block].reshape(n, block).astype(np.float64) ** 2).mean(axis=1))


async def run(args) -> dict:
    if args.wav:
        pcm, _ = sphn.read(args.wav, sample_rate=SAMPLE_RATE)  # Kyutai's reader, resampled to 24 kHz
        pcm = pcm[0].astype(np.float32)
    else:
        pcm = speech_like(args.frames * FRAME)
    frames = len(pcm) // FRAME
    if args.frames:
        frames = min(frames, args.frames)
    pcm = pcm[: frames * FRAME]

    writer = sphn.OpusStreamWriter(SAMPLE_RATE)
    reader = sphn.OpusStreamReader(SAMPLE_RATE)
    kinds = []
    texts = []
    out_chunks = []
    audio_times = []
    errors = []
    handshake = asyncio.Event()

    async with aiohttp.ClientSession() as session:
        # --fingerprint pins the server's certificate (a self-signed one from `duplex serve
        # --tls-self-signed`, whose SHA-256 fingerprint it prints) instead of a CA.
        tls = aiohttp.Fingerprint(bytes.fromhex(args.fingerprint.replace(":", ""))) if args.fingerprint else None
        async with session.ws_connect(args.url, max_msg_size=0, ssl=tls if tls else True) as ws:

            async def receive():
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.BINARY:
                        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
                        continue
                    data = msg.data
                    if not data:
                        continue
                    kind = data[0]
                    kinds.append(kind)
                    if kind == 0:
                        handshake.set()
                    elif kind == 1:
                        audio_times.append(time.monotonic())
                        chunk = reader.append_bytes(data[1:])
                        if chunk is not None and len(chunk):
                            out_chunks.append(np.asarray(chunk, dtype=np.float32).reshape(-1))
                    elif kind == 2:
                        texts.append(data[1:].decode("utf-8"))
                    elif kind == 5:
                        errors.append(data[1:].decode("utf-8", errors="replace"))

            receiver = asyncio.create_task(receive())
            waiter = asyncio.ensure_future(handshake.wait())
            await asyncio.wait({waiter, receiver}, timeout=args.handshake_timeout, return_when=asyncio.FIRST_COMPLETED)
            if not handshake.is_set():
                waiter.cancel()
                raise RuntimeError(f"no handshake; message kinds received {kinds}, server errors {errors}")
            start = time.monotonic()
            for i in range(frames):
                if not args.fast:
                    due = start + i * FRAME / SAMPLE_RATE
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                payload = writer.append_pcm(pcm[i * FRAME : (i + 1) * FRAME])
                if len(payload) > 0:
                    await ws.send_bytes(b"\x01" + payload)
            # Wait for the tail: the last responses, at most a few frames late.
            deadline = time.monotonic() + args.tail_seconds
            while time.monotonic() < deadline:
                got = sum(len(c) for c in out_chunks) // FRAME
                if got >= frames:
                    await asyncio.sleep(0.2)  # anything beyond one frame per frame would show up now
                    break
                await asyncio.sleep(0.02)
            await ws.close()
            receiver.cancel()

    out = np.concatenate(out_chunks) if out_chunks else np.zeros(0, dtype=np.float32)
    out_frames = len(out) / FRAME
    gaps = np.diff(audio_times) if len(audio_times) > 1 else np.zeros(0)
    summary = {
        "url": args.url,
        "frames_sent": frames,
        "first_kind": kinds[0] if kinds else None,
        "audio_messages": kinds.count(1),
        "frames_received": out_frames,
        "max_gap_ms": float(gaps.max() * 1000) if len(gaps) else None,
        "median_gap_ms": float(np.median(gaps) * 1000) if len(gaps) else None,
        "output_rms": float(np.sqrt((out.astype(np.float64) ** 2).mean())) if len(out) else 0.0,
        "text_pieces": len(texts),
        "text": "".join(texts)[:200],
        "errors": errors,
        "paced": not args.fast,
    }
    failures = []
    if summary["first_kind"] != 0:
        failures.append(f"the first message is kind {summary['first_kind']}, not the handshake (0)")
    if not (frames - args.frame_slack <= out_frames <= frames + 1):
        failures.append(f"{out_frames:.2f} frames came back for {frames} sent (expected about one per frame)")
    if not args.fast and len(gaps) and gaps.max() > args.max_gap:
        failures.append(f"audio stalled: {gaps.max() * 1000:.0f} ms between two audio messages")
    if summary["output_rms"] < 1e-4:
        failures.append("the audio that came back is silent or did not decode")
    if len(texts) < args.min_text:
        failures.append(f"{len(texts)} text pieces arrived, expected at least {args.min_text}")
    if errors:
        failures.append(f"the server sent errors: {errors}")
    if args.expect_echo and len(out) >= 2 * FRAME:
        # The echo returns input frame o with output frame o+1: compare envelopes one frame apart.
        n = min(len(pcm) - FRAME, len(out) - FRAME)
        a, b = envelope(pcm[:n]), envelope(out[FRAME : FRAME + n])
        corr = float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 else 0.0
        summary["echo_envelope_correlation"] = corr
        if corr < 0.8:
            failures.append(f"the echoed audio does not follow the input (envelope correlation {corr:.2f})")
    summary["failures"] = failures
    summary["ok"] = not failures
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="ws://HOST:PORT/api/chat, query parameters included")
    p.add_argument("--wav", help="speech to send (any rate; resampled to 24 kHz by sphn). Default: a synthetic voice")
    p.add_argument("--frames", type=int, default=50, help="frames to send (80 ms each)")
    p.add_argument("--fast", action="store_true", help="send as fast as possible instead of in real time")
    p.add_argument("--min-text", type=int, default=1)
    p.add_argument("--frame-slack", type=int, default=2, help="frames the server may still owe at the end")
    p.add_argument("--max-gap", type=float, default=0.4, help="longest silence between audio messages, seconds")
    p.add_argument("--tail-seconds", type=float, default=3.0)
    p.add_argument("--handshake-timeout", type=float, default=60.0)
    p.add_argument("--expect-echo", action="store_true")
    p.add_argument("--fingerprint", help="wss://: accept exactly the certificate with this SHA-256 fingerprint (AA:BB:…)")
    args = p.parse_args()
    try:
        summary = asyncio.run(run(args))
    except Exception as e:  # a refused or broken connection is a failed check, with its reason
        summary = {"ok": False, "failures": [f"{type(e).__name__}: {e}"]}
    print(finite_json(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
