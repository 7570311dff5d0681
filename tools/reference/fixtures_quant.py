"""Quantized-weight fixtures for CQuant, written by the tools that write real files:
gguf-py (pinned gguf==0.19.0, the package llama.cpp's converters use) and MLX (mlx==0.32.4,
what Kyutai's quantize_mlx.py ran).

* `src` f32 [8, 512] (with an all-zero block and blocks whose scaled values are exact ties)
  and gguf-py's quantization of it: `q8_0_quantized`, `q4_0_quantized` (U8, the GGUF row bytes).
  gguf-py 0.19.0 has no IQ4_NL (nor K-quant) quantizer: those are checked by dequantization only.
* `<type>_blocks` U8 [4, row bytes]: random bytes, every f16 scale finite (normal, subnormal,
  signed zero, negative), for Q8_0, Q4_0, IQ4_NL, Q4_K, Q6_K; `<type>_dequantized` f32 [4, 512]
  is gguf-py's dequantization of them.
* `mlx_src` BF16 [8, 512] (weights are bf16 in Kyutai's files; rows 6 and 7 are constant and
  zero, the edge cases of MLX's scale rule), then for (bits 4, group 32) and (bits 8, group 64):
  `mlx_q<bits>_weight` U32, `_scales` and `_biases` BF16 from mx.quantize, and `_dequantized`
  f32 = mx.dequantize with the scales and biases cast to float32 first (MLX's own bf16 output
  rounds the result to bf16; CQuant dequantizes to f32).
"""
import numpy as np
import torch

import gguf
import mlx.core as mx
from gguf import GGMLQuantizationType as QT

SEED = 4242
GGUF_VERSION = "0.19.0"
MLX_VERSION = "0.32.4"
COLS = 512


def _source(rng):
    x = rng.standard_normal((8, COLS)).astype(np.float32)
    x[1] *= 1e-3
    x[2] *= 100.0
    x[3, :32] = 0.0
    # Q8_0 ties: absmax 127 gives d = 1 exactly, so x/d lands on k + ½ (roundf rounds away).
    x[4, :32] = [127.0, 2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 126.5, -126.5, 63.5] + list(rng.integers(-120, 120, 22) + 0.5)
    # Q4_0 ties: the signed extreme −8 gives d = 1, so x + 8.5 is a whole number at the truncation.
    x[5, :32] = [-8.0, -0.5, 0.5, 6.5, 7.5, -7.5, 3.0, -3.0] + list(rng.integers(-7, 7, 24) + 0.5)
    return x


def _f16_scales(rng, n):
    """Finite f16 bit patterns: mostly normal values of weight-like size, and the edge cases."""
    special = np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x8200, 0x0400, 0x7BFF, 0xFBFF], dtype=np.uint16)
    normal = (rng.standard_normal(n).astype(np.float32) * 0.01).astype(np.float16).view(np.uint16)
    out = normal.copy()
    out[: min(n, len(special))] = special[: min(n, len(special))]
    return out


def _random_blocks(rng, qtype, rows):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    nblocks = rows * COLS // block
    raw = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    scales = _f16_scales(rng, 2 * nblocks)
    if qtype in (QT.Q8_0, QT.Q4_0, QT.IQ4_NL):
        raw[:, 0:2] = scales[:nblocks].view(np.uint8).reshape(nblocks, 2)
    elif qtype == QT.Q4_K:  # f16 d, f16 dmin
        raw[:, 0:4] = scales.view(np.uint8).reshape(nblocks, 4)
    elif qtype == QT.Q6_K:  # f16 d last
        raw[:, 208:210] = scales[:nblocks].view(np.uint8).reshape(nblocks, 2)
    blocks = raw.reshape(rows, -1)
    deq = gguf.quants.dequantize(blocks, qtype)
    assert deq.shape == (rows, COLS) and np.isfinite(deq).all()
    return blocks, deq.astype(np.float32)


def _mlx_source(rng):
    x = rng.standard_normal((8, COLS)).astype(np.float32) * 0.02
    x[1] *= 50.0
    x[2, :64] += 1.0          # groups far from zero: the bias carries the offset
    x[3, ::7] = 0.0
    x[6] = 0.375              # constant rows: max = min
    x[7] = 0.0
    return mx.array(x).astype(mx.bfloat16)


def _bf16_tensor(a):
    return torch.from_numpy(np.array(a.view(mx.uint16))).view(torch.bfloat16)


def generate(save):
    import importlib.metadata as md

    assert md.version("gguf") == GGUF_VERSION, md.version("gguf")
    assert mx.__version__ == MLX_VERSION, mx.__version__
    rng = np.random.default_rng(SEED)
    src = _source(rng)
    tensors = {"src": torch.from_numpy(src)}
    for name, qtype in (("q8_0", QT.Q8_0), ("q4_0", QT.Q4_0)):
        q = gguf.quants.quantize(src, qtype)
        assert q.dtype == np.uint8 and q.shape == (8, gguf.quants.quant_shape_to_byte_shape((8, COLS), qtype)[1])
        tensors[f"{name}_quantized"] = torch.from_numpy(np.ascontiguousarray(q))
    for name, qtype in (("q8_0", QT.Q8_0), ("q4_0", QT.Q4_0), ("iq4_nl", QT.IQ4_NL), ("q4_k", QT.Q4_K),
                        ("q6_k", QT.Q6_K)):
        blocks, deq = _random_blocks(rng, qtype, 4)
        tensors[f"{name}_blocks"] = torch.from_numpy(np.ascontiguousarray(blocks))
        tensors[f"{name}_dequantized"] = torch.from_numpy(deq)
    w = _mlx_source(rng)
    tensors["mlx_src"] = _bf16_tensor(w)
    for bits, group in ((4, 32), (8, 64)):
        q, s, b = mx.quantize(w, group_size=group, bits=bits)
        deq = mx.dequantize(q, s.astype(mx.float32), b.astype(mx.float32), group_size=group, bits=bits)
        assert deq.dtype == mx.float32
        tensors[f"mlx_q{bits}_weight"] = torch.from_numpy(np.array(q))
        tensors[f"mlx_q{bits}_scales"] = _bf16_tensor(s)
        tensors[f"mlx_q{bits}_biases"] = _bf16_tensor(b)
        tensors[f"mlx_q{bits}_dequantized"] = torch.from_numpy(np.array(deq))
        tensors[f"mlx_q{bits}_group"] = torch.tensor([group], dtype=torch.int32)
    save("quant", tensors, SEED, gguf_version=GGUF_VERSION, mlx_version=MLX_VERSION, cols=COLS)
