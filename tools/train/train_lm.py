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
import random
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm_arch  # noqa: E402

FRAME_RATE = 12.5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dialogue folder: codes/*.npz (+ dialogues.jsonl)")
    p.add_argument("--out", default="out/lm-train", help="checkpoints and logs go here")
    p.add_argument("--config", default=lm_arch.DEFAULT_CONFIG, help="config.json of the LM's shape (its `duplex` key is dropped)")
    p.add_argument("--resume", help="checkpoint to resume from ('auto': OUT/ckpt_last.pt if it exists)")
    p.add_argument("--init-from", help="start (step 0, fresh optimizer) from a checkpoint (.pt) or an exported .safetensors")
    p.add_argument("--steps", type=int, default=20000, help="stop at this (total) step; also the LR schedule's horizon")
    p.add_argument("--minutes", type=float, default=0.0, help="stop after this many minutes of this run (0: no limit)")
    p.add_argument("--run-steps", type=int, default=0, help="stop after this many steps of this run (0: no limit)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--frames", type=int, default=375, help="crop length in 80 ms frames (375 = 30 s)")
    p.add_argument("--start-fraction", type=float, default=0.5,
                   help="items cropped from the dialogue's start (inference always starts from a fresh state)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--schedule-by-time", action="store_true",
                   help="cosine progress = max(step/--steps, elapsed/--minutes): decays in time for a time-boxed run")
    p.add_argument("--lr-final", type=float, default=0.1, help="cosine ends at lr × this")
    p.add_argument("--weight-decay", type=float, default=0.1, help="on matrices only (not embeddings, norms)")
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--text-weight", type=float, default=1.0)
    p.add_argument("--audio-weight", type=float, default=1.0)
    p.add_argument("--text-pad-weight", type=float, default=0.5, help="weight of PAD (3) text frames (Moshi: 0.5)")
    p.add_argument("--text-epad-weight", type=float, default=None, help="weight of EPAD (0) text frames (default: --text-pad-weight)")
    p.add_argument("--semantic-weight", type=float, default=100.0,
                   help="weight of system codebook 0 against 1 per acoustic codebook (Moshi / moshi-finetune: 100)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (cuda; weights and AdamW stay f32)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--keep-checkpoints", action="store_true", help="also keep ckpt_step<N>.pt at each checkpoint")
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


def lm_losses(model, codes, args, autocast):
    with autocast():
        out = model(codes)
    t_tgt, t_w, a_tgt, a_w = targets_and_weights(out, codes, args.text_pad_weight, args.text_epad_weight, args.semantic_weight)
    text, _ = masked_ce(out.text_logits[:, 0], t_tgt, t_w)
    audio, _ = masked_ce(out.logits, a_tgt, a_w)
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
        with autocast():
            out = model(x)
        t_tgt, t_w, a_tgt, a_w = targets_and_weights(out, x, args.text_pad_weight, args.text_epad_weight, args.semantic_weight)
        text_l, _ = masked_ce(out.text_logits[:, 0], t_tgt, t_w)
        audio_l, _ = masked_ce(out.logits, a_tgt, a_w)
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

def rng_state():
    s = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def rss_mib():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def save_checkpoint(path, **payload):
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def sha256(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    os.makedirs(args.out, exist_ok=True)
    device = torch.device(args.device)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    resume = args.resume
    if resume == "auto":
        cand = os.path.join(args.out, "ckpt_last.pt")
        resume = cand if os.path.exists(cand) else None
    ckpt = torch.load(resume, map_location="cpu", weights_only=False) if resume else None

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

    def lr_factor(step, elapsed):
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        if args.schedule == "constant":
            return 1.0
        t = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
        if args.schedule_by_time and args.minutes > 0:
            t = max(t, elapsed / (args.minutes * 60))
        t = min(1.0, t)
        return args.lr_final + (1 - args.lr_final) * 0.5 * (1 + math.cos(math.pi * t))

    def set_lr(step, elapsed):
        f = lr_factor(step, elapsed)
        for g in opt.param_groups:
            g["lr"] = args.lr * f
        return args.lr * f

    step, best, total_seconds = 0, float("inf"), 0.0
    if ckpt:
        opt.load_state_dict(ckpt["opt"])
        set_rng_state(ckpt["rng"])
        step, best, total_seconds = ckpt["step"], ckpt.get("best", best), ckpt.get("train_seconds", 0.0)
        print(f"resumed {resume} at step {step} ({total_seconds / 60:.1f} min trained before)", flush=True)

    n_params = sum(p.numel() for p in model.parameters())
    use_bf16 = args.bf16 and args.device == "cuda"
    cpu_bf16 = args.bf16 and args.device == "cpu" and os.environ.get("DUPLEX_CPU_BF16_TEST") == "1"
    print(f"LM: {n_params / 1e6:.2f} M parameters (dim {lm_kwargs['dim']} × {lm_kwargs['num_layers']}, depformer "
          f"{lm_kwargs['depformer_dim']} × {lm_kwargs['depformer_num_layers']}); device {args.device}, threads {args.threads}, "
          f"bf16 {use_bf16 or cpu_bf16}, batch {args.batch_size} × {args.frames} frames, semantic weight {args.semantic_weight}, "
          f"text PAD weight {args.text_pad_weight}", flush=True)

    def autocast():
        if args.device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16)

    batcher = Batcher(train, args.seed, args.batch_size, args.frames, args.start_fraction)
    stop = {"flag": False}

    def on_signal(signum, frame):
        print(f"signal {signum}: checkpointing and stopping", flush=True)
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logf = open(os.path.join(args.out, "train_log.jsonl"), "a")
    evalf = open(os.path.join(args.out, "eval_log.jsonl"), "a")

    def checkpoint(tag):
        nonlocal best
        ev = evaluate(model, evalset, args, device, autocast) if evalset else {}
        score = ev.get("loss", float("nan"))
        improved = bool(ev) and score < best
        if improved:
            best = score
        payload = dict(step=step, model={k: v.detach().cpu() for k, v in model.state_dict().items()},
                       opt=opt.state_dict(), rng=rng_state(), lm_kwargs=lm_kwargs, raw_config=raw_config,
                       args=vars(args), best=best, eval=ev, train_seconds=total_seconds + (time.time() - t0),
                       data_frames=train.frames, data_dialogues=len(train.ids), tokenizer=tokenizer,
                       tokenizer_sha256=tokenizer_sha, data_manifest=data_manifest)
        last = os.path.join(args.out, "ckpt_last.pt")
        save_checkpoint(last, **payload)
        if improved:
            save_checkpoint(os.path.join(args.out, "ckpt_best.pt"), **payload)
        if args.keep_checkpoints:
            save_checkpoint(os.path.join(args.out, f"ckpt_step{step}.pt"), **payload)
        rec = dict(step=step, tag=tag, minutes=(total_seconds + time.time() - t0) / 60, **ev, best=improved)
        evalf.write(json.dumps(rec) + "\n")
        evalf.flush()
        print(f"checkpoint step {step} ({tag}): " + " ".join(f"{k} {v:.4f}" for k, v in ev.items())
              + (" [best]" if improved else "") + f" → {last}", flush=True)

    t0 = time.time()
    t_ckpt = t0
    window, t_win, steps_win = {}, time.time(), 0
    bad_steps = 0
    start_step = step
    deadline = t0 + args.minutes * 60 if args.minutes > 0 else None
    end_step = args.steps if not args.run_steps else min(args.steps, step + args.run_steps)
    prefetch = ThreadPoolExecutor(1)  # batches depend on (seed, step) only: prefetching keeps determinism
    pending = prefetch.submit(batcher.batch, step)
    frames_per_step = args.batch_size * args.frames
    while step < end_step and not stop["flag"] and (deadline is None or time.time() < deadline):
        xb = pending.result()
        pending = prefetch.submit(batcher.batch, step + 1)
        xt = torch.from_numpy(xb)
        x = xt.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else xt
        losses = lm_losses(model, x, args, autocast)
        total = losses["total"]
        if not torch.isfinite(total):
            bad_steps += 1
            print(f"step {step}: non-finite loss, skipped ({bad_steps} in a row)", flush=True)
            opt.zero_grad(set_to_none=True)
            if bad_steps >= 20:
                raise SystemExit("20 non-finite losses in a row: stopping")
            step += 1
            continue
        bad_steps = 0
        lr_now = set_lr(step, time.time() - t0)
        opt.zero_grad(set_to_none=True)
        total.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        steps_win += 1
        losses["gnorm"] = gnorm
        for k, v in losses.items():
            window[k] = window.get(k, 0.0) + v.detach().float()

        if step % args.log_every == 0 or step == end_step:
            now = time.time()
            rate = steps_win / max(1e-9, now - t_win)
            avg = {k: float(v) / steps_win for k, v in window.items()}
            eta_steps = (end_step - step) / max(rate, 1e-9)
            eta = eta_steps if deadline is None else min(eta_steps, max(0.0, deadline - now))
            elapsed = now - t0
            line = (f"step {step}/{end_step} | {rate:.2f} steps/s {rate * frames_per_step:.0f} frames/s | "
                    + " ".join(f"{k} {v:.4f}" for k, v in avg.items())
                    + f" | lr {lr_now:.2e} | {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min")
            line += (f" | {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda"
                     else f" | RSS {rss_mib():.0f} MiB")
            print(line, flush=True)
            logf.write(json.dumps(dict(step=step, steps_per_s=rate, frames_per_s=rate * frames_per_step,
                                       minutes=(total_seconds + elapsed) / 60, lr=lr_now, **avg)) + "\n")
            logf.flush()
            window, t_win, steps_win = {}, now, 0
        if args.checkpoint_minutes > 0 and time.time() - t_ckpt >= args.checkpoint_minutes * 60:
            checkpoint("periodic")
            t_ckpt = time.time()
    if step > start_step or not os.path.exists(os.path.join(args.out, "ckpt_last.pt")):
        checkpoint("final")
    print(f"done: step {step}, {(time.time() - t0) / 60:.1f} min this run", flush=True)


if __name__ == "__main__":
    main()
