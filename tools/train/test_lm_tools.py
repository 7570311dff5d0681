#!/usr/bin/env python3
"""Fast tests of the LM recipe (train_lm.py, lm_arch.py, export_lm.py, lm_greedy_reference.py) on
synthetic dialogues in the interface's format (codes/ID.npz: user int16 [8, T], system int16
[8, T], text int32 [T]; dialogues.jsonl with turns and word times).

    nice -n 10 tools/train/.venv/bin/python -m unittest tools/train/test_lm_tools.py -v
"""
import json
import os
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lm_arch  # noqa: E402
import train_lm  # noqa: E402

torch.set_num_threads(1)
TOKENIZER = os.path.join(lm_arch.REPO, "models", "default", "tokenizer.model")
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]


def tiny_config(path, card=64):
    """models/default's config at a tiny width (same structure, text_card 800 for real tokens)."""
    raw, _ = lm_arch.read_config()
    raw.update(dim=32, num_heads=2, num_layers=2, depformer_dim=32, depformer_dim_feedforward=64,
               depformer_num_heads=2, depformer_num_layers=1, card=card, context=64)
    with open(path, "w") as f:
        json.dump(raw, f)
    return path


def write_synthetic(root, n_train=6, n_eval=2, frames=(48, 80), card=2048, seed=0):
    """Dialogues with a learnable pattern: the user 'asks' with a run of semantic code 100 + n
    (frames 4-9), the system answers 'it is NUMBER.' from frame 14 (EPAD before each word, each
    word's SentencePiece tokens in consecutive frames), its codes a function of the text frame;
    silence (code 1) elsewhere on the system stream, random codes on the user's."""
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor(model_file=TOKENIZER)
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "codes"), exist_ok=True)
    with open(os.path.join(root, "dialogues.jsonl"), "w") as jf:
        for split, n in (("train", n_train), ("eval", n_eval)):
            for i in range(n):
                did = f"{split}-{i:06d}"
                T = int(rng.integers(frames[0], frames[1] + 1))
                num = int(rng.integers(len(NUMBERS)))
                user = rng.integers(0, card, (8, T)).astype(np.int16)
                user[0, 4:10] = (100 + num) % card
                system = np.ones((8, T), np.int16)
                text = np.full(T, lm_arch.PAD, np.int32)
                t, words = 14, []
                for w in ["it", "is", NUMBERS[num] + "."]:
                    ids = sp.encode(w)
                    text[t - 1] = lm_arch.EPAD if text[t - 1] == lm_arch.PAD else text[t - 1]
                    words.append({"word": w, "start": t / 12.5, "end": (t + len(ids)) / 12.5})
                    for j, tok in enumerate(ids):
                        text[t + j] = tok
                        system[:, t + j] = (np.arange(8) * 7 + tok) % card
                    t += len(ids) + 1
                end = t
                np.savez(os.path.join(root, "codes", did + ".npz"), user=user, system=system, text=text)
                rec = {"id": did, "split": split, "seconds": T / 12.5, "turns": [
                    {"speaker": "user", "intent": "x", "text": "q", "start": 0.32, "end": 0.8, "answer_word": NUMBERS[num]},
                    {"speaker": "system", "intent": "x", "text": "a", "start": 14 / 12.5, "end": end / 12.5,
                     "answers_turn": 0, "words": words}]}
                jf.write(json.dumps(rec) + "\n")
    return root


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class DelaysAndTargets(unittest.TestCase):
    """LMModel.forward re-aligns its logits with the codes: the targets are the codes themselves,
    the masks drop the acoustic streams' last frame (delay 1) and the -1 frames; and what each
    logit may depend on follows Moshi's delays."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        _, cls.kwargs = lm_arch.read_config(tiny_config(os.path.join(cls.tmp.name, "c.json")))
        torch.manual_seed(0)
        cls.model = lm_arch.build_lm(cls.kwargs).eval()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def codes(self, T=12, pad_from=None, seed=1):
        g = np.random.default_rng(seed)
        c = np.zeros((1, 17, T), np.int64)
        c[:, 0] = g.integers(4, 800, (1, T))
        c[:, 1:] = g.integers(0, 64, (1, 16, T))
        if pad_from is not None:
            c[:, :, pad_from:] = lm_arch.ZERO
        return torch.from_numpy(c)

    def test_targets_and_masks(self):
        T = 12
        x = self.codes(T, pad_from=10)
        x[0, 0, 2] = lm_arch.PAD
        x[0, 0, 3] = lm_arch.EPAD
        with torch.no_grad():
            out = self.model(x)
        t_tgt, t_w, a_tgt, a_w = train_lm.targets_and_weights(out, x, 0.5, 0.25, 100.0)
        self.assertTrue(torch.equal(t_tgt, x[:, 0]))
        self.assertTrue(torch.equal(a_tgt, x[:, 1:9]), "targets = the system's own codes, undelayed")
        expect_t = torch.ones(1, T)
        expect_t[0, 2], expect_t[0, 3], expect_t[0, 10:] = 0.5, 0.25, 0
        self.assertTrue(torch.equal(t_w, expect_t))
        expect_a = torch.ones(1, 8, T)
        expect_a[0, 0] *= 100
        expect_a[0, 1:, T - 1] = 0          # acoustic, delay 1: the last frame has no prediction
        expect_a[0, :, 10:] = 0             # -1 frames
        self.assertTrue(torch.equal(a_w, expect_a))
        valid = a_w > 0
        self.assertTrue(torch.isfinite(out.logits[valid]).all())
        self.assertTrue(torch.isnan(out.logits[0, 1:, T - 1]).all())

    def changed(self, stream, frame, T=12):
        """Which (stream, frame) logits change when codes[stream, frame] changes."""
        x = self.codes(T)
        y = x.clone()
        y[0, stream, frame] = (y[0, stream, frame] + 5) % (800 if stream == 0 else 64)
        with torch.no_grad():
            a, b = self.model(x), self.model(y)
        la = torch.cat([torch.nan_to_num(a.text_logits)[..., :64], torch.nan_to_num(a.logits)[..., :64]], 1)[0]
        lb = torch.cat([torch.nan_to_num(b.text_logits)[..., :64], torch.nan_to_num(b.logits)[..., :64]], 1)[0]
        d = (la[..., :64] - lb[..., :64]).abs().amax(-1) > 1e-6   # [9, T]: text, system cb0..7
        return {(k, t) for k in range(9) for t in range(T) if bool(d[k, t])}

    def test_dependencies_follow_the_delays(self):
        t, T = 5, 12
        # The text token of frame t: seen by the temporal transformer from frame t + 1 on, and by
        # the depformer's first step at frame t (-> cb0 of frame t) and at frame t - 1 for the
        # acoustic codebooks (delayed by one, they are predicted after frame t's text and cb0).
        got = self.changed(0, t)
        self.assertNotIn((0, t), got, "a token cannot see itself")
        self.assertFalse({(k, f) for k, f in got if f < t - 1}, "nothing before frame t - 1 depends on frame t's text")
        self.assertIn((1, t), got)
        self.assertTrue(any((k, t - 1) in got for k in range(2, 9)), "acoustic codes of frame t-1 follow text t")
        self.assertTrue(all(f > t for k, f in got if k == 0), "text sees frame t's text only after it")
        # System cb0 of frame t: never before frame t - 1; the text of frame t must not see it.
        got = self.changed(1, t)
        self.assertNotIn((0, t), got)
        self.assertNotIn((1, t), got)
        self.assertFalse({(k, f) for k, f in got if f < t - 1})
        # An acoustic system code of frame t: nothing of frames <= t but the later depth steps of t.
        got = self.changed(4, t)
        self.assertFalse({(k, f) for k, f in got if f < t}, got)
        self.assertFalse({(k, f) for k, f in got if f == t and k <= 3}, got)
        # The user's semantic code of frame t (delay 0, input only): the temporal transformer sees
        # it from position t + 1 on, which predicts text and cb0 of frame t + 1 and the acoustic
        # codes of frame t.
        got = self.changed(9, t)
        self.assertFalse({(k, f) for k, f in got if f <= t and k <= 1}, got)
        self.assertFalse({(k, f) for k, f in got if f < t}, got)
        self.assertIn((0, t + 1), got)
        self.assertIn((2, t), got)
        # A user acoustic code of frame t (delay 1): seen from position t + 2 on (text and cb0 of
        # frame t + 2, acoustic codes of frame t + 1).
        got = self.changed(12, t)
        self.assertFalse({(k, f) for k, f in got if f <= t}, got)
        self.assertFalse({(k, f) for k, f in got if f == t + 1 and k <= 1}, got)
        self.assertIn((0, t + 2), got)
        self.assertIn((2, t + 1), got)


class AnswerTokens(unittest.TestCase):
    def test_answer_word_located_last_occurrence(self):
        """The answer's tokens in the monologue: the last occurrence of the word in the reply."""
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=TOKENIZER)
        T, t, words, text = 60, 20, [], np.full(60, lm_arch.PAD, np.int64)
        spans = []
        for w in ["twelve", "minus", "zero", "is", "twelve."]:
            ids = sp.encode(w)
            text[t - 1] = lm_arch.EPAD
            words.append({"word": w, "start": t / 12.5})
            text[t:t + len(ids)] = ids
            spans.append((t, t + len(ids)))
            t += len(ids) + 1
        rec = {"turns": [{"speaker": "user", "start": 0.1, "end": 1.0, "answer_word": "twelve"},
                         {"speaker": "system", "start": 20 / 12.5, "end": t / 12.5, "answers_turn": 0, "words": words}]}
        answer, speech, located, asked = train_lm.eval_masks(rec, text, sp, train_lm.word_piece_table(sp))
        self.assertEqual((located, asked), (1, 1))
        a, b = spans[-1]
        expect = np.zeros(T, bool)
        expect[a:b] = True
        self.assertTrue(np.array_equal(answer, expect), (np.nonzero(answer), spans[-1]))
        self.assertTrue(speech[20:t - 1].all() and not speech[:20].any())


