#!/usr/bin/env python3
"""Real-width parity (not CI) for the other members of the family: Kyutai STT 1B and Hibiki 1B,
built and run by Kyutai's own loader and LMGen, against `duplex generate`, token level.

  --model stt1b     kyutai/stt-1b-en_fr's widths: model_type "stt", dim 2048, 16 heads,
                    hidden_scale 4.125, context 750, max_period 100000, text_card 8000, n_q 32,
                    dep_q 0 (no depformer), 33 zero delays, extra_heads 4 x 6, stt_config
                    {audio_delay 0.5 s, silence prefix 0}.
  --model hibiki1b  kyutai/hibiki-1b-pytorch-bf16's widths: model_type "hibiki", dim 2048,
                    16 heads, hidden_scale 4.125, context 1500, max_period 100000, text_card 48000,
                    n_q 16 / dep_q 8, delays [0, 0, 2 x 7, 0, 2 x 7], depformer 1024 x 6 layers,
                    16 heads, weights per step, `depformer_dim_feedforward: null` (-> 4224), the
                    `conditioners.description` LUT (n_bins 31, dim 16, very_bad..very_good) summed
                    into the input (`fuser.sum`).

Both with L temporal layers (--layers, default 2) instead of 16. The context defaults to the
real one; --context C shrinks it (written into config.json, read by both sides) so that
--frames can run past it several times and the KV rings wrap (the runs reported with this script
use --context 16 --frames 60: 3.75 x the context).

Weights: seeded random (lm_reference.random_checkpoint: laid out by Kyutai's loader on the meta
device), bf16 except `condition_provider.*` (float32, as Kyutai's loader keeps them), saved as
the checkpoint holds them (before the Hibiki `text_emb[2] = text_emb[3]` hack, which both
`CheckpointInfo.get_moshi` and duplex apply themselves) as model.safetensors + config.json under
tools/reference/out/<model>-L<layers>/ (git-ignored). config.json is rewritten on every run
(it holds --context); the weights are drawn once per folder.

Reference: `CheckpointInfo.from_hf_repo(config_path=...)` + `get_moshi(dtype=float32)`, i.e.
float32 compute on the bf16 values, greedy LMGen (argmax text and audio), one user frame per
call (column t at call t: what `duplex generate --input-codes` does with its default
`--first-frame server`; Kyutai's call 0 replaces that frame by the initial tokens on both
sides). Hibiki with --cfg C: LMGen(cfg_coef=C, condition_tensors=run_inference's
get_condition_tensors("hibiki", ...)), i.e. "very_good" and, when C != 1, "very_bad" as the
null batch entry; duplex --cfg C.

duplex: `generate --model DIR --input-codes user.npy --output-codes out.npy --temperature 0
--text-temperature 0 --kv-cache f32 [--cfg C] -t THREADS`.

Alignment: duplex writes one column per frame the LM produced. STT (dep_q 0, delays 0) produces
from call 0 on: duplex [1, T] against LMGen's T returned text tokens. Hibiki (max delay 2)
produces from call 2 on: duplex [9, T - 2] against LMGen's returned frames of calls 2..T-1
(calls 0 and 1 return None). A returned column j (call j + 2) holds the text token and
codebook 0 sampled at call j and codebooks 1..7 sampled at call j + 2 (delays 0, 0, 2 x 7), so
the first mismatch is reported in sampling order (call, then text before depformer step k),
with PyTorch's logits at that sampling: the margin between its choice and the runner-up, and
the logit of duplex's choice.

Usage: "$(tools/reference/setup_venv.sh)" tools/reference/family_parity_real.py --model stt1b
       [--layers 2] [--context 16] [--frames 60] [--cfg 3] [--duplex .build/release/duplex] [--threads 2]
Exit status 0 when every token agrees, 1 otherwise.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from fixtures_hibiki import hibiki_keys  # noqa: E402
from lm_reference import greedy_lmgen, greedy_run, kyutai_checkpoint_info, random_checkpoint, shrunk  # noqa: E402

SEEDS = {"stt1b": 3031, "hibiki1b": 3032}
STT_CONFIG = {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0}  # stt-1b-en_fr


def stt1b(layers):
    """kyutai/stt-1b-en_fr (configs/stt_1b_enfr.json widths), `layers` temporal layers."""
    config = shrunk(dim=2048, num_heads=16, num_layers=layers, hidden_scale=4.125, text_card=8000,
                    context=750)
    config.update(n_q=32, dep_q=0, delays=[0] * 33, max_period=100000.0,
                  extra_heads_num_heads=4, extra_heads_dim=6, fuser=None)
    config.update(model_type="stt", stt_config=dict(STT_CONFIG),
                  lm_gen_config={"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50})
    return config


def hibiki1b(layers):
    """kyutai/hibiki-1b-pytorch-bf16 (checkpoint-compat.md §4; depformer 1024 x 6, 16 heads as
    rust/s2st-1b.toml and the third-party config copies), `layers` temporal layers."""
    return hibiki_keys(shrunk(dim=2048, num_heads=16, num_layers=layers, hidden_scale=4.125, text_card=48000,
                              context=1500, depformer_dim=1024, depformer_num_heads=16, depformer_num_layers=6))


MODELS = {"stt1b": stt1b, "hibiki1b": hibiki1b}


def write_checkpoint(config, folder, seed):
    from safetensors.torch import save_file

    weights = os.path.join(folder, "model.safetensors")
    print(f"writing seeded random weights to {weights}", flush=True)
    t0 = time.time()
    tensors = random_checkpoint(config, seed)
    n = sum(t.numel() for t in tensors.values())
    save_file({k: v.contiguous() for k, v in tensors.items()}, weights + ".partial",
              metadata={"format": "pt", "generator": "tools/reference/family_parity_real.py", "seed": str(seed)})
    os.replace(weights + ".partial", weights)
    print(f"  {len(tensors)} tensors, {n / 1e9:.3f} B values, {time.time() - t0:.0f} s", flush=True)


def pytorch_run(config, folder, user, cfg):
    """Greedy LMGen on Kyutai's loaded model; returns greedy_run's dict, plus the load time."""
    t0 = time.time()
    info = kyutai_checkpoint_info(config, folder)       # writes config.json, reads it back as a repo
    model = info.get_moshi(device="cpu", dtype=torch.float32).eval()
    load_s = time.time() - t0
    kwargs = {}
    if config.get("conditioners"):
        from moshi.run_inference import get_condition_tensors

        assert torch.equal(model.text_emb.weight[2], model.text_emb.weight[3]), "the loader's Hibiki hack"
        kwargs = dict(cfg_coef=cfg, condition_tensors=get_condition_tensors(info.model_type, model, 1, cfg))
    gen = greedy_lmgen(model, **kwargs)
    t0 = time.time()
    run = greedy_run(gen, user)
    run["run_s"] = time.time() - t0
    run["load_s"] = load_s
    del model, gen
    return run


def margin_note(logits, chosen_pt, chosen_dx):
    """PyTorch's view of one sampling: its argmax, runner-up, and where duplex's choice stands."""
    logits = logits.double()
    top2 = torch.topk(logits, 2)
    assert int(top2.indices[0]) == chosen_pt, (int(top2.indices[0]), chosen_pt)
    spread = float(logits.std())
    rank = int((logits > logits[chosen_dx]).sum())
    return (f"PyTorch argmax {chosen_pt} (logit {float(top2.values[0]):.5f}), runner-up {int(top2.indices[1])} "
            f"(margin {float(top2.values[0] - top2.values[1]):.5f}); duplex's {chosen_dx}: logit "
            f"{float(logits[chosen_dx]):.5f}, {float(logits[chosen_pt] - logits[chosen_dx]):.5f} below, rank {rank}; "
            f"logit std {spread:.3f}")


def margins(logits):
    """Top-1 minus top-2 of each row of `logits` [N, V] (what a numerical flip has to overcome)."""
    top2 = torch.topk(logits.double(), 2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--layers", type=int, default=2, help="temporal layers (real: 16)")
    parser.add_argument("--context", type=int, default=None, help="attention context (default the real one: 750 / 1500)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--cfg", type=float, default=1.0, help="Hibiki: classifier-free guidance coefficient")
    parser.add_argument("--kv-cache", default="f32", choices=["f32", "bf16", "q8"], help="duplex's KV cache (default f32)")
    parser.add_argument("--duplex", default=os.path.join(ROOT, ".build", "release", "duplex"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.cfg != 1.0 and args.model != "hibiki1b":
        parser.error("--cfg needs a conditioned model (hibiki1b)")
    torch.set_num_threads(args.threads)

    config = MODELS[args.model](args.layers)
    if args.context is not None:
        config["context"] = args.context
    seed = SEEDS[args.model]
    folder = os.path.join(HERE, "out", f"{args.model}-L{args.layers}")
    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(os.path.join(folder, "model.safetensors")):
        write_checkpoint(config, folder, seed)
    with open(os.path.join(folder, "config.json"), "w") as f:   # the context may differ from the last run
        json.dump(config, f, indent=1)

    n_user = config["n_q"] - config["dep_q"]
    g = torch.Generator().manual_seed(seed + 1)
    user = torch.randint(0, config["card"], (n_user, args.frames), generator=g)
    user_path = os.path.join(folder, "user_codes.npy")
    np.save(user_path, user.numpy().astype(np.int32))

    cfg_note = f", cfg {args.cfg:g}" if config.get("conditioners") else ""
    print(f"PyTorch: Kyutai's loader + greedy LMGen, f32 compute on bf16 weights, {args.frames} calls, one frame each{cfg_note}",
          flush=True)
    run = pytorch_run(config, folder, user, args.cfg)
    max_delay = max(config["delays"])
    returned = run["returned"]
    assert all(r is None for r in returned[:max_delay]) and all(r is not None for r in returned[max_delay:])
    expected = torch.stack(returned[max_delay:], dim=1).numpy()      # [1 + dep_q, frames - max_delay]
    text_logits = run["text_logits"]                                  # [frames, text_card]
    depth_logits = run.get("depth_logits")                            # [frames, dep_q, card]

    out_path = os.path.join(folder, "duplex_codes.npy")
    cmd = [args.duplex, "generate", "--model", folder, "--input-codes", user_path, "--output-codes", out_path,
           "--temperature", "0", "--text-temperature", "0", "--kv-cache", args.kv_cache, "-t", str(args.threads)]
    if config.get("conditioners"):
        cmd += ["--cfg", f"{args.cfg:g}"]
    print("duplex:", " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    duplex_s = time.time() - t0
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        print(proc.stdout)
        raise SystemExit(f"duplex failed with status {proc.returncode}")
    figures = [line for line in proc.stderr.splitlines() if line.startswith("generated ")]
    actual = np.load(out_path)
    print(f"duplex wrote {list(actual.shape)}; LMGen returned {len(returned) - max_delay} frames "
          f"(calls {max_delay}..{args.frames - 1}; calls 0..{max_delay - 1} return None)" if max_delay else
          f"duplex wrote {list(actual.shape)}; LMGen returned {len(returned)} frames (every call)")
    assert actual.shape == expected.shape, f"duplex wrote {actual.shape}, expected {expected.shape}"

    # Per token, the call that sampled it: column j, row r <- call j + delay_r (rows: text, then
    # the dep_q generated codebooks, whose delays are delays[1 .. dep_q]).
    row_delays = [config["delays"][0]] + list(config["delays"][1:1 + config["dep_q"]])
    same = actual == expected
    mismatches = [(j + row_delays[r], r, j) for r, j in zip(*np.nonzero(~same))]
    print(f"\n{args.model}: dim {config['dim']}, {config['num_layers']} temporal layers, context {config['context']}, "
          f"text_card {config['text_card']}, n_q {config['n_q']} / dep_q {config['dep_q']}"
          + (f", depformer {config['depformer_dim']} x {config['depformer_num_layers']}" if config["dep_q"] else "")
          + cfg_note + f"; {args.frames} calls, kv-cache {args.kv_cache}")
    names = ["text"] + [f"audio {k}" for k in range(config["dep_q"])]
    print(f"tokens identical: {same.mean() * 100:.2f} % ({int(same.sum())}/{same.size}); PyTorch's text stream has "
          f"{len(set(expected[0].tolist()))} distinct tokens"
          + (f", its audio {len(set(expected[1:].flatten().tolist()))}" if config["dep_q"] else ""))
    for r, name in enumerate(names):
        row = same[r]
        first = None if row.all() else int(np.argmin(row))
        print(f"  {name:8s} {row.mean() * 100:6.1f} %  " + ("all identical" if first is None else
              f"first mismatch at column {first} (sampled at call {first + row_delays[r]})"))
    text_margin = margins(text_logits)
    print(f"PyTorch text top-1 - top-2 margin over the {len(text_margin)} calls: min {text_margin.min():.2e}, "
          f"median {np.median(text_margin):.4f}")
    if depth_logits is not None:
        dm = margins(depth_logits.reshape(-1, depth_logits.shape[-1]))
        print(f"PyTorch audio top-1 - top-2 margin over the {len(dm)} depformer samplings: min {dm.min():.2e}, "
              f"median {np.median(dm):.4f}")
    if mismatches:
        call, r, j = min(mismatches)
        logits = text_logits[call] if r == 0 else depth_logits[call, r - 1]
        print(f"first mismatch in sampling order: call {call}, {names[r]} (column {j}): PyTorch {expected[r, j]}, "
              f"duplex {actual[r, j]}\n  {margin_note(logits, int(expected[r, j]), int(actual[r, j]))}")
        print(f"  every token sampled at calls 0..{call - 1} agrees")
    else:
        print("all tokens identical")
    print(f"time: PyTorch f32 {run['run_s']:.1f} s for {args.frames} calls ({run['run_s'] * 1000 / args.frames:.0f} ms/call; "
          f"load {run['load_s']:.1f} s), duplex {duplex_s:.1f} s incl. load"
          + (f" ({figures[-1]})" if figures else ""))
    return 0 if not mismatches else 1


if __name__ == "__main__":
    sys.exit(main())
