"""What the training tools share: train_codec.py's and train_lm.py's command-line flags of the same
meaning, run set-up (seeds, --resume auto), the warm-up + cosine LR schedule, bf16 autocast, the
stop-on-signal flag, RNG states and atomic checkpoint files, the progress line; plus the sha256 of
a file (exporters, encoders, references) and the stacking of attention projections under Kyutai's
checkpoint names (lm_arch.py, mimi_arch.py).

Nothing here draws from an RNG, so a tool's RNG consumption is what it was before it used these.
torch is imported where it is needed, so a tool that only hashes files does not load it.
"""
import hashlib
import json
import math
import os
import random
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


# ---------------------------------------------------------------- flags

def add_resume_flag(p):
    p.add_argument("--resume", help="checkpoint to resume from ('auto': OUT/ckpt_last.pt if it exists)")


def add_length_flags(p):
    """--steps, --minutes, --run-steps: where a run stops."""
    p.add_argument("--steps", type=int, default=20000, help="stop at this (total) step; also the LR schedule's horizon")
    p.add_argument("--minutes", type=float, default=0.0, help="stop after this many minutes of this run (0: no limit)")
    p.add_argument("--run-steps", type=int, default=0, help="stop after this many steps of this run (0: no limit)")


def add_schedule_flags(p, lr, warmup_steps, schedule_help=None):
    """--lr, --warmup-steps, --schedule, --schedule-by-time, --lr-final (see lr_factor)."""
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--warmup-steps", type=int, default=warmup_steps)
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine", help=schedule_help)
    p.add_argument("--schedule-by-time", action="store_true",
                   help="cosine progress = max(step/--steps, elapsed/--minutes): decays in time for a time-boxed run")
    p.add_argument("--lr-final", type=float, default=0.1, help="cosine ends at lr × this")


def add_device_flags(p, threads, bf16_help):
    """--seed, --device, --threads, --bf16."""
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=threads, help="torch intra-op threads")
    p.add_argument("--bf16", action="store_true", help=bf16_help)


def add_checkpoint_flags(p):
    """--log-every, --checkpoint-minutes, --keep-checkpoints."""
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--keep-checkpoints", action="store_true", help="also keep ckpt_step<N>.pt at each checkpoint")


# ---------------------------------------------------------------- set-up

def setup_run(args):
    """Creates --out, checks --device, sets the torch threads, seeds torch, numpy and random from
    --seed (in that order), and allows TF32 matmuls on cuda. Returns the torch device."""
    import torch
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
    return device


def load_resume(args):
    """(path, checkpoint) of --resume ('auto': OUT/ckpt_last.pt if it exists); (None, None) when
    there is nothing to resume."""
    import torch
    resume = args.resume
    if resume == "auto":
        cand = os.path.join(args.out, "ckpt_last.pt")
        resume = cand if os.path.exists(cand) else None
    ckpt = torch.load(resume, map_location="cpu", weights_only=False) if resume else None
    return resume, ckpt


def lr_factor(args, step, elapsed):
    """Warm-up, then cosine from 1 to --lr-final (or constant). A pure function of the step (and,
    with --schedule-by-time, of this run's elapsed time), so the step restores it on resume."""
    if step < args.warmup_steps:
        return (step + 1) / args.warmup_steps
    if args.schedule == "constant":
        return 1.0
    t = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    if args.schedule_by_time and args.minutes > 0:
        t = max(t, elapsed / (args.minutes * 60))
    t = min(1.0, t)
    return args.lr_final + (1 - args.lr_final) * 0.5 * (1 + math.cos(math.pi * t))


def set_lr(opt, args, step, elapsed):
    """Sets every param group of `opt` to --lr × lr_factor; returns that lr."""
    f = lr_factor(args, step, elapsed)
    for g in opt.param_groups:
        g["lr"] = args.lr * f
    return args.lr * f


def autocast_for(args):
    """(autocast, enabled): a context factory, bf16 autocast with --bf16 on cuda (and on CPU when
    DUPLEX_CPU_BF16_TEST=1, to test the bf16 path here), else disabled."""
    import torch
    use_bf16 = args.bf16 and args.device == "cuda"
    cpu_bf16 = args.bf16 and args.device == "cpu" and os.environ.get("DUPLEX_CPU_BF16_TEST") == "1"

    def autocast():
        if args.device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16)

    return autocast, use_bf16 or cpu_bf16


