"""Kyutai's Mimi streaming well past its transformers' attention window.

The `mimi` fixture covers 10 frames (20 transformer steps at 25 Hz), so the encoder and decoder
transformers never wrap their KV rings (context 250 steps = 10 s of audio, far too long for a
fixture). This one takes the very same model (same seed, same weights: `mimi_weights` is reused),
lowers both transformers' context to CONTEXT steps with Kyutai's own `set_attention_context`
(the weights do not depend on it), and streams FRAMES frames — FRAMES·2 transformer steps, several
times the window — one frame per call, encode then decode, 8 codebooks.

Writes mimi_long_records: the input, the streaming latent, codes, quantized latent and decoded
audio, with the context and the transformer steps per frame in the metadata.
"""
import json
import os

import torch
from safetensors.torch import load_file
from moshi.modules.transformer import set_attention_context

import fixtures_mimi
from mimi_reference import FRAME, TINY_CONFIG, checkpoint_tensors, make_model, run_reference, speech_like

CONTEXT = 16          # transformer steps (the released model: 250)
FRAMES = 48           # 96 transformer steps = 6 windows
CODEBOOKS = 8
MIN_DISTINCT = 8


def generate(save):
    model = make_model(TINY_CONFIG, fixtures_mimi.SEED, pool_seconds=48)
    # The Swift test loads the committed mimi_weights: this must be that very model.
    committed = load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "DuplexCoreTests",
                                       "Fixtures", "mimi_weights.safetensors"))
    ours = checkpoint_tensors(model)
    assert committed.keys() == ours.keys() and all(torch.equal(committed[k], ours[k].float()) for k in ours), \
        "the model differs from the committed mimi_weights: regenerate both (make_fixtures.py mimi mimi_long)"
    set_attention_context(model, CONTEXT)
    steps_per_frame = round(model.encoder_frame_rate / model.frame_rate)
    assert FRAMES * steps_per_frame >= 4 * CONTEXT, "the stream must run well past the window"
    audio = speech_like(FRAMES * FRAME, fixtures_mimi.SEED + 11)
    out = run_reference(model, audio, CODEBOOKS)
    codes = out["codes_streaming"]
    distinct = [len(set(codes[k].tolist())) for k in range(CODEBOOKS)]
    print(f"q{CODEBOOKS}: distinct codes per codebook over {FRAMES} frames: {distinct}")
    assert min(distinct) >= MIN_DISTINCT, "codebooks too degenerate for a meaningful parity test"
    records = {"input": torch.from_numpy(audio)}
    for key in ("latent_streaming", "codes_streaming", "quantized_streaming", "decoded_streaming"):
        value = out[key]
        records[key] = value.to(torch.int32) if key.startswith("codes") else value.float()
    save("mimi_long_records", records, fixtures_mimi.SEED, generator="tools/reference/make_fixtures.py mimi_long",
         config=json.dumps(TINY_CONFIG, sort_keys=True), context=CONTEXT, frames=FRAMES, codebooks=CODEBOOKS,
         transformer_steps_per_frame=steps_per_frame, min_distinct_codes=MIN_DISTINCT, weights="mimi_weights")
