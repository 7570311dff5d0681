"""BS.1770-4 integrated loudness and loudness normalisation exactly as pyloudnorm computes them,
for DuplexAudio's `Loudness`.

NVIDIA's PersonaPlex (moshi/moshi/models/lm.py `normalize_audio`) brings every voice prompt to
-24 LUFS before encoding it:
    meter = pyln.Meter(sr)
    loudness = meter.integrated_loudness(wav)
    return pyln.normalize.loudness(wav, loudness, target_lufs)
PersonaPlex does not pin pyloudnorm; this pins 0.1.1 (setup_venv.sh). 0.2.0's
`integrated_loudness` and `normalize.loudness` compute the same (it only makes the 75 % overlap
a parameter and adds loudness range).

Seeded signals, each a float32 input (what sphn.read hands PersonaPlex), measured on its float64
copy: the Swift meter runs in Double, and so does pyloudnorm on float64 input. PersonaPlex passes
the float32 array itself, and then pyloudnorm stores each filter's output back into float32 and
sums the squares in float32; `loudness_float32_path` records that value too, so the test can
say how far apart the two are.

Fixture Tests/DuplexCoreTests/Fixtures/loudness.safetensors, per case <name>:
  <name>.input          float32 [samples], or [channels, samples] for the multichannel case
  <name>.loudness       float64 [1]  pyloudnorm's integrated loudness (LUFS) of the float64 input
  <name>.loudness_float32_path  float64 [1]  the same measured on the float32 array itself
  <name>.normalized     float32 [samples]  pyln.normalize.loudness(input, loudness, -24), mono only
and in the metadata `sample_rates` (JSON: name -> Hz) and `target_lufs`.
"""
import json
from importlib.metadata import version

import numpy as np
import pyloudnorm as pyln
import scipy
import torch

SEED = 2424
TARGET_LUFS = -24.0
PYLOUDNORM_VERSION = "0.1.1"


def _noise(rng, seconds, rate, dbfs):
    """White Gaussian noise with an RMS of `dbfs` dB full scale."""
    return rng.standard_normal(int(round(seconds * rate))) * 10 ** (dbfs / 20)


def _silence(seconds, rate):
    return np.zeros(int(round(seconds * rate)))


def _speech_like(rng, seconds, rate, dbfs):
    """Noise through two resonances (formants near 500 Hz and 1.5 kHz) under a 4 Hz syllable
    envelope with pauses: quiet, uneven and band-limited like a voice prompt."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    excitation = rng.standard_normal(n)
    voiced = np.zeros(n)
    for fc, r in ((500.0, 0.97), (1500.0, 0.95)):
        theta = 2 * np.pi * fc / rate
        a1, a2 = -2 * r * np.cos(theta), r * r
        y1 = y2 = 0.0
        out = np.empty(n)
        for i, x in enumerate(excitation):
            y = x - a1 * y1 - a2 * y2
            out[i] = y
            y1, y2 = y, y1
        voiced += out / np.sqrt(np.mean(out ** 2))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2
    envelope[(t > 0.45) & (t < 0.62)] = 0.0              # a pause between words
    x = voiced * envelope
    return x * 10 ** (dbfs / 20) / np.sqrt(np.mean(x ** 2))


def _signals(rng):
    """name -> (sample rate, float64 signal [samples] or [channels, samples])."""
    r24, r16, r48 = 24_000, 16_000, 48_000
    t24 = np.arange(int(0.57 * r24)) / r24
    t16 = np.arange(int(0.6 * r16)) / r16
    return {
        # Loud and quiet bursts with digital silence and -95 dBFS hiss between: silent blocks
        # fall to the absolute gate, the -42 dBFS burst's blocks to the relative one.
        "bursts_24k": (r24, np.concatenate([
            _noise(rng, 0.30, r24, -18), _silence(0.50, r24), _noise(rng, 0.25, r24, -42),
            _noise(rng, 0.45, r24, -95), _noise(rng, 0.10, r24, -25)])),
        # 997 Hz at half scale for 0.57 s: pyloudnorm rounds 1.7 block steps up to 2 (3 blocks),
        # so its last block reaches 30 ms past the end.
        "sine_24k": (r24, 0.5 * np.sin(2 * np.pi * 997.0 * t24 + 0.1)),
        # A quiet voice-like prompt at -45 dBFS RMS (with its pause).
        "speech_like_24k": (r24, _speech_like(rng, 1.0, r24, -45)),
        # A loud half then one 14 dB quieter: above -70 LUFS, below the relative gate.
        "relative_gate_24k": (r24, np.concatenate([
            _noise(rng, 0.5, r24, -20), _noise(rng, 0.5, r24, -34)])),
        # Exactly one 400 ms block.
        "one_block_24k": (r24, _noise(rng, 0.4, r24, -30)),
        # 0.75 s: (T - 0.4) / 0.1 is 3.4999999999999996 in doubles, which rounds to 3 steps
        # (4 blocks) where exact arithmetic's 3.5 would round (half to even) to 4.
        "rounding_24k": (r24, _noise(rng, 0.75, r24, -28)),
        # 30 Hz (the high pass cuts it) plus 2.5 kHz (the shelf lifts it) at 16 kHz.
        "tones_16k": (r16, 0.3 * np.sin(2 * np.pi * 30.0 * t16) + 0.05 * np.sin(2 * np.pi * 2500.0 * t16)),
        "noise_48k": (r48, np.concatenate([_noise(rng, 0.3, r48, -22), _silence(0.15, r48)])),
        # Five channels (L, R, C, Ls, Rs): BS.1770's weights 1, 1, 1, 1.41, 1.41.
        "five_channels_16k": (r16, np.stack([_noise(rng, 0.45, r16, db) for db in (-20, -23, -26, -30, -35)])),
    }


def generate(save):
    assert version("pyloudnorm") == PYLOUDNORM_VERSION, f"pyloudnorm {version('pyloudnorm')}, expected {PYLOUDNORM_VERSION}"
    rng = np.random.default_rng(SEED)
    tensors, rates = {}, {}
    for name, (rate, signal) in _signals(rng).items():
        x32 = signal.astype(np.float32)
        x64 = x32.astype(np.float64)
        meter = pyln.Meter(rate)
        loudness = meter.integrated_loudness(x64.T)            # pyloudnorm wants [samples, channels]
        loudness32 = meter.integrated_loudness(x32.T)
        assert np.isfinite(loudness), name
        tensors[f"{name}.input"] = torch.from_numpy(x32)
        tensors[f"{name}.loudness"] = torch.tensor([loudness], dtype=torch.float64)
        tensors[f"{name}.loudness_float32_path"] = torch.tensor([float(loudness32)], dtype=torch.float64)
        if x32.ndim == 1:
            normalized = pyln.normalize.loudness(x64, loudness, TARGET_LUFS)
            tensors[f"{name}.normalized"] = torch.from_numpy(normalized.astype(np.float32))
        rates[name] = rate
        print(f"  {name}: {rate} Hz, {x32.shape}, {loudness:.6f} LUFS "
              f"(float32 path {loudness32 - loudness:+.2e} LU)")
    save("loudness", tensors, SEED, pyloudnorm_version=version("pyloudnorm"), scipy_version=scipy.__version__,
         numpy_version=np.__version__, target_lufs=TARGET_LUFS,
         sample_rates=json.dumps(rates, sort_keys=True))
