#!/usr/bin/env python3
"""Side-by-side streaming Mimi benchmark: duplex vs Kyutai's rustymimi (Rust/candle) vs Kyutai's
PyTorch `moshi`, on the same real-size random-weight checkpoint, one 80 ms frame per call.

Each implementation runs in its own process with its thread count pinned (duplex: -t; rustymimi:
RAYON_NUM_THREADS; PyTorch: torch.set_num_threads), encodes a frame, decodes the codes it got, and
repeats: `--warmup` untimed frames (default 130, past the transformers' 250-step window, so the
timed frames are the steady state of a long conversation), then `--frames` timed ones. duplex also
reports heap allocations per frame (its built-in malloc counter), peak RSS and, at one thread,
where the time goes per block.

Usage:  tools/reference/.venv/bin/python tools/bench_mimi.py [--frames 30] [--warmup 130]
The weights come from tools/reference/mimi_parity_real.py (created on first use).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finite_json import finite_json  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "reference", "out")
WEIGHTS = os.path.join(OUT, "mimi_random.safetensors")
FRAME = 1920


def test_signal(frames):
    sys.path.insert(0, os.path.join(HERE, "reference"))
    from mimi_reference import speech_like
    return speech_like(frames * FRAME, 4242)


def stats(values):
    v = sorted(values)
    return {"mean": sum(v) / len(v), "p50": v[len(v) // 2], "p95": v[min(len(v) - 1, int(len(v) * 0.95))], "max": v[-1]}


def worker(impl, threads, frames, warmup):
    """Runs inside a fresh process: times one implementation, prints one JSON line."""
    import numpy as np
    audio = test_signal(frames + warmup)
    enc, dec = [], []
    if impl == "rustymimi":
        import rustymimi
        tok = rustymimi.Tokenizer(WEIGHTS, num_codebooks=8)
        for f in range(frames + warmup):
            x = audio[f * FRAME:(f + 1) * FRAME].reshape(1, 1, FRAME)
            t0 = time.perf_counter()
            codes = tok.encode_step(x)
            t1 = time.perf_counter()
            tok.decode_step(codes)
            t2 = time.perf_counter()
            if f >= warmup:
                enc.append(1000 * (t1 - t0))
                dec.append(1000 * (t2 - t1))
    else:
        import torch
        torch.set_num_threads(threads)
        sys.path.insert(0, os.path.join(HERE, "reference"))
        from safetensors.torch import load_file
        from moshi.models import loaders
        model = loaders.get_mimi(None)
        model.load_state_dict(load_file(WEIGHTS))
        model.set_num_codebooks(8)
        x_all = torch.from_numpy(audio)
        with torch.no_grad(), model.streaming(1):
            for f in range(frames + warmup):
                x = x_all[f * FRAME:(f + 1) * FRAME].view(1, 1, FRAME)
                t0 = time.perf_counter()
                codes = model.encode(x)
                t1 = time.perf_counter()
                model.decode(codes)
                t2 = time.perf_counter()
                if f >= warmup:
                    enc.append(1000 * (t1 - t0))
                    dec.append(1000 * (t2 - t1))
    total = [a + b for a, b in zip(enc, dec)]
    print(finite_json({"impl": impl, "threads": threads, "encode_ms": stats(enc), "decode_ms": stats(dec),
                      "total_ms": stats(total), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_json(cmd, env=None):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--warmup", type=int, default=130)
    p.add_argument("--duplex", default=os.path.join(ROOT, ".build", "release", "duplex"))
    p.add_argument("--skip", nargs="*", default=[], choices=["rustymimi", "torch"], help="peers to leave out")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.threads, args.frames, args.warmup)

    if not os.path.exists(WEIGHTS):
        subprocess.run([sys.executable, os.path.join(HERE, "reference", "mimi_parity_real.py"), "--seconds", "1"], check=True)
    if not os.path.exists(args.duplex):
        sys.exit(f"{args.duplex} not found: swift build -c release")

    results = []
    load_before = os.getloadavg()
    for threads in (1, 2):
        env = dict(os.environ)
        cmd = [args.duplex, "codec", "bench", "--mimi", WEIGHTS, "--frames", str(args.frames), "--warmup", str(args.warmup),
               "-t", str(threads), "--json"] + (["--profile"] if threads == 1 else [])
        results.append(run_json(cmd, env))
    for impl in ("rustymimi", "torch"):
        if impl in args.skip:
            continue
        for threads in ((1, 2) if impl == "torch" else (1, 2)):
            env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
            results.append(run_json([sys.executable, os.path.abspath(__file__), "--worker", impl, "--threads", str(threads),
                                     "--frames", str(args.frames), "--warmup", str(args.warmup)], env))
    load_after = os.getloadavg()

    base = next(r for r in results if r["impl"] == "duplex" and r["threads"] == 1)
    print(f"\nMimi streaming, real-size config (random weights), 8 codebooks, {args.frames} timed frames after "
          f"{args.warmup} warm-up frames; ms per 80 ms frame (mean; p95 in brackets).")
    print(f"Machine: {os.cpu_count()} cores, load average {load_before[0]:.1f} before / {load_after[0]:.1f} after.\n")
    print(f"{'implementation':<22}{'threads':>8}{'encode':>16}{'decode':>16}{'total':>16}{'× duplex-1t':>13}{'RSS MiB':>9}")
    for r in results:
        name = {"duplex": "duplex", "rustymimi": "rustymimi (candle)", "torch": "moshi (PyTorch)"}[r["impl"]]
        cells = "".join(f"{r[k]['mean']:>9.1f} [{r[k]['p95']:>4.0f}]" for k in ("encode_ms", "decode_ms", "total_ms"))
        print(f"{name:<22}{r['threads']:>8}{cells}{r['total_ms']['mean'] / base['total_ms']['mean']:>13.2f}{r['peak_rss_mb']:>9.0f}")
    for r in results:
        if r["impl"] == "duplex" and r.get("allocs_per_frame") is not None:
            a = r["allocs_per_frame"]
            print(f"duplex -t {r['threads']}: heap allocations per frame: encode {a['encode']:.2f}, decode {a['decode']:.2f}")
    rusty1 = next((r for r in results if r["impl"] == "rustymimi" and r["threads"] == 1), None)
    if rusty1:
        print(f"\nduplex-1t total / rustymimi-1t total = {base['total_ms']['mean'] / rusty1['total_ms']['mean']:.3f} (goal ≤ 0.2)")
    if "profile_ms" in base:
        print("\nduplex, 1 thread, per block (ms per frame):")
        for b in base["profile_ms"]:
            print(f"  {b['block']:<34}{b['ms']:7.2f}")


if __name__ == "__main__":
    main()
