#!/usr/bin/env python3
"""Kyutai-style clients that keep starting conversations, for tools/deploy/rolling_restart.sh.

Each of --clients loops until --stop-file exists: connect to --url (through the balancer), wait
for the handshake (kind 0), send --frames 80 ms frames in real time as Ogg Opus (sphn, as
moshi.client does), read the audio (kind 1) and text (kind 2) back, close, pause, repeat. One JSON
line per attempt goes to --out:

  {"client", "start", "admitted", "end", "server", "result", "frames_sent", "frames_received", "detail"}

result is "ok" (the whole conversation: handshake, about one frame back per frame sent, no error),
"refused" (no conversation began: HTTP error, connection failure, or kind 5 before the handshake;
the client waits and tries again, as a real client would) or "cut" (a conversation that began and
did not get its whole answer: a kind-5 error after the handshake, a close, or frames missing).
"server" is the X-Duplex-Server header the balancer adds to the 101 response.
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

SAMPLE_RATE = 24000
FRAME = 1920


def speech_like(n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    s = sum(np.sin(phase * h) / h for h in range(1, 7))
    return (0.2 * s * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


async def conversation(session: aiohttp.ClientSession, args, pcm: np.ndarray) -> dict:
    row = {"start": time.time(), "server": None, "result": "refused", "frames_sent": 0, "frames_received": 0.0, "detail": ""}
    writer, reader = sphn.OpusStreamWriter(SAMPLE_RATE), sphn.OpusStreamReader(SAMPLE_RATE)
    received, errors = [], []
    handshake = asyncio.Event()
    closed = asyncio.Event()
    try:
        async with session.ws_connect(args.url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
            row["admitted"] = time.time()  # the 101 arrived (after any wait in the balancer's queue)
            response = getattr(ws, "_response", None)
            if response is not None:
                row["server"] = response.headers.get("X-Duplex-Server")

            async def receive():
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                        continue
                    kind = msg.data[0]
                    if kind == 0:
                        handshake.set()
                    elif kind == 1:
                        chunk = reader.append_bytes(msg.data[1:])
                        if chunk is not None and len(chunk):
                            received.append(len(np.asarray(chunk).reshape(-1)))
                    elif kind == 5:
                        errors.append(msg.data[1:].decode("utf-8", errors="replace"))
                closed.set()

            receiver = asyncio.create_task(receive())
            waiter = asyncio.ensure_future(handshake.wait())
            await asyncio.wait({waiter, receiver}, timeout=args.handshake_timeout, return_when=asyncio.FIRST_COMPLETED)
            if not handshake.is_set():
                waiter.cancel()
                receiver.cancel()
                row["detail"] = f"no handshake (errors {errors}, close {ws.close_code})"
                return row
            row["result"] = "cut"  # from here on, anything short of the whole answer is a cut conversation
            start = time.monotonic()
            for i in range(args.frames):
                delay = start + i * FRAME / SAMPLE_RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if closed.is_set():
                    break
                payload = writer.append_pcm(pcm[i * FRAME:(i + 1) * FRAME])
                if len(payload):
                    await ws.send_bytes(b"\x01" + payload)
                row["frames_sent"] = i + 1
            deadline = time.monotonic() + args.tail_seconds
            while time.monotonic() < deadline and sum(received) // FRAME < args.frames and not closed.is_set():
                await asyncio.sleep(0.02)
            row["frames_received"] = sum(received) / FRAME
            server_closed = closed.is_set()
            await ws.close()
            receiver.cancel()
            if errors:
                row["detail"] = f"server error {errors} (close {ws.close_code})"
            elif server_closed and row["frames_received"] < args.frames - args.frame_slack:
                row["detail"] = f"closed by the server (code {ws.close_code})"
            elif row["frames_sent"] < args.frames or row["frames_received"] < args.frames - args.frame_slack:
                row["detail"] = f"{row['frames_received']:.1f} frames back for {row['frames_sent']} sent"
            else:
                row["result"] = "ok"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        row["detail"] = f"{type(e).__name__}: {e}"
    return row


async def client(index: int, args, pcm: np.ndarray, out) -> None:
    await asyncio.sleep(index * args.stagger)
    async with aiohttp.ClientSession() as session:
        while not os.path.exists(args.stop_file):
            row = await conversation(session, args, pcm)
            row["client"] = index
            row["end"] = time.time()
            out.write(json.dumps(row) + "\n")
            out.flush()
            await asyncio.sleep(args.pause if row["result"] != "refused" else args.retry_after)


async def main_async(args) -> None:
    pcm = speech_like(args.frames * FRAME)
    with open(args.out, "w") as out:
        await asyncio.gather(*(client(i, args, pcm, out) for i in range(args.clients)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--frames", type=int, default=75, help="frames per conversation (80 ms each)")
    p.add_argument("--stop-file", required=True, help="no new conversation starts once this file exists")
    p.add_argument("--out", required=True)
    p.add_argument("--stagger", type=float, default=0.4, help="seconds between the clients' first conversations")
    p.add_argument("--pause", type=float, default=0.3, help="seconds between a client's conversations")
    p.add_argument("--retry-after", type=float, default=0.5, help="seconds before trying again after a refusal")
    p.add_argument("--frame-slack", type=int, default=3)
    p.add_argument("--tail-seconds", type=float, default=5.0)
    p.add_argument("--handshake-timeout", type=float, default=30.0)
    asyncio.run(main_async(p.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
