#!/usr/bin/env python3
"""Loss curve of a train_codec.py run: OUT/train_log.jsonl (+ eval_log.jsonl) → a PNG (matplotlib,
if installed) and always a TSV (step, minutes, each loss; eval rows marked).

  python3 tools/train/plot_curve.py out/codec-train [-o curve.png]
"""
import argparse
import json
import os


def read(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", help="train_codec.py --out folder")
    ap.add_argument("-o", "--output", help="PNG (default RUN/curve.png)")
    args = ap.parse_args()
    train = read(os.path.join(args.run, "train_log.jsonl"))
    evals = read(os.path.join(args.run, "eval_log.jsonl"))
    keys = [k for k in ("total", "mel", "stft", "wave", "commit", "ctc", "adv", "fm", "disc", "entropy") if any(k in r for r in train)]
    ekeys = sorted({k for r in evals for k in r if k.startswith(("mel_", "per_"))})
    tsv = os.path.join(args.run, "curve.tsv")
    with open(tsv, "w") as f:
        f.write("\t".join(["kind", "step", "minutes"] + keys + ekeys) + "\n")
        for r in train:
            f.write("\t".join(["train", str(r["step"]), f"{r.get('minutes', 0):.3f}"] + [f"{r.get(k, float('nan')):.5f}" for k in keys] + [""] * len(ekeys)) + "\n")
        for r in evals:
            f.write("\t".join(["eval", str(r["step"]), f"{r.get('minutes', 0):.3f}"] + [""] * len(keys) + [f"{r.get(k, float('nan')):.5f}" for k in ekeys]) + "\n")
    print(f"wrote {tsv}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: PNG skipped")
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for k in keys:
        if k in ("entropy",):
            continue
        pts = [(r["step"], r[k]) for r in train if k in r]
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], label=k)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training losses (window means)")
    axes[0].legend()
    for k in ekeys:
        pts = [(r["step"], r[k]) for r in evals if k in r]
        axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
    axes[1].set_xlabel("step")
    axes[1].set_title("eval: mel loss and CTC phoneme error rate")
    axes[1].legend()
    fig.tight_layout()
    out = args.output or os.path.join(args.run, "curve.png")
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
