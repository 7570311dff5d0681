#!/usr/bin/env python3
"""Trains the default model's Mimi (models/default/config.json → duplex.mimi: filters 32, latent
256, 4 transformer layers × 4 heads, feed-forward 1024, codebook dim 128; 8 codebooks × 2048 bins,
12.5 Hz) built from moshi 0.2.13's own classes, so the checkpoint is Kyutai's format by construction.

Losses: multi-resolution mel (+ optional log-STFT), waveform L1, commitment (moshi's), a CTC
phoneme loss on codebook 0's quantized output (the semantic codebook), and optionally (--adv) a
small multi-scale STFT discriminator with hinge + feature-matching losses. Codebooks are moshi's
EMA EuclideanCodebooks (k-means init, decay 0.99, dead-code replacement), with the detach fix for
moshi 0.2.13's ≈9 MB/step leak.

Data: a corpus manifest.tsv (path, split, voice, seconds, text, phonemes). A batch item is either
whole training utterances packed from the start of the segment (each zero-padded to a 1920-sample
frame), with the concatenated phonemes as its CTC target over exactly those frames, the rest of
the segment filled with a random crop; or (--crop-fraction of items, and every item whose
utterances do not fit) a plain random crop with no CTC target. Mimi is causal, so audio after the
packed utterances cannot change the frames CTC reads.

Resumable (--resume: model incl. EMA buffers, heads, optimizers, schedulers, RNG states, the
codebooks' dead-code counters, step); deterministic for a --seed on CPU (batches come from an RNG
seeded by (seed, step)); time-boxed by --minutes and --steps.
"""
import argparse
import csv
import json
import os
import sys
import time
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import codec_losses as L  # noqa: E402
import mimi_arch  # noqa: E402
import train_common as tc  # noqa: E402
from train_common import rng_state  # noqa: E402

SR = 24000
FRAME = mimi_arch.FRAME
STRIP = set("ˈˌ‿_-")  # stress marks, ties and separators espeak may emit: not phonemes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, help="corpus manifest.tsv (paths relative to its folder)")
    p.add_argument("--out", default="out/codec-train", help="checkpoints and logs go here")
    tc.add_resume_flag(p)
    p.add_argument("--init-from", help="start (step 0, fresh optimizer) from the weights of a checkpoint (.pt) "
                   "or an exported Mimi .safetensors (e.g. one brought back from the GPU machine)")
    p.add_argument("--model-config", default=mimi_arch.DEFAULT_MODEL_CONFIG, help="config.json with duplex.mimi")
    p.add_argument("--n-q", type=int, default=8, help="codebooks in all (1 semantic + n_q-1 acoustic)")
    tc.add_length_flags(p)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--segment-seconds", type=float, default=3.84,
                   help="rounded down to whole 80 ms frames; longer than most utterances, so CTC sees them whole")
    p.add_argument("--crop-fraction", type=float, default=0.25, help="items that are plain random crops (no CTC)")
    p.add_argument("--gain-min", type=float, default=0.5, help="random gain in [gain-min, 1] per item")
    tc.add_schedule_flags(p, lr=7e-4, warmup_steps=200, schedule_help="after warm-up, over --steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--mel-weight", type=float, default=1.0)
    p.add_argument("--stft-weight", type=float, default=0.0, help="log-STFT + spectral convergence (0: off)")
    p.add_argument("--wave-weight", type=float, default=0.1)
    p.add_argument("--commit-weight", type=float, default=1.0)
    p.add_argument("--init", choices=["unit", "torch"], default="unit",
                   help="conv init: unit = variance-preserving N(0, 1/fan_in), zero biases (mimi_arch."
                        "init_for_signal_propagation); torch = PyTorch's default, which starves SEANet of signal")
    p.add_argument("--no-quantization-rate", type=float, default=0.5,
                   help="moshi's: share of items decoded from the unquantized latent (acoustic RVQ)")
    p.add_argument("--ctc-weight", type=float, default=0.5, help="0 disables the semantic CTC head")
    p.add_argument("--ctc-slots", type=int, default=4, help="CTC slots per 80 ms frame")
    p.add_argument("--ctc-hidden", type=int, default=256)
    p.add_argument("--adv", action="store_true", help="add the multi-scale STFT discriminator")
    p.add_argument("--adv-start-step", type=int, default=2000)
    p.add_argument("--adv-weight", type=float, default=1.0)
    p.add_argument("--fm-weight", type=float, default=2.0)
    p.add_argument("--disc-lr", type=float, default=3e-4)
    p.add_argument("--disc-channels", type=int, default=32)
    tc.add_device_flags(p, threads=2, bf16_help="bf16 autocast (cuda only)")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder/decoder convs (cuda)")
    tc.add_checkpoint_flags(p)
    p.add_argument("--eval-per-split", type=int, default=16, help="eval utterances per eval split (0: no eval)")
    p.add_argument("--eval-max-seconds", type=float, default=8.0)
    p.add_argument("--no-leak-fix", action="store_true", help=argparse.SUPPRESS)  # to measure the leak only
    p.add_argument("--max-train-utterances", type=int, default=0, help="use only the first N (0: all)")
    return p.parse_args(argv)


