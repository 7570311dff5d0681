#!/usr/bin/env python3
"""Side-by-side LM step benchmark: duplex vs PyTorch `moshi` (0.2.13) on CPU, identical weights.

For each size, a bf16 checkpoint of seeded random weights is written once to
tools/reference/out/<size>/ (model.safetensors + config.json; the 7B file is 15 GB, reused on
later runs) and both engines time one LM step (temporal transformer + depformer, one frame,
greedy) after a few warm-up steps:

  * PyTorch: `LMGen.step` with the model in bf16 (as Kyutai runs it), in a child process per
    thread count so its memory is returned before duplex runs (the 7B does not fit twice);
  * duplex: `duplex bench-lm --json` (release build), which also measures the machine's
    matrix x vector bandwidth (OpenBLAS sgemv, f32, 184 MB matrix) at the same thread count.

Floor = weight bytes a step streams (every matrix once) / that sgemv bandwidth.

Usage: "$(tools/reference/setup_venv.sh)" tools/bench_lm.py [--sizes tiny small medium 7b]
       [--threads 1 2] [--torch-threads 1 2] [--steps 20] [--skip-torch] [--duplex PATH]
"""
import argparse
import json
import os
import subprocess
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finite_json import finite_json  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REF = os.path.join(HERE, "reference")
sys.path.insert(0, REF)

SEED = 4242
WARMUP = 3


def checkpoint(size):
    from lm_reference import CONFIGS, write_random_checkpoint

    folder = os.path.join(REF, "out", size)
    path = os.path.join(folder, "model.safetensors")
    if not os.path.exists(path):
        print(f"[{size}] writing random bf16 weights to {path}", flush=True)
        t0 = time.time()
        write_random_checkpoint(CONFIGS[size], path, SEED)
        print(f"[{size}] written in {time.time() - t0:.0f} s", flush=True)
    return folder


def torch_worker(size, threads, steps):
    """Child process: prints one JSON line with PyTorch's ms per LMGen.step."""
    import torch
    from lm_reference import CONFIGS, load_model
    from moshi.models.lm import LMGen

    torch.set_num_threads(threads)
    config = CONFIGS[size]
    model = load_model(config, os.path.join(REF, "out", size, "model.safetensors"), dtype=torch.bfloat16)
    gen = LMGen(model, use_sampling=False)
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, config["card"], (1, config["n_q"] - config["dep_q"], steps + WARMUP + 1), generator=g)
    times = []
    with torch.no_grad(), gen.streaming(1):
        for t in range(codes.shape[2]):
            t0 = time.perf_counter()
            gen.step(codes[:, :, t:t + 1])
            if t > WARMUP:
                times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    print(finite_json({"ms_median": times[len(times) // 2], "ms_min": times[0], "steps": len(times)}))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "medium", "7b"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="duplex thread counts")
    parser.add_argument("--torch-threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--duplex", default=os.path.join(ROOT, ".build", "release", "duplex"))
    parser.add_argument("--torch-worker", nargs=3, metavar=("SIZE", "THREADS", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_worker:
        torch_worker(args.torch_worker[0], int(args.torch_worker[1]), int(args.torch_worker[2]))
        return
    rows = []
    for size in args.sizes:
        folder = checkpoint(size)
        row = {"size": size}
        if not args.skip_torch:
            for t in args.torch_threads:
                print(f"[{size}] PyTorch bf16, {t} thread(s) ...", flush=True)
                r = run_json([sys.executable, os.path.abspath(__file__), "--torch-worker", size, str(t), str(args.steps)])
                row[f"torch{t}"] = r["ms_median"]
        for t in args.threads:
            print(f"[{size}] duplex, {t} thread(s) ...", flush=True)
            d = run_json([args.duplex, "bench-lm", "--model", folder, "--steps", str(args.steps), "--warmup", str(WARMUP),
                          "--json", "-t", str(t)])
            row[f"duplex{t}"] = d["ms_per_step_median"]
            row[f"floor{t}"] = d["floor_ms"]
            row.update(gb=d["weight_bytes_per_step"] / 1e9)
            row[f"sgemv{t}"] = d["sgemv_gbs"]
        rows.append(row)
        print(finite_json(row), flush=True)

    torch_cols = [] if args.skip_torch else [f"torch{t}" for t in args.torch_threads]
    head = ["size", "GB/step"]
    for t in args.threads:
        head += [f"sgemv GB/s (t={t})", f"floor ms (t={t})", f"duplex ms (t={t})", f"duplex/floor (t={t})"]
    head += [f"PyTorch ms (t={c[5:]})" for c in torch_cols] + (["best PyTorch / best duplex"] if torch_cols else [])
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["size"], f"{r['gb']:.3f}"]
        for t in args.threads:
            cells += [f"{r[f'sgemv{t}']:.1f}", f"{r[f'floor{t}']:.2f}", f"{r[f'duplex{t}']:.2f}",
                      f"{r[f'duplex{t}'] / r[f'floor{t}']:.2f}"]
        cells += [f"{r[c]:.1f}" for c in torch_cols]
        if torch_cols:
            best_duplex = min(r[f"duplex{t}"] for t in args.threads)
            cells.append(f"{min(r[c] for c in torch_cols) / best_duplex:.1f}x")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
