#!/usr/bin/env python3
"""Real-size Mimi parity, end to end against the Swift CLI (too big for CI).

Builds the released Mimi architecture (loaders.get_mimi's config) with seeded random weights and
codebooks drawn from the latents of other speech-like audio (mimi_reference.py), saves it under
the checkpoint's own names to tools/reference/out/mimi_random.safetensors (reused by
tools/bench_mimi.py), then encodes and decodes a speech-like signal with Kyutai's reference
(streaming, one frame per call, and offline) and with `duplex codec encode/decode`, and prints
code agreement and the relative L2 error of the decoded audio.

Usage: tools/reference/.venv/bin/python tools/reference/mimi_parity_real.py [--seconds 14] [--threads 2]
"""
import argparse
import os
import struct
import subprocess
import sys
import time
import wave

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "out")
WEIGHTS = os.path.join(OUT, "mimi_random.safetensors")
SEED = 777
sys.path.insert(0, HERE)

from mimi_reference import FRAME, REAL_CONFIG, checkpoint_tensors, make_model, run_reference, speech_like  # noqa: E402


def real_model(rebuild=False):
    """The seeded real-size model; its weights file is written once and reused."""
    t0 = time.time()
    model = make_model(REAL_CONFIG, SEED, pool_seconds=60)
    if rebuild or not os.path.exists(WEIGHTS):
        os.makedirs(OUT, exist_ok=True)
        tensors = checkpoint_tensors(model)
        save_file(tensors, WEIGHTS)
        print(f"wrote {os.path.relpath(WEIGHTS, ROOT)}: {len(tensors)} tensors, "
              f"{sum(t.numel() for t in tensors.values()):,} values ({time.time() - t0:.0f} s)")
    return model


def write_wav16(path, samples):
    pcm = np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(pcm.tobytes())
    return pcm.astype(np.float32) / 32768


def read_wav_float(path):
    data = open(path, "rb").read()
    pos, fmt, body = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[pos + 8:pos + 24])
        elif cid == b"data":
            body = data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    assert fmt is not None and fmt[0] == 3 and fmt[5] == 32, f"{path}: expected a float32 WAV"
    return np.frombuffer(body, dtype="<f4")