def stop_on_signals():
    """A {"flag": False} dict that SIGTERM / SIGINT set to True (after saying so)."""
    stop = {"flag": False}

    def on_signal(signum, frame):
        print(f"signal {signum}: checkpointing and stopping", flush=True)
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def restore_counters(ckpt, resume, best):
    """After a resumed run's modules and optimizers: the RNG states, then (step, best, seconds
    trained before) from the checkpoint, said on stdout."""
    set_rng_state(ckpt["rng"])
    step, best, total_seconds = ckpt["step"], ckpt.get("best", best), ckpt.get("train_seconds", 0.0)
    print(f"resumed {resume} at step {step} ({total_seconds / 60:.1f} min trained before)", flush=True)
    return step, best, total_seconds


def open_logs(args):
    """OUT/train_log.jsonl and OUT/eval_log.jsonl, appended to."""
    return open(os.path.join(args.out, "train_log.jsonl"), "a"), open(os.path.join(args.out, "eval_log.jsonl"), "a")


class TrainLoop:
    """The step loop's bookkeeping: this run's bounds (--steps, --run-steps, --minutes, a stop
    signal), the batches prefetched one step ahead (they depend on (seed, step) only, so
    prefetching keeps determinism), non-finite steps skipped, the LR schedule and optimizer step,
    the windowed log (stdout and train_log.jsonl) and the periodic and final checkpoints. A tool
    iterates over batches(), computes its losses and total loss from each, hands them to
    train_step, and calls finish after the loop; `checkpoint(tag)` is the tool's own.

    `throughput(rate)` is the progress line's text after "steps/s"; `log_extra(rate)` a dict of
    entries of each train_log.jsonl record after steps_per_s."""

    def __init__(self, args, step, batch, device, stop, logf, total_seconds, throughput, log_extra=None):
        self.args, self.device, self.stop, self.logf = args, device, stop, logf
        self.total_seconds, self.throughput, self.log_extra = total_seconds, throughput, log_extra
        self.t0 = time.time()
        self.t_ckpt = self.t0
        self.window, self.t_win, self.steps_win = {}, time.time(), 0
        self.bad_steps = 0
        self.step = self.start_step = step
        self.deadline = self.t0 + args.minutes * 60 if args.minutes > 0 else None
        self.end_step = args.steps if not args.run_steps else min(args.steps, step + args.run_steps)
        self._batch = batch
        self._prefetch = ThreadPoolExecutor(1)
        self._pending = self._prefetch.submit(batch, step)

    def batches(self):
        while (self.step < self.end_step and not self.stop["flag"]
               and (self.deadline is None or time.time() < self.deadline)):
            b = self._pending.result()
            self._pending = self._prefetch.submit(self._batch, self.step + 1)
            yield b

    def skip(self, opt):
        """A non-finite loss: says so, clears the gradients, stops after 20 in a row; the step counts."""
        self.bad_steps += 1
        print(f"step {self.step}: non-finite loss, skipped ({self.bad_steps} in a row)", flush=True)
        opt.zero_grad(set_to_none=True)
        if self.bad_steps >= 20:
            raise SystemExit("20 non-finite losses in a row: stopping")
        self.step += 1

    def update(self, opt, total, params):
        """The LR of this step, backward, gradient norm clipped to --clip, the optimizer step.
        Returns (lr, gradient norm)."""
        import torch
        self.bad_steps = 0
        lr_now = set_lr(opt, self.args, self.step, time.time() - self.t0)
        opt.zero_grad(set_to_none=True)
        total.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, self.args.clip)
        opt.step()
        self.step += 1
        self.steps_win += 1
        return lr_now, gnorm

    def record(self, losses, lr_now, checkpoint):
        """Adds the step's losses to the log window; logs every --log-every steps and at the end
        step; checkpoints every --checkpoint-minutes."""
        import torch
        args, step = self.args, self.step
        for k, v in losses.items():
            self.window[k] = self.window.get(k, 0.0) + v.detach().float()
        if step % args.log_every == 0 or step == self.end_step:
            now = time.time()
            rate = self.steps_win / max(1e-9, now - self.t_win)
            avg = {k: float(v) / self.steps_win for k, v in self.window.items()}
            eta_steps = (self.end_step - step) / max(rate, 1e-9)
            eta = eta_steps if self.deadline is None else min(eta_steps, max(0.0, self.deadline - now))
            elapsed = now - self.t0
            line = (f"step {step}/{self.end_step} | {rate:.2f} steps/s {self.throughput(rate)} | "
                    + " ".join(f"{k} {v:.4f}" for k, v in avg.items())
                    + f" | lr {lr_now:.2e} | {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min")
            line += (f" | {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if self.device.type == "cuda"
                     else f" | RSS {rss_mib():.0f} MiB")
            print(line, flush=True)
            extra = self.log_extra(rate) if self.log_extra else {}
            self.logf.write(json.dumps(dict(step=step, steps_per_s=rate, **extra,
                                            minutes=(self.total_seconds + elapsed) / 60, lr=lr_now, **avg)) + "\n")
            self.logf.flush()
            self.window, self.t_win, self.steps_win = {}, now, 0
        if args.checkpoint_minutes > 0 and time.time() - self.t_ckpt >= args.checkpoint_minutes * 60:
            checkpoint("periodic")
            self.t_ckpt = time.time()

    def train_step(self, opt, total, params, losses, checkpoint, after_gnorm=None):
        """One step: skipped when `total` is not finite; else update, then `losses` gets "gnorm"
        (and the entries of `after_gnorm` after it) and is recorded."""
        import torch
        if not torch.isfinite(total):
            self.skip(opt)
            return
        lr_now, gnorm = self.update(opt, total, params)
        losses["gnorm"] = gnorm
        losses.update(after_gnorm or {})
        self.record(losses, lr_now, checkpoint)

    def finish(self, checkpoint):
        """The final checkpoint (when this run stepped, or there is none yet) and the last line."""
        if self.step > self.start_step or not os.path.exists(os.path.join(self.args.out, "ckpt_last.pt")):
            checkpoint("final")
        print(f"done: step {self.step}, {(time.time() - self.t0) / 60:.1f} min this run", flush=True)


