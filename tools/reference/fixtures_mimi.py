"""Kyutai's Mimi in a shrunk configuration of the released structure (SEANet with ratios 8·6·5·4 so a
frame is still 1920 samples, encoder/decoder transformers, conv down/upsampling, split RVQ with 32
levels), seeded, with codebooks drawn from the latents of other speech-like audio.

Writes two fixtures:
  mimi_weights  — the model under the released checkpoint's own tensor names (nothing else, so the
                  Swift loader can be checked strictly), config in the metadata;
  mimi_records  — a speech-like input and, for 8 and 32 codebooks, the streaming (one frame per
                  call) and offline encoder latent, codes, quantized latent and decoded audio, plus
                  offline intermediates (SEANet output, transformer outputs) that locate a mismatch.
"""
import json

import torch

from mimi_reference import FRAME, TINY_CONFIG, checkpoint_tensors, make_model, run_reference, speech_like

SEED = 2024
FRAMES = 10
MIN_DISTINCT = 4


def generate(save):
    model = make_model(TINY_CONFIG, SEED, pool_seconds=48)
    audio = speech_like(FRAMES * FRAME, SEED + 7)
    config = json.dumps(TINY_CONFIG, sort_keys=True)
    save("mimi_weights", checkpoint_tensors(model), SEED, config=config)

    records = {"input": torch.from_numpy(audio)}
    for n in (8, 32):
        out = run_reference(model, audio, n)
        codes = out["codes_streaming"]
        assert torch.equal(codes, out["codes_offline"]), "reference streaming and offline codes differ"
        distinct = [len(set(codes[k].tolist())) for k in range(n)]
        print(f"q{n}: distinct codes per codebook over {FRAMES} frames: {distinct}")
        assert min(distinct) >= MIN_DISTINCT, "codebooks too degenerate for a meaningful parity test"
        for key, value in out.items():
            records[f"q{n}.{key}"] = value.to(torch.int32) if key.startswith("codes") else value.float()

    with torch.no_grad():
        x = torch.from_numpy(audio)[None, None]
        emb = model.encoder(x)
        records["seanet_out"] = emb[0].T
        (emb,) = model.encoder_transformer(emb)
        records["encoder_transformer_out"] = emb[0].T
        model.set_num_codebooks(8)
        up = model.upsample(model.decode_latent(model.encode(x)))
        records["q8.upsampled"] = up[0].T
        (dec,) = model.decoder_transformer(up)
        records["q8.decoder_transformer_out"] = dec[0].T
    save("mimi_records", records, SEED, frames=FRAMES, min_distinct_codes=MIN_DISTINCT)