@torch.no_grad()
def near_tie(model, latent, codebook, ours, theirs, ref_codes):
    """How close Kyutai's own latent is to the boundary between the two codes: the relative gap
    of squared distances (level `codebook`, with the residual Kyutai's codes leave)."""
    q = model.quantizer
    x = torch.from_numpy(latent).view(1, -1, 1)
    rvq, level = (q.rvq_first, codebook) if codebook < q.n_q_semantic else (q.rvq_rest, codebook - q.n_q_semantic)
    r = rvq.input_proj(x)[0, :, 0].double()
    first = 0 if rvq is q.rvq_first else q.n_q_semantic
    for l in range(level):
        r = r - rvq.vq.layers[l]._codebook.embedding[int(ref_codes[first + l])].double()
    emb = rvq.vq.layers[level]._codebook.embedding.double()
    d_ours, d_theirs = ((emb[int(ours)] - r) ** 2).sum().item(), ((emb[int(theirs)] - r) ** 2).sum().item()
    return f"on Kyutai's latent their squared distances differ by {abs(d_ours - d_theirs) / d_theirs:.1e} (relative)"


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=14.0, help="test signal length (past 10 s exercises the 250-step window)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rebuild", action="store_true", help="rewrite the weights file")
    p.add_argument("--duplex", default=os.path.join(ROOT, ".build", "release", "duplex"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    model = real_model(args.rebuild)
    frames = int(args.seconds * 24000) // FRAME
    audio = speech_like(frames * FRAME, SEED + 9)
    wav_in = os.path.join(OUT, "parity_input.wav")
    audio = write_wav16(wav_in, audio)  # the CLI reads 16-bit PCM: both sides see the same samples

    for n in (8, 32):
        t0 = time.time()
        cache = os.path.join(OUT, f"parity_reference_q{n}_{frames}.pt")
        if os.path.exists(cache) and not args.rebuild and os.path.getmtime(cache) > os.path.getmtime(WEIGHTS):
            ref = torch.load(cache)
        else:
            ref = run_reference(model, audio, n)
            torch.save(ref, cache)
        t_ref = time.time() - t0
        ref_codes = ref["codes_streaming"].numpy().astype(np.int32)
        ref_codes_path = os.path.join(OUT, f"parity_ref_codes_q{n}.npy")
        np.save(ref_codes_path, ref_codes)
        codes_path = os.path.join(OUT, f"parity_codes_q{n}.npy")
        wav_out = os.path.join(OUT, f"parity_decoded_q{n}.wav")
        common = ["--mimi", WEIGHTS, "-t", str(args.threads)]
        t0 = time.time()
        latent_path = os.path.join(OUT, f"parity_latent_q{n}.npy")
        subprocess.run([args.duplex, "codec", "encode", *common, "-i", wav_in, "-o", codes_path, "-n", str(n),
                        "--latent", latent_path], check=True)
        # Decode the reference's codes, so the audio comparison does not depend on encode agreement.
        subprocess.run([args.duplex, "codec", "decode", *common, "-i", ref_codes_path, "-o", wav_out, "--float"], check=True)
        t_swift = time.time() - t0
        codes = np.load(codes_path)
        latent = np.load(latent_path)
        decoded = read_wav_float(wav_out)
        assert codes.shape == ref_codes.shape, (codes.shape, ref_codes.shape)
        same_stream = float((codes == ref_codes).mean())
        same_offline = float((codes == ref["codes_offline"].numpy()).mean())
        ref_vs_ref = float((ref_codes == ref["codes_offline"].numpy()).mean())
        first_diff = np.argwhere(codes != ref_codes)
        print(f"\nq{n}: {frames} frames ({frames * FRAME / 24000:.1f} s), reference {t_ref:.0f} s, duplex CLI {t_swift:.1f} s")
        ref_latent = ref["latent_streaming"].numpy()
        per_frame = [rel_l2(latent[f], ref_latent[f]) for f in range(frames)]
        print(f"  encoder latent relative L2 vs Kyutai streaming: {rel_l2(latent, ref_latent):.2e} overall, "
              f"max per frame {max(per_frame):.2e} (frame {int(np.argmax(per_frame))})")
        for f, k in np.argwhere(codes != ref_codes)[:5].tolist():
            print(f"  code differs at codebook {f}, frame {k}: latent error there {per_frame[k]:.2e}, "
                  f"duplex {codes[f, k]} vs Kyutai {ref_codes[f, k]} — {near_tie(model, ref_latent[k], f, codes[f, k], ref_codes[f, k], ref_codes[:, k])}")
        print(f"  codes identical to Kyutai streaming: {100 * same_stream:.2f} %"
              + (f" (first difference at codebook {first_diff[0][0]}, frame {first_diff[0][1]})" if len(first_diff) else ""))
        print(f"  codes identical to Kyutai offline:   {100 * same_offline:.2f} %  "
              f"(Kyutai streaming vs its own offline: {100 * ref_vs_ref:.2f} %)")
        distinct = [len(set(ref_codes[k].tolist())) for k in range(n)]
        print(f"  distinct codes per codebook (reference): min {min(distinct)}, max {max(distinct)}")
        print(f"  decoded audio (from the reference codes) relative L2 vs Kyutai streaming: "
              f"{rel_l2(decoded, ref['decoded_streaming'].numpy()):.2e}, vs Kyutai offline: "
              f"{rel_l2(decoded, ref['decoded_offline'].numpy()):.2e}")
        print(f"  Kyutai streaming vs offline decoded: {rel_l2(ref['decoded_streaming'].numpy(), ref['decoded_offline'].numpy()):.2e}")


if __name__ == "__main__":
    main()