def rss_mib():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


# ---------------------------------------------------------------- checkpoints

def rng_state():
    import torch
    s = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s):
    import torch
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_checkpoint(path, **payload):
    import torch
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def write_checkpoints(args, payload, step, improved):
    """OUT/ckpt_last.pt, OUT/ckpt_best.pt when `improved`, OUT/ckpt_step<N>.pt with
    --keep-checkpoints. Returns the ckpt_last.pt path."""
    last = os.path.join(args.out, "ckpt_last.pt")
    save_checkpoint(last, **payload)
    if improved:
        save_checkpoint(os.path.join(args.out, "ckpt_best.pt"), **payload)
    if args.keep_checkpoints:
        save_checkpoint(os.path.join(args.out, f"ckpt_step{step}.pt"), **payload)
    return last


def log_checkpoint(evalf, step, tag, trained_seconds, ev, improved, last):
    """One eval_log.jsonl record and the checkpoint's line on stdout."""
    rec = dict(step=step, tag=tag, minutes=trained_seconds / 60, **ev, best=improved)
    evalf.write(json.dumps(rec) + "\n")
    evalf.flush()
    print(f"checkpoint step {step} ({tag}): " + " ".join(f"{k} {v:.4f}" for k, v in ev.items())
          + (" [best]" if improved else "") + f" → {last}", flush=True)


# ---------------------------------------------------------------- files, names

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_ATTN = re.compile(r"(.*self_attn\.)(in|out)_projs\.(\d+)\.weight$")


def stack_attention(state, combine, keep_order=False):
    """`state` (name -> value) under Kyutai's checkpoint names: StreamingMultiheadAttention's
    `self_attn.in_projs.{i}.weight` / `out_projs.{i}.weight` become one `self_attn.in_proj_weight` /
    `self_attn.out_proj.weight`, `combine(parts)` of the parts in step order; every other name is
    kept. The stacked names go where their first part stood with `keep_order`, else after the rest."""
    out, stacked = {}, {}
    for name, value in state.items():
        m = _ATTN.match(name)
        if m:
            target = m.group(1) + ("in_proj_weight" if m.group(2) == "in" else "out_proj.weight")
            stacked.setdefault(target, {})[int(m.group(3))] = value
            if keep_order:
                out.setdefault(target, None)
        else:
            out[name] = value
    for target, parts in stacked.items():
        out[target] = combine([parts[i] for i in sorted(parts)])
    return out
