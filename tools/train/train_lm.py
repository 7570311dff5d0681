#!/usr/bin/env python3
"""Trains the default model's Moshi LM (models/default/config.json minus its `duplex` key: dim 256,
4 layers, text_card 800, n_q 16, dep_q 8, card 2048, Moshi's delays) built by moshi 0.2.13's own
`loaders.get_moshi_lm`, so the checkpoint is Kyutai's format by construction.

Data: DATA/codes/*.npz (tools/train/encode_dialogues.py: `user` int16 [8, T], `system` int16 [8, T],
`text` int32 [T], the inner monologue undelayed), the split from DATA/dialogues.jsonl (else from the
file name's `train-`/`eval-` prefix). Streams in LM order [text, system cb0..7, user cb0..7]; a batch
item is a crop of --frames frames, from the dialogue's start for --start-fraction of the items (and
always when the dialogue is shorter), else from a random frame; what is past the dialogue's end is
-1 (moshi's zero_token_id: zero input embedding, excluded from the loss by LMModel.forward's
masks; the model is causal, so it cannot change the frames before it). LMModel.forward applies the
delays (`_delay_sequence`, the initial tokens text_card / card at position 0) and hands back logits
re-aligned with the codes, so the targets are the codes themselves.

Loss (moshi-finetune's compute_loss_with_mask): text CE with PAD (3) and EPAD (0) frames weighted
--text-pad-weight / --text-epad-weight (Kyutai: 0.5 for both), normalised by the weights' sum; plus
audio CE over the model's own 8 streams (system cb0..7; the user streams are input only, dep_q 8)
with codebook 0 (semantic) weighted --semantic-weight against 1 for each acoustic codebook (Kyutai:
100), normalised by the weights' sum; total = --text-weight × text + --audio-weight × audio.

Resumable (--resume: model, AdamW, step, RNG states, best, training time); deterministic for a
--seed on CPU (batch n comes from an RNG seeded with (seed, n)); time-boxed by --minutes, --steps,
--run-steps; SIGTERM/SIGINT checkpoint and stop. Eval on the eval split at every checkpoint (each
dialogue from its start, as inference runs): text CE, word-token accuracy (frames whose target is
not PAD/EPAD), answer-word accuracy (with dialogues.jsonl and the tokenizer), semantic accuracy.
"""
import argparse
import glob
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm_arch  # noqa: E402
import train_common as tc  # noqa: E402
from train_common import rng_state, sha256  # noqa: E402