class TrainingRuns(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.data = write_synthetic(os.path.join(cls.tmp.name, "data"), card=64)
        cls.config = tiny_config(os.path.join(cls.tmp.name, "tiny.json"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_train(self, out, *extra):
        args = ["--data", self.data, "--out", out, "--config", self.config, "--tokenizer", TOKENIZER,
                "--batch-size", "2", "--frames", "40", "--log-every", "1", "--checkpoint-minutes", "0",
                "--eval-dialogues", "2", "--warmup-steps", "3", "--lr", "3e-3", *extra]
        train_lm.main(args)
        return read_jsonl(os.path.join(out, "train_log.jsonl")), read_jsonl(os.path.join(out, "eval_log.jsonl"))

    def test_batches_deterministic_and_padded(self):
        d = train_lm.Dialogues(self.data, "train", train_lm.read_dialogues(self.data))
        b = train_lm.Batcher(d, 7, 4, 100, 0.5)
        x, y = b.batch(3), b.batch(3)
        self.assertTrue(np.array_equal(x, y))
        self.assertFalse(np.array_equal(b.batch(3), b.batch(4)))
        self.assertEqual(x.shape, (4, 17, 100))
        # dialogues are 48-80 frames: each item starts at the dialogue's start and ends in -1
        for item in x:
            n = int((item[0] != lm_arch.ZERO).sum())
            self.assertTrue(any(np.array_equal(item[:, :n], c) for c in d.codes))
            self.assertTrue((item[:, n:] == lm_arch.ZERO).all())
        b = train_lm.Batcher(d, 7, 64, 20, 0.5)
        starts = sum(any(np.array_equal(item, c[:, :20]) for c in d.codes) for item in b.batch(0))
        self.assertTrue(16 < starts < 64, starts)  # about half from the start (plus chance)

    def test_resume_is_bit_exact(self):
        a_log, a_eval = self.run_train(os.path.join(self.tmp.name, "a"), "--steps", "8")
        b = os.path.join(self.tmp.name, "b")
        self.run_train(b, "--steps", "8", "--run-steps", "4")
        b_log, b_eval = self.run_train(b, "--steps", "8", "--resume", "auto")
        self.assertEqual(len(a_log), 8)
        self.assertEqual([r["step"] for r in b_log], list(range(1, 9)))
        keys = ["total", "text", "audio", "sem_ce", "acoustic_ce", "gnorm", "lr"]
        for ra, rb in zip(a_log[4:], b_log[4:]):
            self.assertEqual({k: ra[k] for k in keys}, {k: rb[k] for k in keys}, f"step {ra['step']}")
        drop = ("minutes", "tag", "best")
        self.assertEqual({k: v for k, v in a_eval[-1].items() if k not in drop},
                         {k: v for k, v in b_eval[-1].items() if k not in drop})
        sa = torch.load(os.path.join(self.tmp.name, "a", "ckpt_last.pt"), weights_only=False)["model"]
        sb = torch.load(os.path.join(b, "ckpt_last.pt"), weights_only=False)["model"]
        self.assertTrue(all(torch.equal(sa[k], sb[k]) for k in sa))

    def test_tiny_run_learns_the_pattern(self):
        log, ev = self.run_train(os.path.join(self.tmp.name, "learn"), "--steps", "60", "--log-every", "10",
                                 "--checkpoint-minutes", "0")
        first, last = log[0], log[-1]
        self.assertLess(last["total"], 0.5 * first["total"], (first, last))
        self.assertLess(last["text"], 0.5 * first["text"])
        e = ev[-1]
        self.assertGreater(e["answer_tokens"], 0, "answer-word tokens located in the eval dialogues")
        self.assertGreater(e["pad_acc"], 0.8)
        self.assertGreater(e["sem_acc"], 0.5)


class ExportAndGreedy(unittest.TestCase):
    """Default shape (real names): a 2-step run, exported f32 and bf16, reloaded by moshi strictly;
    the greedy reference on the exported folder agrees with the teacher-forced forward."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.data = write_synthetic(os.path.join(cls.tmp.name, "data"), n_train=2, n_eval=1, frames=(30, 40))
        cls.out = os.path.join(cls.tmp.name, "run")
        train_lm.main(["--data", cls.data, "--out", cls.out, "--batch-size", "1", "--frames", "24", "--steps", "2",
                       "--eval-dialogues", "1", "--checkpoint-minutes", "0", "--log-every", "1"])

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_export_round_trip(self):
        import export_lm
        from safetensors import safe_open
        from safetensors.torch import load_file
        ckpt = os.path.join(self.out, "ckpt_last.pt")
        for bf16 in (False, True):
            folder = os.path.join(self.tmp.name, "bf16" if bf16 else "f32")
            path, cfg = export_lm.export(ckpt, folder, bf16=bf16, log=lambda *_: None)
            tensors = load_file(path)
            _, kwargs = lm_arch.read_config()
            self.assertEqual(lm_arch.check_names(tensors, kwargs), ([], [], []))
            # the names duplex's lm_tiny fixture and Kyutai's releases use
            sys.path.insert(0, os.path.join(lm_arch.REPO, "tools", "reference"))
            import lm_reference
            self.assertEqual({n: s for n, s in lm_reference.checkpoint_layout(kwargs)},
                             {n: list(t.shape) for n, t in tensors.items()})
            self.assertEqual({t.dtype for t in tensors.values()}, {torch.bfloat16 if bf16 else torch.float32})
            with open(os.path.join(folder, "config.json")) as f:
                written = json.load(f, parse_constant=lambda c: self.fail(f"{c} in config.json"))
            self.assertNotIn("random_weights_seed", written["duplex"])
            self.assertEqual(written["duplex"]["training"]["step"], 2)
            self.assertEqual(written["duplex"]["mimi"], lm_arch.read_config()[0]["duplex"]["mimi"])
            text = json.dumps(written) + json.dumps(safe_open(path, "pt").metadata())
            self.assertNotIn(self.tmp.name, text, "no machine paths in what is written")
            self.assertNotIn("/work", text)
            self.assertTrue(os.path.exists(os.path.join(folder, "tokenizer.model")))

    def test_greedy_reference_matches_teacher_forcing(self):
        import export_lm
        import lm_greedy_reference as G
        # moshi's own initialisation (seeded), saved as a checkpoint and exported (bf16): its greedy
        # output is varied, unlike a 2-step model's
        raw, kwargs = lm_arch.read_config()
        torch.manual_seed(5)
        model = lm_arch.build_lm(kwargs)
        ckpt = os.path.join(self.tmp.name, "random.pt")
        torch.save(dict(step=0, model=model.state_dict(), lm_kwargs=kwargs, raw_config=raw, args={}, eval={},
                        train_seconds=0.0, data_frames=0, data_dialogues=0), ckpt)
        folder = os.path.join(self.tmp.name, "greedy")
        export_lm.export(ckpt, folder, bf16=True, log=lambda *_: None)
        codes = os.path.join(self.data, "codes", "eval-000000.npz")
        fixture = os.path.join(self.tmp.name, "lm_default_greedy.safetensors")
        tensors, meta = G.make_reference(folder, codes, fixture, calls=24, logit_calls=6, log=lambda *_: None)
        ret, user = tensors["fixture.returned"].long(), tensors["fixture.user_codes"].long()
        self.assertEqual(tuple(ret.shape), (23, 9))
        self.assertEqual(tuple(tensors["fixture.depth_logits"].shape), (6, 8, 2048))
        self.assertEqual(tuple(tensors["fixture.text_logits"].shape), (6, 800))
        self.assertEqual(meta["first_call_returns"], "None")
        self.assertLess(os.path.getsize(fixture), 2 * 2**20)
        self.assertGreater(len(set(ret[:, 0].tolist())), 8, "varied text")
        self.assertGreater(len(set(ret[:, 1:].flatten().tolist())), 50, "varied audio")
        # Training's alignment = inference's: the greedy frames, fed back as codes (system frame j =
        # what call j+1 returned, user training frame j = what call j+1 was given), are each the
        # argmax of LMModel.forward's logits at their frame.
        model, _, _, _ = G.load_folder_model(folder)
        T = ret.shape[0]
        x = torch.zeros(1, 17, T, dtype=torch.long)
        x[0, :9] = ret.T
        x[0, 9:] = user[:, 1:T + 1]
        with torch.no_grad():
            out = model(x)
        self.assertTrue(torch.equal(out.text_logits[0, 0].argmax(-1), x[0, 0]))
        am = out.logits[0].argmax(-1)
        self.assertTrue(torch.equal(am[0], x[0, 1]), "semantic codes")
        self.assertTrue(torch.equal(am[1:, :T - 1], x[0, 2:9, :T - 1]), "acoustic codes (last frame has no target)")
        # and the recorded logits are the ones forward computes at those frames (call t -> frame t)
        tl = tensors["fixture.text_logits"]
        self.assertTrue(torch.allclose(tl[1:], out.text_logits[0, 0, 1:6], atol=1e-4, rtol=1e-4))


if __name__ == "__main__":
    unittest.main()
