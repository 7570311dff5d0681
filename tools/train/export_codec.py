#!/usr/bin/env python3
"""A train_codec.py checkpoint → a Mimi .safetensors with exactly the tensor names of Kyutai's Mimi
checkpoints (what moshi.models.loaders.get_mimi loads with load_state_dict), the EMA codebook
buffers (`_codebook.embedding_sum`, `cluster_usage`, `_initialized`) as Kyutai stores them, and the
model's Kyutai config dict as JSON under the metadata key `config` (which duplex's Mimi.load and
`duplex info` read for a non-released shape).

Then it verifies:
  1. every name and shape against duplex's tensor table for that config (mimi_arch.duplex_table,
     the Python mirror of MimiTensorNames.table): nothing missing, misshaped or extra;
  2. loaders.get_mimi(file, config) (a fresh moshi MimiModel, strict load_state_dict) encodes a
     test signal to the same codes as the checkpoint's model (identical in f32; agreement with --bf16);
  3. if a duplex binary is built (.build/release/duplex or .build/debug/duplex): `duplex info --model`
     on the file, `duplex codec encode` (codes compared with moshi's) and `duplex codec roundtrip`.
A JSON report goes next to the output (<output>.report.json).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import wave

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mimi_arch  # noqa: E402

SR = 24000
FRAME = mimi_arch.FRAME


def test_signal(manifest, seconds):
    """The first held-out-voice utterance of the manifest (or any eval one), else a synthetic
    vowel-like signal: harmonics of a gliding pitch, amplitude-modulated into syllables, with noise."""
    if manifest:
        import csv
        root = os.path.dirname(os.path.abspath(manifest))
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        for split in ("eval_heldout_voice", "eval_trained_voice", "train"):
            for r in rows:
                if r["split"] == split:
                    p = r["path"] if os.path.isabs(r["path"]) else os.path.join(root, r["path"])
                    with wave.open(p, "rb") as w:
                        a = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
                    return a[:int(seconds * SR)].astype(np.float32) / 32768.0, p
    rng = np.random.default_rng(7)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 120 * (1 + 0.2 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 30))
    env = 0.5 * (1 + np.sin(2 * np.pi * 3.3 * t)) ** 2
    x = 0.1 * voice * env + 0.01 * rng.standard_normal(n)
    return (0.5 * x / np.abs(x).max()).astype(np.float32), "synthetic"


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def portable_args(args):
    """The training arguments as the shipped file may record them: no path of the machine that
    trained it (a path inside the repository becomes relative to it, any other its file name)."""
    def clean(v):
        if isinstance(v, str) and os.path.isabs(v):
            rel = os.path.relpath(v, REPO_ROOT)
            return os.path.basename(v) if rel.startswith("..") else rel
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return clean(dict(args))


def write_wav16(path, audio):
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())
    return pcm.astype(np.float32) / 32768.0


def find_duplex(explicit):
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for p in (".build/release/duplex", ".build/debug/duplex"):
        full = os.path.join(mimi_arch.REPO, p)
        if os.path.exists(full):
            return full
    return None


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="train_codec.py checkpoint (.pt)")
    ap.add_argument("-o", "--output", required=True, help="output .safetensors")
    ap.add_argument("--bf16", action="store_true", help="store the weights in bf16 (codebook buffers stay f32)")
    ap.add_argument("--bf16-codebooks", action="store_true", help="with --bf16, the codebook sums and usages too")
    ap.add_argument("--manifest", help="take the test signal from this corpus (held-out voice first)")
    ap.add_argument("--test-seconds", type=float, default=4.0)
    ap.add_argument("--duplex", help="duplex binary (default: .build/release/duplex, else .build/debug/duplex)")
    ap.add_argument("--no-duplex", action="store_true", help="skip the duplex checks")
    args = ap.parse_args()

    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    cfg = ckpt["mimi_config"]
    n_q = cfg["quantizer"]["n_q"]
    mimi_arch.patch_codebook_leak()
    model = mimi_arch.build_mimi(cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    model.set_num_codebooks(n_q)

    tensors = mimi_arch.checkpoint_state(model)
    for name, v in tensors.items():
        is_codebook = "._codebook." in name
        if name.endswith("._initialized"):
            tensors[name] = v.float()
        elif args.bf16 and (not is_codebook or args.bf16_codebooks):
            tensors[name] = v.to(torch.bfloat16)
        else:
            tensors[name] = v.float()
    report = {**portable_args({"checkpoint": os.path.abspath(args.checkpoint), "output": os.path.abspath(args.output)}),
              "step": ckpt.get("step"), "train_minutes": round(ckpt.get("train_seconds", 0) / 60, 2),
              "eval_at_checkpoint": ckpt.get("eval"), "dtype": "bf16" if args.bf16 else "f32",
              "tensors": len(tensors), "parameters": int(sum(p.numel() for p in model.parameters()))}

    missing, misshaped, extra = mimi_arch.compare_to_table(tensors, cfg)
    report["table_check"] = {"missing": missing, "misshaped": misshaped, "extra": extra}
    if missing or misshaped or extra:
        print(json.dumps(report["table_check"], indent=1))
        raise SystemExit("exported names/shapes do not match duplex's Mimi table")
    print(f"table: {len(tensors)} tensors, every name and shape matches duplex's MimiTensorNames.table for this config")

    meta = {"config": json.dumps(cfg, sort_keys=True),
            "duplex_training": json.dumps({"step": ckpt.get("step"), "train_minutes": report["train_minutes"],
                                           "args": portable_args(ckpt.get("args", {})), "ctc_units": len(ckpt.get("vocab", []))}, sort_keys=True)}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_file(tensors, args.output, metadata=meta)
    report["bytes"] = os.path.getsize(args.output)
    if ckpt.get("ctc_head") is not None:
        # Training-only (the engine never reads it): lets train_codec.py --init-from FILE go on with
        # the same semantic head and phoneme units.
        torch.save({"ctc_head": ckpt["ctc_head"], "vocab": ckpt.get("vocab"), "args": ckpt.get("args")},
                   args.output + ".ctc_head.pt")
    print(f"wrote {args.output}: {report['bytes'] / 2**20:.1f} MiB, {report['dtype']}")

    # 2. Kyutai's own loader, strict, and codes on a test signal.
    from moshi.models import loaders
    fresh = loaders.get_mimi(args.output, cfg, num_codebooks=n_q)  # load_state_dict(strict=True) inside
    audio, source = test_signal(args.manifest, args.test_seconds)
    work = tempfile.mkdtemp(prefix="codec_export_")
    wav_path = os.path.join(work, "test.wav")
    audio = write_wav16(wav_path, audio)
    n = len(audio)
    padded = ((n + FRAME - 1) // FRAME) * FRAME
    x = torch.zeros(1, 1, padded)
    x[0, 0, :n] = torch.from_numpy(audio)
    with torch.no_grad():
        codes_ckpt = model.encode(x)[0]
        codes_file = fresh.encode(x)[0]
        decoded = fresh.decode(codes_file[None])[0, 0, :n]
    agree = (codes_ckpt == codes_file).float().mean(dim=1).tolist()
    identical = bool(torch.equal(codes_ckpt, codes_file))
    report["moshi_reload"] = {"strict_load": True, "test_signal": source, "seconds": n / SR, "frames": int(codes_file.shape[1]),
                              "codes_identical": identical, "agreement_per_codebook": [round(a, 4) for a in agree]}
    print(f"moshi get_mimi (strict) reload: codes {'identical' if identical else 'differ'} on {source} "
          f"({codes_file.shape[1]} frames × {n_q}); agreement per codebook {[round(a, 3) for a in agree]}")
    if not identical and not args.bf16:
        raise SystemExit("f32 export does not reproduce the checkpoint's codes")

    # 3. duplex.
    exe = None if args.no_duplex else find_duplex(args.duplex)
    if exe:
        d = {"binary": exe}
        rc, out = run([exe, "info", "--model", args.output])
        d["info_rc"], d["info"] = rc, out[-4000:]
        print(f"duplex info rc={rc}:\n{out[-2500:]}")
        codes_npy = os.path.join(work, "codes.npy")
        rc, out = run([exe, "codec", "encode", "--mimi", args.output, "-i", wav_path, "-o", codes_npy, "-n", str(n_q)])
        d["encode_rc"], d["encode"] = rc, out[-2000:]
        if rc == 0:
            dc = torch.from_numpy(np.load(codes_npy).astype(np.int64))
            m = min(dc.shape[1], codes_file.shape[1])
            agree_d = (dc[:, :m] == codes_file[:, :m]).float().mean(dim=1).tolist()
            d["codes_vs_moshi_agreement"] = [round(a, 4) for a in agree_d]
            d["codes_identical"] = bool(torch.equal(dc[:, :m], codes_file[:, :m]))
            print(f"duplex codec encode: codes vs moshi: {'identical' if d['codes_identical'] else 'agreement ' + str([round(a, 3) for a in agree_d])}")
        else:
            print(f"duplex codec encode failed (rc={rc}): {out[-1500:]}")
        rt = os.path.join(work, "roundtrip.wav")
        rc, out = run([exe, "codec", "roundtrip", "--mimi", args.output, "-i", wav_path, "-o", rt, "-n", str(n_q)])
        d["roundtrip_rc"], d["roundtrip"] = rc, out[-2000:]
        if rc == 0:
            with wave.open(rt, "rb") as w:  # 16-bit PCM (quantization noise ≈ -96 dBFS)
                y = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
            ref = decoded.numpy()
            m = min(len(y), len(ref))
            err = float(np.sqrt(np.mean((y[:m] - ref[:m]) ** 2)))
            rms = float(np.sqrt(np.mean(ref[:m] ** 2)) + 1e-12)
            d["roundtrip_vs_moshi_decode"] = {"rms_error": err, "rms_moshi": rms, "snr_db": 20 * np.log10(rms / max(err, 1e-12))}
            print(f"duplex codec roundtrip vs moshi decode of the same codes: SNR {d['roundtrip_vs_moshi_decode']['snr_db']:.1f} dB")
        else:
            print(f"duplex codec roundtrip failed (rc={rc}): {out[-1500:]}")
        report["duplex"] = d
    else:
        report["duplex"] = None if args.no_duplex else "no duplex binary found"
    with open(args.output + ".report.json", "w") as f:
        json.dump(portable_args(report), f, indent=1, default=str)
    print(f"report: {args.output}.report.json")


if __name__ == "__main__":
    main()