FRAME_RATE = 12.5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dialogue folder: codes/*.npz (+ dialogues.jsonl)")
    p.add_argument("--out", default="out/lm-train", help="checkpoints and logs go here")
    p.add_argument("--config", default=lm_arch.DEFAULT_CONFIG, help="config.json of the LM's shape (its `duplex` key is dropped)")
    tc.add_resume_flag(p)
    p.add_argument("--init-from", help="start (step 0, fresh optimizer) from a checkpoint (.pt) or an exported .safetensors")
    tc.add_length_flags(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--frames", type=int, default=375, help="crop length in 80 ms frames (375 = 30 s)")
    p.add_argument("--start-fraction", type=float, default=0.5,
                   help="items cropped from the dialogue's start (inference always starts from a fresh state)")
    tc.add_schedule_flags(p, lr=5e-4, warmup_steps=500)
    p.add_argument("--weight-decay", type=float, default=0.1, help="on matrices only (not embeddings, norms)")
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--text-weight", type=float, default=1.0)
    p.add_argument("--audio-weight", type=float, default=1.0)
    p.add_argument("--text-pad-weight", type=float, default=0.5, help="weight of PAD (3) text frames (Moshi: 0.5)")
    p.add_argument("--text-epad-weight", type=float, default=None, help="weight of EPAD (0) text frames (default: --text-pad-weight)")
    p.add_argument("--semantic-weight", type=float, default=100.0,
                   help="weight of system codebook 0 against 1 per acoustic codebook (Moshi / moshi-finetune: 100)")
    tc.add_device_flags(p, threads=1, bf16_help="bf16 autocast (cuda; weights and AdamW stay f32)")
    tc.add_checkpoint_flags(p)
    p.add_argument("--eval-dialogues", type=int, default=32, help="eval-split dialogues per eval (0: no eval)")
    p.add_argument("--eval-frames", type=int, default=0, help="eval length from each dialogue's start (0: --frames)")
    p.add_argument("--tokenizer", help="SentencePiece model for the answer-word metric (default: the config's tokenizer_name beside it)")
    p.add_argument("--max-train-dialogues", type=int, default=0, help="use only the first N (0: all)")
    return p.parse_args(argv)


# ---------------------------------------------------------------- data

def read_dialogues(data):
    """{id: record} from DATA/dialogues.jsonl ({} when absent)."""
    path = os.path.join(data, "dialogues.jsonl")
    recs = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    recs[r["id"]] = r
    return recs


def split_ids(data, split, records):
    ids = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(data, "codes", "*.npz")))
    if records:
        return [i for i in ids if i in records and records[i].get("split") == split]
    return [i for i in ids if i.startswith(split + "-")]


class Dialogues:
    """The codes of one split, [17, T] int64 each (LM order)."""

    def __init__(self, data, split, records, limit=0):
        self.ids = split_ids(data, split, records)
        if limit:
            self.ids = self.ids[:limit]
        self.codes = [lm_arch.load_codes(os.path.join(data, "codes", i + ".npz")) for i in self.ids]
        self.records = [records.get(i) for i in self.ids]

    @property
    def frames(self):
        return int(sum(c.shape[1] for c in self.codes))


class Batcher:
    def __init__(self, dialogues, seed, batch_size, frames, start_fraction):
        if not dialogues.codes:
            raise SystemExit("no training dialogues")
        self.d, self.seed, self.B, self.F, self.start_fraction = dialogues, seed, batch_size, frames, start_fraction

    def batch(self, step):
        """[B, 17, F] int64, deterministic in (seed, step): the same batch on resume."""
        rng = np.random.default_rng([self.seed, step])
        out = np.full((self.B, 17, self.F), lm_arch.ZERO, np.int64)
        for b in range(self.B):
            c = self.d.codes[int(rng.integers(len(self.d.codes)))]
            T = c.shape[1]
            from_start = rng.random() < self.start_fraction
            start = 0 if (from_start or T <= self.F) else int(rng.integers(0, T - self.F + 1))
            n = min(self.F, T - start)
            out[b, :, :n] = c[:, start:start + n]
        return out


# ---------------------------------------------------------------- loss

def targets_and_weights(out, codes, text_pad_weight=0.5, text_epad_weight=None, semantic_weight=100.0):
    """From LMModel.forward's output and the codes it was given: (text target [B, T], text weights
    [B, T], audio target [B, dep_q, T], audio weights [B, dep_q, T]). The logits are already aligned
    with the codes (forward undelays them), so the targets are codes[:, 0] and codes[:, 1:1+dep_q];
    the weights are forward's masks (delay tail, -1 frames) times the PAD/EPAD and semantic weights."""
    if text_epad_weight is None:
        text_epad_weight = text_pad_weight
    dep_q = out.logits.shape[1]
    t_tgt = codes[:, 0]
    t_w = out.text_mask[:, 0].float()
    t_w = torch.where(t_tgt == lm_arch.PAD, t_w * text_pad_weight, t_w)
    t_w = torch.where(t_tgt == lm_arch.EPAD, t_w * text_epad_weight, t_w)
    a_tgt = codes[:, 1:1 + dep_q]
    a_w = out.mask.float()
    a_w[:, 0] *= semantic_weight
    return t_tgt, t_w, a_tgt, a_w


def masked_ce(logits, target, weights):
    """Σ w·CE / Σ w over the positions with w > 0 (the others, NaN logits included, never enter)."""
    sel = weights > 0
    if not bool(sel.any()):
        z = logits.sum() * 0.0
        return z.float(), z.float()
    ce = F.cross_entropy(logits[sel].float(), target[sel], reduction="none")
    w = weights[sel]
    return (ce * w).sum() / w.sum(), ce


def objective(model, codes, args, autocast):
    """LMModel.forward on `codes` under autocast, then the weighted text and audio CEs of the
    training objective: (forward's output, (text target, text weights, audio target, audio
    weights), text CE, audio CE)."""
    with autocast():
        out = model(codes)
    t_tgt, t_w, a_tgt, a_w = targets_and_weights(out, codes, args.text_pad_weight, args.text_epad_weight, args.semantic_weight)
    text, _ = masked_ce(out.text_logits[:, 0], t_tgt, t_w)
    audio, _ = masked_ce(out.logits, a_tgt, a_w)
    return out, (t_tgt, t_w, a_tgt, a_w), text, audio


def lm_losses(model, codes, args, autocast):
    out, (t_tgt, t_w, a_tgt, a_w), text, audio = objective(model, codes, args, autocast)
    with torch.no_grad():
        sem, _ = masked_ce(out.logits[:, :1].detach(), a_tgt[:, :1], (a_w[:, :1] > 0).float())
        ac, _ = masked_ce(out.logits[:, 1:].detach(), a_tgt[:, 1:], (a_w[:, 1:] > 0).float())
    total = args.text_weight * text + args.audio_weight * audio
    return dict(total=total, text=text, audio=audio, sem_ce=sem, acoustic_ce=ac)


# ---------------------------------------------------------------- eval

def word_piece_table(sp):
    """Per token id: does its piece start a word (SentencePiece's '▁')?"""
    return np.array([sp.id_to_piece(i).startswith("\u2581") for i in range(sp.get_piece_size())])


def norm_word(w):
    return "".join(ch for ch in w.lower() if ch.isalnum() or ch in "-'")


def eval_masks(rec, text, sp, starts_word):
    """(answer-token mask [T], system-speech mask [T], answers located, answers asked) of one eval
    dialogue: the answer word's tokens found as the k-th word-initial token ('▁' piece) within the
    system turn's frames, k its (last) index among the turn's spoken words, checked by decoding them."""
    T = len(text)
    answer = np.zeros(T, bool)
    speech = np.zeros(T, bool)
    located = asked = 0
    if rec is None:
        return answer, speech, 0, 0
    turns = rec.get("turns", [])
    for turn in turns:
        if turn.get("speaker") != "system":
            continue
        a, b = int(math.floor(turn["start"] * FRAME_RATE)), int(math.ceil(turn["end"] * FRAME_RATE))
        speech[max(0, a):min(T, b)] = True
        q = turn.get("answers_turn")
        word = turns[q].get("answer_word") if isinstance(q, int) and 0 <= q < len(turns) else None
        if not word or sp is None:
            continue
        words = [norm_word(w["word"]) for w in turn.get("words", [])]
        if norm_word(word) not in words:
            continue  # cut before the answer (barge-in)
        asked += 1
        k = len(words) - 1 - words[::-1].index(norm_word(word))  # the last: "twelve minus zero is twelve."
        lo, hi = max(0, a - 1), min(T, b + 25)
        starts = [t for t in range(lo, hi) if text[t] not in (lm_arch.PAD, lm_arch.EPAD) and text[t] < len(starts_word) and starts_word[text[t]]]
        if k >= len(starts):
            continue
        t0 = starts[k]
        t1 = t0 + 1
        while t1 < T and text[t1] not in (lm_arch.PAD, lm_arch.EPAD) and not starts_word[text[t1]]:
            t1 += 1
        if norm_word(sp.decode([int(x) for x in text[t0:t1]])) == norm_word(word):
            answer[t0:t1] = True
            located += 1
    return answer, speech, located, asked


class EvalSet:
    def __init__(self, dialogues, frames, tokenizer):
        sp = None
        if tokenizer and os.path.exists(tokenizer):
            import sentencepiece
            sp = sentencepiece.SentencePieceProcessor(model_file=tokenizer)
        starts_word = word_piece_table(sp) if sp is not None else None
        self.items = []
        self.located = self.asked = 0
        for codes, rec in zip(dialogues.codes, dialogues.records):
            c = codes[:, :frames]
            answer, speech, loc, ask = eval_masks(rec, c[0], sp, starts_word) if rec is not None else (
                np.zeros(c.shape[1], bool), np.zeros(c.shape[1], bool), 0, 0)
            self.located += loc
            self.asked += ask
            self.items.append((c, answer, speech))


@torch.no_grad()
def evaluate(model, evalset, args, device, autocast):
    """Teacher-forced from each dialogue's start: the training objective, text CE (unweighted),
    argmax accuracies (word tokens = non-PAD/EPAD targets, PAD/EPAD frames, answer-word tokens,
    semantic codebook over all frames and over the system's speech frames), audio CEs."""
    model.eval()
    sums = {}

    def add(k, num, den):
        s = sums.setdefault(k, [0.0, 0.0])
        s[0] += float(num)
        s[1] += float(den)

    B = max(1, args.batch_size)
    for i in range(0, len(evalset.items), B):
        group = evalset.items[i:i + B]
        T = max(c.shape[1] for c, _, _ in group)
        codes = np.full((len(group), 17, T), lm_arch.ZERO, np.int64)
        answer = np.zeros((len(group), T), bool)
        speech = np.zeros((len(group), T), bool)
        for j, (c, a, s) in enumerate(group):
            codes[j, :, :c.shape[1]] = c
            answer[j, :c.shape[1]] = a
            speech[j, :c.shape[1]] = s
        x = torch.from_numpy(codes).to(device)
        out, (t_tgt, t_w, a_tgt, a_w), text_l, audio_l = objective(model, x, args, autocast)
        n = int((t_w > 0).sum())
        add("loss", float(args.text_weight * text_l + args.audio_weight * audio_l) * n, n)
        valid = out.text_mask[:, 0]
        tl = torch.nan_to_num(out.text_logits[:, 0].float())
        ce = F.cross_entropy(tl.transpose(1, 2), t_tgt.clamp(min=0), reduction="none")
        add("text_ce", ce[valid].sum(), valid.sum())
        hit = tl.argmax(-1) == t_tgt
        word = valid & (t_tgt != lm_arch.PAD) & (t_tgt != lm_arch.EPAD)
        add("word_acc", (hit & word).sum(), word.sum())
        pad = valid & ~word
        add("pad_acc", (hit & pad).sum(), pad.sum())
        ans = torch.from_numpy(answer).to(device) & valid
        add("answer_acc", (hit & ans).sum(), ans.sum())
        al = torch.nan_to_num(out.logits.float())
        am = out.mask
        ace = F.cross_entropy(al.permute(0, 3, 1, 2), a_tgt.clamp(min=0), reduction="none")
        add("sem_ce", ace[:, 0][am[:, 0]].sum(), am[:, 0].sum())
        add("acoustic_ce", ace[:, 1:][am[:, 1:]].sum(), am[:, 1:].sum())
        ahit = al.argmax(-1) == a_tgt
        add("sem_acc", (ahit[:, 0] & am[:, 0]).sum(), am[:, 0].sum())
        sp_m = torch.from_numpy(speech).to(device) & am[:, 0]
        add("sem_acc_speech", (ahit[:, 0] & sp_m).sum(), sp_m.sum())
        add("acoustic_acc", (ahit[:, 1:] & am[:, 1:]).sum(), am[:, 1:].sum())
    model.train()
    res = {k: (num / den if den > 0 else float("nan")) for k, (num, den) in sums.items()}
    res["answer_tokens"] = sums.get("answer_acc", [0, 0])[1]
    return res


# ---------------------------------------------------------------- checkpoints

def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_emb = name.startswith(("emb.", "text_emb.", "depformer_emb.", "depformer_text_emb."))
        (decay if p.dim() >= 2 and not is_emb and not name.endswith("alpha") else no_decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


# ---------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    device = tc.setup_run(args)

    resume, ckpt = tc.load_resume(args)

    if ckpt:
        raw_config, lm_kwargs = ckpt["raw_config"], ckpt["lm_kwargs"]
    else:
        raw_config, lm_kwargs = lm_arch.read_config(args.config)
    tokenizer = args.tokenizer
    if tokenizer is None and os.path.exists(os.path.join(args.data, "tokenizer.model")):
        tokenizer = os.path.join(args.data, "tokenizer.model")  # the data's own (encode_dialogues.py's default)
    if tokenizer is None and raw_config.get("tokenizer_name"):
        # beside the config, else the default model's
        for folder in (os.path.dirname(os.path.abspath(args.config)), os.path.dirname(lm_arch.DEFAULT_CONFIG)):
            if os.path.exists(os.path.join(folder, raw_config["tokenizer_name"])):
                tokenizer = os.path.join(folder, raw_config["tokenizer_name"])
                break

    data_manifest = {}
    if os.path.exists(os.path.join(args.data, "manifest.json")):
        with open(os.path.join(args.data, "manifest.json")) as f:
            data_manifest = json.load(f)
    tokenizer_sha = sha256(tokenizer) if tokenizer and os.path.exists(tokenizer) else None
    want = (data_manifest.get("tokenizer") or {}).get("sha256")
    if want and tokenizer_sha and want != tokenizer_sha:
        print(f"warning: tokenizer {tokenizer} is not the one the codes were made with (manifest sha256 {want[:12]}…)", flush=True)

    t_load = time.time()
    records = read_dialogues(args.data)
    train = Dialogues(args.data, "train", records, args.max_train_dialogues)
    evald = Dialogues(args.data, "eval", records, args.eval_dialogues) if args.eval_dialogues else None
    eval_frames = args.eval_frames or args.frames
    evalset = EvalSet(evald, eval_frames, tokenizer) if evald is not None and evald.codes else None
    print(f"data: {len(train.ids)} train dialogues, {train.frames} frames ({train.frames / FRAME_RATE / 3600:.2f} h); "
          f"eval {len(evalset.items) if evalset else 0} dialogues × ≤ {eval_frames} frames"
          + (f", answers located {evalset.located}/{evalset.asked}" + ("" if tokenizer else " (no tokenizer)") if evalset else "")
          + f" (loaded in {time.time() - t_load:.1f} s)", flush=True)

    model = lm_arch.build_lm(lm_kwargs, device="cpu", dtype=torch.float32)
    if ckpt:
        model.load_state_dict(ckpt["model"], strict=True)
    elif args.init_from:
        src, _ = lm_arch.load_lm(args.init_from, config=args.config)
        model.load_state_dict(src.state_dict(), strict=True)
        print(f"initialised from {args.init_from}", flush=True)
    model = model.to(device).train()
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=tuple(args.betas))

    step, best, total_seconds = 0, float("inf"), 0.0
    if ckpt:
        opt.load_state_dict(ckpt["opt"])
        step, best, total_seconds = tc.restore_counters(ckpt, resume, best)

    n_params = sum(p.numel() for p in model.parameters())
    autocast, bf16_on = tc.autocast_for(args)
    print(f"LM: {n_params / 1e6:.2f} M parameters (dim {lm_kwargs['dim']} × {lm_kwargs['num_layers']}, depformer "
          f"{lm_kwargs['depformer_dim']} × {lm_kwargs['depformer_num_layers']}); device {args.device}, threads {args.threads}, "
          f"bf16 {bf16_on}, batch {args.batch_size} × {args.frames} frames, semantic weight {args.semantic_weight}, "
          f"text PAD weight {args.text_pad_weight}", flush=True)

    batcher = Batcher(train, args.seed, args.batch_size, args.frames, args.start_fraction)
    stop = tc.stop_on_signals()
    logf, evalf = tc.open_logs(args)

    def checkpoint(tag):
        nonlocal best
        ev = evaluate(model, evalset, args, device, autocast) if evalset else {}
        score = ev.get("loss", float("nan"))
        improved = bool(ev) and score < best
        if improved:
            best = score
        step = loop.step
        payload = dict(step=step, model={k: v.detach().cpu() for k, v in model.state_dict().items()},
                       opt=opt.state_dict(), rng=rng_state(), lm_kwargs=lm_kwargs, raw_config=raw_config,
                       args=vars(args), best=best, eval=ev, train_seconds=total_seconds + (time.time() - loop.t0),
                       data_frames=train.frames, data_dialogues=len(train.ids), tokenizer=tokenizer,
                       tokenizer_sha256=tokenizer_sha, data_manifest=data_manifest)
        last = tc.write_checkpoints(args, payload, step, improved)
        tc.log_checkpoint(evalf, step, tag, total_seconds + time.time() - loop.t0, ev, improved, last)

    frames_per_step = args.batch_size * args.frames
    loop = tc.TrainLoop(args, step, batcher.batch, device, stop, logf, total_seconds,
                        throughput=lambda rate: f"{rate * frames_per_step:.0f} frames/s",
                        log_extra=lambda rate: dict(frames_per_s=rate * frames_per_step))
    for xb in loop.batches():
        xt = torch.from_numpy(xb)
        x = xt.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else xt
        losses = lm_losses(model, x, args, autocast)
        loop.train_step(opt, losses["total"], model.parameters(), losses, checkpoint)
    loop.finish(checkpoint)


if __name__ == "__main__":
    main()
