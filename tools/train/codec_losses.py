"""Losses for training the codec: multi-resolution mel (and optional log-STFT) reconstruction,
waveform L1, CTC phoneme loss on codebook 0, and an optional small multi-scale STFT discriminator
with hinge and feature-matching losses. All spectral losses run in float32 (outside autocast)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# (n_fft, n_mels): hop n_fft/4, Hann window.
MEL_RESOLUTIONS = ((256, 32), (512, 64), (1024, 80), (2048, 128))


def mel_filterbank(sample_rate, n_fft, n_mels, fmin=0.0, fmax=None):
    """Triangular filters on the HTK mel scale, [n_mels, n_fft/2+1], each normalised to unit area
    in frequency bins (so wide high bands are not louder than narrow low ones)."""
    fmax = fmax or sample_rate / 2
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)
    inv = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)
    edges = torch.tensor([inv(mel(fmin) + (mel(fmax) - mel(fmin)) * i / (n_mels + 1)) for i in range(n_mels + 2)])
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo).clamp(min=1e-5)
    down = (hi - freqs[None]) / (hi - mid).clamp(min=1e-5)
    fb = torch.clamp(torch.minimum(up, down), min=0)
    fb = fb / fb.sum(dim=1, keepdim=True).clamp(min=1e-8)
    return fb


class MultiResolutionSpectralLoss(nn.Module):
    """Per resolution: L1 of mel magnitudes + L1 of log mel (the feasibility study's loss), and,
    with stft_weight > 0, L1 of log |STFT| plus spectral convergence. Averaged over resolutions."""

    def __init__(self, sample_rate=24000, resolutions=MEL_RESOLUTIONS, stft_weight=0.0, eps=1e-5):
        super().__init__()
        self.resolutions = resolutions
        self.stft_weight = stft_weight
        self.eps = eps
        for n_fft, n_mels in resolutions:
            self.register_buffer(f"win{n_fft}", torch.hann_window(n_fft), persistent=False)
            self.register_buffer(f"fb{n_fft}", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)

    def _mag(self, x, n_fft):
        spec = torch.stft(x, n_fft, hop_length=n_fft // 4, window=getattr(self, f"win{n_fft}"),
                          center=True, pad_mode="reflect", return_complex=True)
        return spec.abs().clamp(min=1e-7)  # [B, F, T]

    def forward(self, y, x):
        """y: reconstruction, x: target, both [B, T]. Returns (mel loss, stft loss)."""
        y, x = y.float(), x.float()
        mel_total, stft_total = 0.0, 0.0
        for n_fft, _ in self.resolutions:
            Y, X = self._mag(y, n_fft), self._mag(x, n_fft)
            fb = getattr(self, f"fb{n_fft}")
            mY, mX = fb @ Y, fb @ X
            mel_total = mel_total + (mY - mX).abs().mean() + (torch.log(mY + self.eps) - torch.log(mX + self.eps)).abs().mean()
            if self.stft_weight > 0:
                sc = torch.linalg.vector_norm(Y - X, dim=(1, 2)) / torch.linalg.vector_norm(X, dim=(1, 2)).clamp(min=1e-5)
                stft_total = stft_total + sc.mean() + (torch.log(Y) - torch.log(X)).abs().mean()
        n = len(self.resolutions)
        return mel_total / n, (stft_total / n if self.stft_weight > 0 else torch.zeros((), device=y.device))


class CTCHead(nn.Module):
    """Codebook 0's quantized output [B, D, T] at 12.5 Hz → phoneme logits [B, T·k, V]: each 80 ms
    frame predicts k CTC slots (English TTS speech runs at up to ~15-20 phonemes/s, more than the
    12.5 frames/s CTC would allow with one slot per frame). Per frame, no context of its own, so
    the phonetic information has to be in the code itself. Training-only: never exported."""

    def __init__(self, dim, vocab, slots=4, hidden=256):
        super().__init__()
        self.slots, self.vocab = slots, vocab
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, slots * vocab))

    def forward(self, z):
        y = self.net(z.transpose(1, 2))  # [B, T, k·V]
        B, T, _ = y.shape
        return y.reshape(B, T * self.slots, self.vocab)


def ctc_loss(logits, targets, input_lengths, target_lengths):
    """Mean CTC loss (per target unit) over the items with a target; blank = 0."""
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [T, B, V]
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=True)


def greedy_decode(logits, length):
    """Best-path CTC decode of one item's logits [T, V] over its first `length` slots."""
    best = logits[:length].argmax(dim=-1).tolist()
    out, prev = [], 0
    for b in best:
        if b != prev and b != 0:
            out.append(b)
        prev = b
    return out


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


class STFTDiscriminator(nn.Module):
    """One scale: complex STFT (real, imag as 2 channels, [B, 2, T, F]) through 2-D convs, dilated in
    time and strided in frequency, LeakyReLU, weight norm; returns (logits, feature maps)."""

    def __init__(self, n_fft, channels=32):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        wn = nn.utils.parametrizations.weight_norm
        layers = [wn(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for d in (1, 2, 4):
            layers.append(wn(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4))))
        layers.append(wn(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.layers = nn.ModuleList(layers)
        self.out = wn(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x):
        spec = torch.stft(x.float(), self.n_fft, hop_length=self.n_fft // 4, window=self.window,
                          center=True, return_complex=True)  # [B, F, T]
        z = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, T, F]
        feats = []
        for layer in self.layers:
            z = F.leaky_relu(layer(z), 0.2)
            feats.append(z)
        return self.out(z), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, ffts=(512, 1024, 2048), channels=32):
        super().__init__()
        self.discs = nn.ModuleList([STFTDiscriminator(n, channels) for n in ffts])

    def forward(self, x):
        return [d(x) for d in self.discs]


def discriminator_loss(disc, real, fake):
    """Hinge loss for the discriminator (fake detached by the caller)."""
    loss = 0.0
    for (lr, _), (lf, _) in zip(disc(real), disc(fake)):
        loss = loss + F.relu(1 - lr).mean() + F.relu(1 + lf).mean()
    return loss / len(disc.discs)


def generator_adv_losses(disc, real, fake):
    """(hinge generator loss, relative feature-matching L1) for the generator."""
    adv, fm = 0.0, 0.0
    with torch.no_grad():
        real_out = disc(real)
    for (lf, ff), (_, fr) in zip(disc(fake), real_out):
        adv = adv + F.relu(1 - lf).mean()
        fm = fm + sum((a - b).abs().mean() / b.abs().mean().clamp(min=1e-5) for a, b in zip(ff, fr)) / len(ff)
    n = len(disc.discs)
    return adv / n, fm / n
