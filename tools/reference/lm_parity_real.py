#!/usr/bin/env python3
"""Real-width parity (not CI): Kyutai's LMModel + LMGen against `duplex generate`, token level.

Builds the LM at real widths with fewer layers (default "real2": dim 4096, 32 heads, 2 temporal
layers, the real depformer 1024 x 6 with per-step weights, real vocabularies) with seeded random
weights saved in bf16 under tools/reference/out/<config>/ (model.safetensors + config.json),
runs greedy generation in PyTorch (float32 compute on the bf16 weights: the numerics duplex uses)
the way run_inference does (first frame fed twice, n frames in -> n frames out), runs
`duplex generate --input-codes ... --output-codes ... --temperature 0 --text-temperature 0`,
and reports the share of identical tokens.

Usage: "$(tools/reference/setup_venv.sh)" tools/reference/lm_parity_real.py [--config real2] [--frames 40]
       [--duplex .build/release/duplex] [--threads 2]
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from lm_reference import CONFIGS, greedy_generate, load_model, write_random_checkpoint  # noqa: E402

SEED = 777


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="real2", choices=sorted(CONFIGS))
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--duplex", default=os.path.join(ROOT, ".build", "release", "duplex"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = CONFIGS[args.config]
    folder = os.path.join(HERE, "out", args.config)
    weights = os.path.join(folder, "model.safetensors")
    if not os.path.exists(weights):
        print(f"writing random bf16 weights to {weights}")
        write_random_checkpoint(config, weights, SEED)

    g = torch.Generator().manual_seed(SEED + 1)
    user = torch.randint(0, config["card"], (config["n_q"] - config["dep_q"], args.frames), generator=g)
    user_path = os.path.join(folder, "user_codes.npy")
    np.save(user_path, user.numpy().astype(np.int32))

    print(f"PyTorch: greedy LMGen, {args.frames} frames (first fed twice, as run_inference)")
    model = load_model(config, weights, dtype=torch.float32)
    fed = torch.cat([user[:, :1], user], dim=1)
    t0 = time.time()
    outputs, _, _ = greedy_generate(model, fed, hooks=False)
    torch_s = time.time() - t0
    assert outputs[0] is None
    expected = torch.stack(outputs[1:], dim=1).numpy()          # [9, frames]
    del model

    out_path = os.path.join(folder, "duplex_codes.npy")
    cmd = [args.duplex, "generate", "--model", folder, "--first-frame", "run-inference", "--input-codes", user_path, "--output-codes", out_path,
           "--temperature", "0", "--text-temperature", "0", "-t", str(args.threads)]
    print("duplex:", " ".join(cmd))
    t0 = time.time()
    subprocess.run(cmd, check=True)
    duplex_s = time.time() - t0
    actual = np.load(out_path)
    assert actual.shape == expected.shape, f"duplex wrote {actual.shape}, expected {expected.shape}"

    same = actual == expected
    frames_same = same.all(axis=0)
    first_diff = int(np.argmin(frames_same)) if not frames_same.all() else None
    print(f"\nconfig {args.config}: dim {config['dim']}, {config['num_layers']} layers, depformer "
          f"{config['depformer_dim']}x{config['depformer_num_layers']}, text_card {config['text_card']}, card {config['card']}")
    print(f"tokens identical: {same.mean() * 100:.2f} % ({int(same.sum())}/{same.size}); "
          f"text {same[0].mean() * 100:.1f} %, audio {same[1:].mean() * 100:.1f} %")
    print(f"whole frames identical: {frames_same.mean() * 100:.1f} %; "
          + ("all frames identical" if first_diff is None else f"first differing frame {first_diff}"))
    print(f"time: PyTorch f32 {torch_s:.1f} s, duplex (incl. load) {duplex_s:.1f} s")
    return 0 if first_diff is None else 1


if __name__ == "__main__":
    sys.exit(main())