# ---------------------------------------------------------------- data

def phoneme_units(text):
    """espeak IPA → units: one per character, stress marks/ties dropped, any run of white space
    one word-boundary unit ' '."""
    units = []
    for ch in text.strip():
        if ch.isspace():
            if units and units[-1] != " ":
                units.append(" ")
        elif ch not in STRIP:
            units.append(ch)
    while units and units[-1] == " ":
        units.pop()
    return units


def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getframerate() != SR or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 24 kHz mono 16-bit WAV, got {w.getframerate()} Hz, "
                             f"{w.getnchannels()} ch, {8 * w.getsampwidth()} bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def read_manifest(path):
    root = os.path.dirname(os.path.abspath(path))
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            p = r["path"]
            r["path"] = p if os.path.isabs(p) else os.path.join(root, p)
            rows.append(r)
    if not rows:
        raise SystemExit(f"{path}: no rows")
    return rows


class Corpus:
    """All training audio in one int16 array (utterances back to back), with per-utterance offsets,
    lengths and phoneme unit ids."""

    def __init__(self, rows, vocab, workers=8):
        with ThreadPoolExecutor(workers) as ex:
            waves = list(ex.map(read_wav, [r["path"] for r in rows]))
        self.lengths = np.array([len(w) for w in waves], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.audio = np.concatenate(waves) if waves else np.zeros(0, np.int16)
        self.units = [[vocab[u] for u in phoneme_units(r.get("phonemes", "")) if u in vocab] for r in rows]
        self.rows = rows

    @property
    def seconds(self):
        return len(self.audio) / SR


class Batcher:
    def __init__(self, corpus, seed, batch_size, segment, ctc, crop_fraction, gain_min, space_id):
        self.c, self.seed, self.B, self.S = corpus, seed, batch_size, segment
        self.ctc, self.crop_fraction, self.gain_min, self.space = ctc, crop_fraction, gain_min, space_id
        padded = ((corpus.lengths + FRAME - 1) // FRAME) * FRAME
        self.padded = padded
        self.fit = np.nonzero((padded <= segment) & np.array([len(u) > 0 for u in corpus.units]))[0]
        if len(corpus.audio) < segment:
            raise SystemExit(f"corpus has {len(corpus.audio)} samples, less than one segment ({segment})")

    def batch(self, step):
        """Deterministic in (seed, step): the same batch on resume."""
        rng = np.random.default_rng([self.seed, step])
        c, S = self.c, self.S
        x = np.zeros((self.B, S), np.float32)
        targets, frames = [], []
        for b in range(self.B):
            pos, tgt = 0, []
            if self.ctc and len(self.fit) and rng.random() >= self.crop_fraction:
                while True:
                    i = self.fit[rng.integers(len(self.fit))]
                    if pos + self.padded[i] > S:
                        break
                    n = c.lengths[i]
                    x[b, pos:pos + n] = c.audio[c.starts[i]:c.starts[i] + n]
                    if tgt:
                        tgt.append(self.space)
                    tgt += c.units[i]
                    pos += int(self.padded[i])
            targets.append(tgt)
            frames.append(pos // FRAME)
            rest = S - pos
            if rest > 0:
                o = int(rng.integers(0, len(c.audio) - rest + 1))
                x[b, pos:] = c.audio[o:o + rest]
            x[b] *= rng.uniform(self.gain_min, 1.0) / 32768.0
        return x, targets, np.array(frames)


# ---------------------------------------------------------------- checkpoints

def codebooks(model):
    q = model.quantizer
    return [layer._codebook for rvq in (q.rvq_first, q.rvq_rest) for layer in rvq.vq.layers]


# ---------------------------------------------------------------- eval

class Semantic:
    """Captures codebook 0's quantized output (rvq_first's QuantizedResult.x, [B, D, T])."""

    def __init__(self, model):
        self.x = None
        model.quantizer.rvq_first.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.x = output.x


@torch.no_grad()
def evaluate(model, sem, head, spectral, sets, device, autocast):
    """Per eval split: mean mel loss of the reconstructions (quantized, eval mode: 8 codebooks) and,
    with the CTC head, the phoneme error rate of its greedy decode."""
    model.eval()
    res = {}
    for name, items in sets.items():
        mels, errs, total = [], 0, 0
        for audio, units in items:
            n = len(audio)
            # Padded to whole 0.96 s blocks: few distinct shapes (cuDNN benchmarks each new one);
            # Mimi is causal, so the padding cannot change the frames of the utterance itself.
            block = 12 * FRAME
            padded = ((n + block - 1) // block) * block
            x = torch.zeros(1, 1, padded)
            x[0, 0, :n] = torch.from_numpy(audio)
            x = x.to(device)
            with autocast():
                y = model(x).x
            mel, _ = spectral(y[:, 0, :n], x[:, 0, :n])
            mels.append(float(mel))
            if head is not None and units:
                logits = head(sem.x.float())
                hyp = L.greedy_decode(logits[0].float(), ((n + FRAME - 1) // FRAME) * head.slots)
                errs += L.edit_distance(hyp, units)
                total += len(units)
        res[f"mel_{name}"] = float(np.mean(mels)) if mels else float("nan")
        if head is not None and total:
            res[f"per_{name}"] = errs / total
    model.train()
    return res


# ---------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    device = tc.setup_run(args)
    if args.device == "cuda":
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # picks conv algorithms by timing: not bit-deterministic
    if not args.no_leak_fix:
        mimi_arch.patch_codebook_leak()

    resume, ckpt = tc.load_resume(args)

    init_src = None
    if args.init_from and not ckpt:
        if args.init_from.endswith(".safetensors"):
            # The exported file records its config; its CTC head and units travel beside it.
            from safetensors import safe_open
            with safe_open(args.init_from, "pt") as f:
                meta = f.metadata() or {}
            side = args.init_from + ".ctc_head.pt"
            init_src = torch.load(side, map_location="cpu", weights_only=False) if os.path.exists(side) else {}
            init_src["mimi_config"] = json.loads(meta["config"])
        else:
            init_src = torch.load(args.init_from, map_location="cpu", weights_only=False)
    source = ckpt or init_src
    cfg = source["mimi_config"] if source else mimi_arch.mimi_config(args.model_config, args.n_q)
    rows = read_manifest(args.manifest)
    train_rows = [r for r in rows if r["split"] == "train"]
    if args.max_train_utterances:
        train_rows = train_rows[:args.max_train_utterances]
    if source and source.get("vocab"):
        units = source["vocab"]
    else:
        seen = sorted({u for r in train_rows for u in phoneme_units(r.get("phonemes", "")) if u != " "})
        units = ["<blank>", " "] + seen
    vocab = {u: i for i, u in enumerate(units)}

    t_load = time.time()
    corpus = Corpus(train_rows, vocab)
    eval_sets = {}
    if args.eval_per_split:
        for split in ("eval_trained_voice", "eval_heldout_voice"):
            chosen = sorted((r for r in rows if r["split"] == split), key=lambda r: r["path"])[:args.eval_per_split]
            items = []
            for r in chosen:
                a = read_wav(r["path"])[:int(args.eval_max_seconds * SR)].astype(np.float32) / 32768.0
                full = float(r.get("seconds") or 0) <= args.eval_max_seconds + 1e-6
                u = [vocab[x] for x in phoneme_units(r.get("phonemes", "")) if x in vocab] if full else []
                items.append((a, u))
            if items:
                eval_sets[split.replace("eval_", "")] = items
    print(f"corpus: {len(train_rows)} train utterances, {corpus.seconds / 3600:.2f} h "
          f"(loaded in {time.time() - t_load:.1f} s); eval: " +
          ", ".join(f"{k} {len(v)}" for k, v in eval_sets.items()) + f"; {len(units)} CTC units", flush=True)

    model = mimi_arch.build_mimi(cfg, no_quantization_rate=args.no_quantization_rate)
    if args.init == "unit":
        # Before anything else draws from torch's RNG, so the run stays a function of the seed.
        mimi_arch.init_for_signal_propagation(model)
    model = model.to(device)
    use_ctc = args.ctc_weight > 0
    if use_ctc:
        # Codebook 0 always quantized, so the CTC head reads exactly what the LM will see (its
        # gradient reaches the encoder through moshi's straight-through estimator).
        model.quantizer.rvq_first.no_quantization_rate = 0.0
    sem = Semantic(model)
    head = L.CTCHead(cfg["quantizer"]["output_dimension"], len(units), args.ctc_slots, args.ctc_hidden).to(device) if use_ctc else None
    spectral = L.MultiResolutionSpectralLoss(SR, stft_weight=args.stft_weight).to(device)
    disc = L.MultiScaleSTFTDiscriminator(channels=args.disc_channels).to(device) if args.adv else None

    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.8, 0.99), weight_decay=args.weight_decay)

    opt_d = torch.optim.AdamW(disc.parameters(), lr=args.disc_lr, betas=(0.5, 0.9)) if disc is not None else None

    step, best, total_seconds = 0, float("inf"), 0.0
    if ckpt:
        model.load_state_dict(ckpt["model"])
        if head is not None and ckpt.get("ctc_head"):
            head.load_state_dict(ckpt["ctc_head"])
        opt.load_state_dict(ckpt["opt"])
        if disc is not None and ckpt.get("disc"):
            disc.load_state_dict(ckpt["disc"])
            opt_d.load_state_dict(ckpt["opt_d"])
        for cb, n in zip(codebooks(model), ckpt["unused_check"]):
            cb._next_unused_check = n
            cb._cached_initialized = False
        model.quantizer.rvq_rest.rng_dropout.setstate(ckpt["rng_dropout"])
        step, best, total_seconds = tc.restore_counters(ckpt, resume, best)
    elif init_src is not None:
        from safetensors.torch import load_file
        weights = load_file(args.init_from) if args.init_from.endswith(".safetensors") else init_src["model"]
        model.load_state_dict(weights)  # a .safetensors: moshi's load hook maps Kyutai's attention names
        init_head = init_src.get("ctc_head")
        if head is not None and init_head is not None and init_src.get("vocab") == units:
            head.load_state_dict(init_head)
        else:
            init_head = None
        for cb in codebooks(model):
            cb._cached_initialized = False
        print(f"initialised from {args.init_from} (CTC head {'loaded' if init_head is not None else 'fresh'})", flush=True)
    model.train()

    n_params = sum(p.numel() for p in model.parameters())
    print(f"Mimi: {n_params / 1e6:.2f} M parameters, {cfg['quantizer']['n_q']} codebooks × {cfg['quantizer']['bins']}; "
          f"device {args.device}, threads {args.threads}, bf16 {args.bf16 and args.device == 'cuda'}, "
          f"batch {args.batch_size} × {args.segment_seconds:.2f} s, ctc {args.ctc_weight}, adv {args.adv}", flush=True)

    segment = max(1, int(args.segment_seconds * SR) // FRAME) * FRAME
    batcher = Batcher(corpus, args.seed, args.batch_size, segment, use_ctc, args.crop_fraction, args.gain_min, vocab[" "])
    autocast, _ = tc.autocast_for(args)

    if args.compile and args.device == "cuda":
        # In place (nn.Module.compile), so state-dict names stay Kyutai's (no "_orig_mod.").
        model.encoder.compile()
        model.decoder.compile()

    stop = tc.stop_on_signals()

    logf, evalf = tc.open_logs(args)

    def checkpoint(tag):
        nonlocal best
        ev = evaluate(model, sem, head, spectral, eval_sets, device, autocast) if eval_sets else {}
        mel_keys = [v for k, v in ev.items() if k.startswith("mel_")]
        score = float(np.mean(mel_keys)) if mel_keys else float("nan")
        improved = bool(mel_keys) and score < best
        if improved:
            best = score
        step = loop.step
        payload = dict(step=step, model=model.state_dict(), ctc_head=head.state_dict() if head is not None else None,
                       disc=disc.state_dict() if disc is not None else None, opt=opt.state_dict(), sched=dict(kind=args.schedule, by_time=args.schedule_by_time, lr=opt.param_groups[0]["lr"]),
                       opt_d=opt_d.state_dict() if opt_d is not None else None,
                       unused_check=[cb._next_unused_check for cb in codebooks(model)],
                       rng_dropout=model.quantizer.rvq_rest.rng_dropout.getstate(), rng=rng_state(),
                       mimi_config=cfg, vocab=units, args=vars(args), best=best, eval=ev,
                       train_seconds=total_seconds + (time.time() - loop.t0))
        last = tc.write_checkpoints(args, payload, step, improved)
        tc.log_checkpoint(evalf, step, tag, total_seconds + time.time() - loop.t0, ev, improved, last)

    loop = tc.TrainLoop(args, step, batcher.batch, device, stop, logf, total_seconds,
                        throughput=lambda rate: f"{rate * args.batch_size * segment / SR:.1f} audio-s/s")
    for xb, targets, frames in loop.batches():
        xt = torch.from_numpy(xb)
        x = (xt.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else xt)[:, None]
        with autocast():
            res = model(x)
        y = res.x
        losses = {}
        mel, stft = spectral(y[:, 0], x[:, 0])
        losses["mel"] = mel
        if args.stft_weight > 0:
            losses["stft"] = stft
        losses["wave"] = (y.float() - x).abs().mean()
        losses["commit"] = res.penalty.float()
        total = args.mel_weight * mel + args.stft_weight * stft + args.wave_weight * losses["wave"] + args.commit_weight * losses["commit"]
        if head is not None:
            have = [i for i, t in enumerate(targets) if t]
            if have:
                with autocast():
                    logits = head(sem.x[have])
                tg = torch.tensor([u for i in have for u in targets[i]], dtype=torch.long)
                tl = torch.tensor([len(targets[i]) for i in have], dtype=torch.long)
                il = torch.tensor([int(frames[i]) * args.ctc_slots for i in have], dtype=torch.long)
                if args.device == "cuda":
                    tg, tl, il = tg.to(device), tl.to(device), il.to(device)
                losses["ctc"] = L.ctc_loss(logits, tg, il, tl)
                losses["ctc_items"] = torch.tensor(len(have) / len(targets))
                total = total + args.ctc_weight * losses["ctc"]
        adv_on = disc is not None and loop.step >= args.adv_start_step
        if adv_on:
            for p in disc.parameters():
                p.requires_grad_(True)
            opt_d.zero_grad(set_to_none=True)
            with autocast():
                d_loss = L.discriminator_loss(disc, x[:, 0], y[:, 0].detach())
            d_loss.backward()
            opt_d.step()
            losses["disc"] = d_loss.detach()
            for p in disc.parameters():
                p.requires_grad_(False)
            with autocast():
                g_adv, g_fm = L.generator_adv_losses(disc, x[:, 0], y[:, 0])
            losses["adv"], losses["fm"] = g_adv, g_fm
            total = total + args.adv_weight * g_adv + args.fm_weight * g_fm
        losses["total"] = total
        entropy = {"entropy": res.metrics["rvq_entropy"]} if "rvq_entropy" in res.metrics else {}
        loop.train_step(opt, total, params, losses, checkpoint, after_gnorm=entropy)
    loop.finish(checkpoint)


if __name__ == "__main__":
    main()
