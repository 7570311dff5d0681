"""PersonaPlex (NVIDIA's Moshi fine-tune with a persona) at a tiny width, run by NVIDIA's own code:
the system-prompt phase (voice prompt, silence, text prompt, silence) and then greedy generation
over seeded user codes, as moshi/moshi/server.py drives `LMGen`.

NVIDIA's code is not committed here. Get it and point PERSONAPLEX_SRC at the checkout:
    git clone https://github.com/NVIDIA/personaplex && git -C personaplex checkout 3428dfd
    PERSONAPLEX_SRC=$PWD/personaplex "$(tools/reference/setup_venv.sh)" tools/reference/make_fixtures.py personaplex
(PERSONAPLEX_COMMIT names the commit in the metadata when the checkout has no .git.) Its package
is a fork that is also called `moshi`, so it runs in a child process with $PERSONAPLEX_SRC/moshi
first on PYTHONPATH; this process keeps Kyutai's moshi 0.2.13 and only writes the fixture. It runs
on the CPU as it is (CUDA graphs switch themselves off there): nothing needs patching for CUDA.

The model: Kyutai's tiny test LM (lm_reference.CONFIGS["tiny"]) with PersonaPlex's layout, dep_q
16 = n_q (16 depformer steps, 8 of them for the user's codebooks), a text vocabulary of 500 (the
committed tokenizer_tiny.model) and a context of 16. The weights are seeded, bf16-rounded, saved
under the names NVIDIA's LMModel (= the real PersonaPlex file) uses, and loaded through NVIDIA's
`loaders.get_moshi_lm` (its `_lm_kwargs` swapped for the tiny config), in float32.

What is driven, in the server's order (server.py `ServerState.warmup`, `handle_chat`):
  1. 4 warm-up steps on random user codes, then `reset_streaming()`.
  2. The voice prompt as a .wav would be, from its Mimi codes: the fixture cannot run Mimi, so
     `LMGen._encode_voice_prompt_frames` is replaced by one yielding the given codes [1, 8, 1]
     frame by frame: the point just after `encode_from_sphn`. With `save_voice_prompt_embeddings`
     NVIDIA's code writes voice.pt itself, exactly as the shipped voices/*.pt were made.
  3. The text prompt: NVIDIA's `wrap_with_system_tags` (from offline.py: importing server.py
     starts the server) tokenized by sentencepiece with tokenizer_tiny.model, ids < 500.
  4. `step_system_prompts`, then one `LMGen.step(user codes)` per conversation call.
  Then again from `reset_streaming()` with the voice given as NVIDIA's voice.pt
  (`load_voice_prompt_embeddings`): every text logit and every returned frame from the first
  silence call on are identical (checked here, not stored twice); the depformer's logits differ
  only while the embeddings replay (its teacher forcing sees LMGen's dummy targets, discarded).
SILENCE_TOKENS / SINE_TOKENS (lm.py) exceed the tiny card of 32: they are patched to the real values
mod 32, recorded as fixture.silence_tokens / fixture.sine_tokens.

Writes personaplex_tiny.safetensors (the weights, config in the metadata), personaplex_tiny_records
.safetensors (everything below) and personaplex_tiny_voice.pt (NVIDIA's voice file). Per NVIDIA
offset o (the `state.offset` a call starts at; each `step` is one offset, `step_embeddings` takes
two for its first embedding), and per model step s (the temporal transformer's step, run at offset
s + 1 on delay column s):
  fixture.phase [offsets]              0 voice, 1 silence, 2 text prompt, 3 silence, 4 conversation
  fixture.returned [offsets, 17]       what the call returned (rows 0..8 go to the client: text and
  fixture.returned_mask [offsets]      Mimi's codes, server.py `tokens[:, 1:9]`), 1 where it returned
  fixture.columns [steps, 17]          the token column the step embedded (codes path)
  fixture.input_embeddings [steps, dim]  the temporal transformer's input (replay: the voice's)
  fixture.text_logits [steps, text_card], fixture.depth_logits [steps, 16, card]
  fixture.voice_codes [8, frames], fixture.voice_embeddings [T, 1, 1, dim], fixture.voice_cache [1, 17, 4]
  fixture.text_prompt_ids [L], fixture.user_codes [8, calls], fixture.warmup_codes [8, 4]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

SEED = 3141
CALLS = 48            # conversation calls: 3x the context
VOICE_FRAMES = 5      # Mimi frames of the voice prompt; NVIDIA saves one embedding fewer
WARMUP = 4
TEXT_PROMPT = "You are a wise teacher."
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "Tests", "DuplexCoreTests", "Fixtures")
TOKENIZER = os.path.join(FIXTURES, "tokenizer_tiny.model")
SILENCE_TOKENS = [948, 243, 1178, 546, 1736, 1030, 1978, 2008]
SINE_TOKENS = [430, 1268, 381, 1611, 1095, 1495, 56, 472]


def config():
    from lm_reference import CONFIGS

    c = dict(CONFIGS["tiny"])
    c.update(dep_q=16, text_card=500, context=16)
    return c


def _package_dir(src):
    for d in (os.path.join(src, "moshi"), src):
        if os.path.exists(os.path.join(d, "moshi", "models", "lm.py")):
            return d
    raise SystemExit(f"PERSONAPLEX_SRC={src}: no moshi/moshi/models/lm.py there (expected NVIDIA/personaplex's checkout)")


def _commit(src):
    try:
        return subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("PERSONAPLEX_COMMIT", "unknown")


def generate(save):
    src = os.environ.get("PERSONAPLEX_SRC")
    if not src:
        print("skip personaplex: set PERSONAPLEX_SRC to a checkout of github.com/NVIDIA/personaplex (see fixtures_personaplex.py)")
        return
    import torch
    from safetensors.torch import load_file

    from lm_reference import checkpoint_layout

    cfg = config()
    package = _package_dir(os.path.abspath(src))
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=package + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", tmp, json.dumps(cfg), package],
                       env=env, check=True)
        weights = load_file(os.path.join(tmp, "weights.safetensors"))
        records = load_file(os.path.join(tmp, "records.safetensors"))
        with open(os.path.join(tmp, "meta.json")) as f:
            meta = json.load(f)
        # NVIDIA's names are Kyutai's legacy checkpoint names (what duplex reads) at dep_q 16.
        kyutai = dict(checkpoint_layout(cfg))
        assert kyutai == {k: list(v.shape) for k, v in weights.items()}, "NVIDIA's and Kyutai's layouts differ"
        meta.update(config=json.dumps(cfg), personaplex_commit=_commit(src))
        save("personaplex_tiny", weights, SEED, **meta)
        save("personaplex_tiny_records", records, SEED, **meta)
        voice = os.path.join(FIXTURES, "personaplex_tiny_voice.pt")
        shutil.copyfile(os.path.join(tmp, "voice.pt"), voice)
        assert torch.equal(torch.load(voice, weights_only=True)["embeddings"], records["fixture.voice_embeddings"])
        print(f"wrote {os.path.relpath(voice, ROOT)} ({os.path.getsize(voice)} bytes)")


# ---------------------------------------------------------------------------------------------
# The child process: NVIDIA's `moshi` on the path.

def _random_tensor(name, shape, generator):
    """lm_reference.random_tensor: norm alphas around 1, matrices N(0, 1/fan_in)."""
    import torch

    if name.endswith("alpha"):
        return 1 + 0.1 * torch.randn(shape, generator=generator)
    fan_in = shape[-1] if len(shape) > 1 else 1
    return torch.randn(shape, generator=generator) * fan_in ** -0.5


def _worker(tmp, cfg, package):
    import numpy as np
    import sentencepiece
    import torch
    from safetensors.torch import save_file

    import moshi
    assert os.path.abspath(moshi.__file__).startswith(package), f"imported {moshi.__file__}, not NVIDIA's fork"
    from moshi import offline
    from moshi.models import lm as nvlm
    from moshi.models import loaders

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    card, dep_q, dim = cfg["card"], cfg["dep_q"], cfg["dim"]

    # Weights under NVIDIA's LMModel names, through NVIDIA's loader.
    with torch.device("meta"):
        layout = {k: list(v.shape) for k, v in nvlm.LMModel(**cfg).state_dict().items()}
    g = torch.Generator().manual_seed(SEED)
    weights = {k: _random_tensor(k, s, g).to(torch.bfloat16) for k, s in layout.items()}
    path = os.path.join(tmp, "weights.safetensors")
    save_file(weights, path)
    loaders._lm_kwargs = {k: v for k, v in cfg.items()}
    model = loaders.get_moshi_lm(path, device="cpu", dtype=torch.float32)
    loaded = model.state_dict()
    assert set(loaded) == set(weights) and all(torch.equal(loaded[k], weights[k].float()) for k in weights)
    assert not any(p.is_meta for p in model.parameters())

    silence = [t % card for t in SILENCE_TOKENS]
    sine = [t % card for t in SINE_TOKENS]
    nvlm.SILENCE_TOKENS = np.array(silence, dtype=np.int64)
    nvlm.SINE_TOKENS = np.array(sine, dtype=np.int64)

    wrapped = offline.wrap_with_system_tags(TEXT_PROMPT)
    ids = sentencepiece.SentencePieceProcessor(TOKENIZER).encode(wrapped)
    assert all(0 <= i < cfg["text_card"] for i in ids)
    gu = torch.Generator().manual_seed(SEED + 1)
    voice_codes = torch.randint(0, card, (8, VOICE_FRAMES), generator=gu)
    warmup_codes = torch.randint(0, card, (8, WARMUP), generator=gu)
    user = torch.randint(0, card, (8, CALLS), generator=gu)

    # Hooks, installed before streaming starts (LMGen binds forward_* when its state is made).
    rec = {}

    def clear():
        rec.update(emb=[], text=[], depth=[], cur=[], columns=[], returned={}, offsets=0)

    forward_embeddings, forward_depformer = model.forward_embeddings, model.forward_depformer

    def embeddings_hook(x):
        rec["emb"].append(x[0, 0].float().clone())
        out, text_logits = forward_embeddings(x)
        rec["text"].append(text_logits[0, 0, 0].float().clone())
        return out, text_logits

    def depformer_hook(cb, seq, transformer_out):
        logits = forward_depformer(cb, seq, transformer_out)
        rec["cur"].append(logits[0, 0, 0].float().clone())
        if cb == dep_q - 1:
            rec["depth"].append(torch.stack(rec["cur"]))
            rec["cur"] = []
        return logits

    model.forward_embeddings = embeddings_hook
    model.forward_depformer = depformer_hook
    gen = nvlm.LMGen(model, device="cpu", use_sampling=False, temp=0.0, temp_text=0.0, top_k=0, top_k_text=0,
                     audio_silence_frame_cnt=int(0.5 * 12.5), sample_rate=24000, frame_rate=12.5,
                     save_voice_prompt_embeddings=True)
    prepare, process = gen.prepare_step_input, gen.process_transformer_output

    def prepare_hook(*args, **kwargs):
        rec["offsets"] += 1
        out = prepare(*args, **kwargs)
        if out is not None:
            rec["columns"].append(out[0][0, :, 0].clone())
        return out

    def process_hook(*args, **kwargs):
        offset = gen._streaming_state.offset
        out = process(*args, **kwargs)
        if out is not None:
            rec["returned"][offset] = out[0, :, 0].clone()
        return out

    gen.prepare_step_input, gen.process_transformer_output = prepare_hook, process_hook
    gen.streaming_forever(1)

    def run(voice_pt=None):
        clear()
        for t in range(WARMUP):
            gen.step(warmup_codes[None, :, t:t + 1])
        gen.reset_streaming()
        clear()
        if voice_pt is None:
            gen.voice_prompt = os.path.join(tmp, "voice.wav")      # voice.pt is written beside it
            gen.voice_prompt_audio = np.zeros((1, VOICE_FRAMES * gen._frame_size), dtype=np.float32)
            gen.voice_prompt_embeddings = gen.voice_prompt_cache = None
            gen._encode_voice_prompt_frames = lambda mimi: (voice_codes[None, :, i:i + 1].clone() for i in range(VOICE_FRAMES))
        else:
            gen.load_voice_prompt_embeddings(voice_pt)
        gen.text_prompt_tokens = ids
        phases = []
        for phase, part in enumerate([lambda: gen._step_voice_prompt(None), gen._step_audio_silence,
                                      gen._step_text_prompt, gen._step_audio_silence]):
            before = rec["offsets"]
            part()
            phases += [phase] * (rec["offsets"] - before)
        prompt_offsets = rec["offsets"]
        for t in range(CALLS):
            gen.step(user[None, :, t:t + 1])
        phases += [4] * (rec["offsets"] - prompt_offsets)
        return dict(rec), phases

    a, phases = run()
    voice_file = os.path.join(tmp, "voice.pt")
    voice = torch.load(voice_file, weights_only=True)
    b, phases_b = run(voice_file)
    steps, offsets = len(a["text"]), len(phases)
    assert steps == offsets - 1 and phases == phases_b and b["offsets"] == offsets
    assert voice["embeddings"].shape == (VOICE_FRAMES - 1, 1, 1, dim)
    for s in range(steps):
        assert torch.equal(a["text"][s], b["text"][s]) and torch.equal(a["emb"][s], b["emb"][s]), f"step {s}"
        # While the embeddings replay, LMGen's targets are dummy initial tokens, so the (discarded)
        # depformer runs teacher-forced on other tokens; from the first silence call on, all agree.
        if s >= VOICE_FRAMES - 1:
            assert torch.equal(a["depth"][s], b["depth"][s]), f"step {s}"
    for s in range(VOICE_FRAMES - 1):
        assert torch.equal(a["emb"][s], voice["embeddings"][s, 0, 0])
    for o in range(VOICE_FRAMES, offsets):
        assert torch.equal(a["returned"][o], b["returned"][o]), f"offset {o}"
    assert sorted(a["returned"]) == list(range(2, offsets)), "a frame from every call from offset 2 on"

    _check_spec(a, phases, voice, voice_codes, ids, silence, sine, user, cfg)

    returned = torch.zeros(offsets, 17, dtype=torch.int32)
    mask = torch.zeros(offsets, dtype=torch.int32)
    for o, frame in a["returned"].items():
        returned[o], mask[o] = frame.to(torch.int32), 1
    conversation = returned[[o for o in range(offsets) if phases[o] == 4]]
    assert len(set(conversation[:, 0].tolist())) > 3, f"degenerate text {conversation[:, 0].tolist()}"
    assert len(set(conversation[:, 1:9].flatten().tolist())) > 10, "degenerate audio"
    records = {
        "fixture.phase": torch.tensor(phases, dtype=torch.int32),
        "fixture.returned": returned,
        "fixture.returned_mask": mask,
        "fixture.columns": torch.stack(a["columns"]).to(torch.int32),
        "fixture.input_embeddings": torch.stack(a["emb"]),
        "fixture.text_logits": torch.stack(a["text"]),
        "fixture.depth_logits": torch.stack(a["depth"]),
        "fixture.voice_codes": voice_codes.to(torch.int32),
        "fixture.voice_embeddings": voice["embeddings"].contiguous(),
        "fixture.voice_cache": voice["cache"].contiguous(),
        "fixture.text_prompt_ids": torch.tensor(ids, dtype=torch.int32),
        "fixture.user_codes": user.to(torch.int32),
        "fixture.warmup_codes": warmup_codes.to(torch.int32),
        "fixture.silence_tokens": torch.tensor(silence, dtype=torch.int32),
        "fixture.sine_tokens": torch.tensor(sine, dtype=torch.int32),
    }
    save_file(records, os.path.join(tmp, "records.safetensors"))
    counts = {p: phases.count(i) for i, p in enumerate(["voice", "silence", "text", "silence2", "conversation"])}
    meta = dict(text_prompt=TEXT_PROMPT, text_prompt_wrapped=wrapped, tokenizer="tokenizer_tiny.model",
                voice_frames=VOICE_FRAMES, voice_embeddings=VOICE_FRAMES - 1, silence_frames=int(0.5 * 12.5),
                text_tokens=len(ids), calls=CALLS, offsets=offsets, steps=steps,
                first_conversation_offset=phases.index(4), phase_offsets=json.dumps(counts),
                sampling="greedy (use_sampling=False)", lm_gen_sample_rate=24000, lm_gen_frame_rate=12.5)
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f)
    print(f"NVIDIA's LMGen: {offsets} offsets ({counts}), {steps} model steps")


def _check_spec(a, phases, voice, voice_codes, ids, silence, sine, user, cfg):
    """The prompt phase as duplex implements it, checked against what NVIDIA's LMGen did.

    Frames f = 0, 1, … are NVIDIA's offsets. Prompt frame f forces text, Moshi's 8 codes and the
    user's 8 codes; stream k's value for frame f sits in delay column f + delay_k; frame 0 is the
    initial tokens whatever was given (and so is the delayed streams' frame -1). Model step s embeds column s and predicts column s + 1; the
    call at offset o >= 2 returns frame o - 1 (column o - 1's undelayed rows, column o's delayed)."""
    import torch

    delays, card, text_card = cfg["delays"], cfg["card"], cfg["text_card"]
    n_voice = phases.count(0)
    frames = [(3, voice_codes[:, f].tolist(), sine) for f in range(n_voice)]
    frames += [(3, silence, sine)] * phases.count(1)
    frames += [(t, silence, sine) for t in ids]
    frames += [(3, silence, sine)] * phases.count(3)
    prompt = len(frames)
    assert prompt == phases.index(4)

    def value(k, f):
        if f <= 0:
            return text_card if k == 0 else card
        text, moshi, usr = frames[f]
        return text if k == 0 else (moshi[k - 1] if k <= 8 else usr[k - 9])

    columns = torch.stack(a["columns"])
    for j in range(prompt):   # every column the prompt determines alone
        assert columns[j].tolist() == [value(k, j - d) for k, d in enumerate(delays)], f"column {j}"
    for j in range(prompt, len(columns)):   # conversation: user codes forced, the rest generated
        for k, d in enumerate(delays):
            f = j - d
            if f < prompt:
                assert columns[j, k] == value(k, f), (j, k)
            elif k >= 9:
                assert columns[j, k] == user[k - 9, f - prompt], (j, k)
    for o, frame in a["returned"].items():   # the call at offset o returns frame o - 1
        undelayed = [k for k, d in enumerate(delays) if d == 0]
        assert all(frame[k] == columns[o - 1, k] for k in undelayed), o
        if o < len(columns):
            assert all(frame[k] == columns[o, k] for k, d in enumerate(delays) if d == 1), o
    # The voice file: T = frames - 1 embeddings (columns 0..T-1 embedded); its cache holds column T
    # at slot T mod 4 and column T + 1's delayed rows at slot (T + 1) mod 4.
    T, ct = voice["embeddings"].shape[0], voice["cache"].shape[2]
    assert T == n_voice - 1 and ct == max(delays) + 3
    assert voice["cache"][0, :, T % ct].tolist() == columns[T].tolist()
    assert all(voice["cache"][0, k, (T + 1) % ct] == columns[T + 1, k] for k, d in enumerate(delays) if d == 1)


if __name__ == "__main__":
    assert sys.argv[1] == "--worker", "run through tools/reference/make_fixtures.py personaplex"
    _worker(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])
