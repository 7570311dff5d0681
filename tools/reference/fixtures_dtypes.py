"""A file written by Python's `safetensors` (the writer Kyutai's checkpoints come from) holding
every dtype duplex reads, plus PyTorch's own float32 -> bfloat16 / float16 conversions of values
chosen to hit the rounding corner cases: exact ties (round to even), values one ulp either side,
overflow to infinity, subnormals, signed zeros, infinities and NaNs with payloads."""
import struct

import torch

SEED = 77


def _from_bits(words):
    return torch.tensor([struct.unpack("<f", struct.pack("<I", w))[0] for w in words], dtype=torch.float32)


def _corner_cases():
    words = [
        0x00000000, 0x80000000,              # ±0
        0x7F800000, 0xFF800000,              # ±inf
        0x7FC00000, 0xFFC00000,              # quiet NaNs
        0x7F800001, 0x7FBFFFFF, 0xFF800001,  # NaNs whose payload sits only in the low bits
        0x00000001, 0x807FFFFF, 0x00400000,  # f32 subnormals
        0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F7FFF, 0x7F7F8000,  # near the f32 maximum (bf16 overflow)
    ]
    for hi in (0x3F80, 0x3F81, 0x4049, 0xC2F7, 0x0080, 0x0001):
        for lo in (0x7FFF, 0x8000, 0x8001, 0x0000, 0xFFFF):
            words.append(hi << 16 | lo)     # bf16 ties and their neighbours
    x = _from_bits(words)
    # float16 corner cases, given as exact float32 values.
    half = [65504.0, 65519.99, 65520.0, 65536.0, -65520.0, 2.0**-24, 2.0**-25, 2.0**-25 * 1.0001,
            3 * 2.0**-25, 2.0**-14, 2.0**-14 - 2.0**-24, 1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-11 + 2.0**-20,
            -(1 + 2.0**-11), 2.0**-26, -2.0**-26, 1e-8, 6.1e-5]
    return torch.cat([x, torch.tensor(half, dtype=torch.float32)])


def generate(save):
    g = torch.Generator().manual_seed(SEED)
    scales = torch.tensor([1e-6, 1e-3, 1.0, 1e3, 1e5])
    random = (torch.randn(5, 40, generator=g) * scales[:, None]).reshape(-1)
    values = torch.cat([_corner_cases(), random])
    save("dtypes", {
        "convert_input": values,
        "convert_bf16": values.to(torch.bfloat16),
        "convert_f16": values.to(torch.float16),
        "f32_matrix": torch.randn(3, 5, generator=g),
        "f64_vector": torch.randn(7, generator=g, dtype=torch.float64),
        "i64_values": torch.tensor([0, 1, -1, 2**40, -(2**62), 2**63 - 1], dtype=torch.int64),
        "i32_values": torch.tensor([[0, -7], [2**31 - 1, -(2**31)]], dtype=torch.int32),
        "i16_values": torch.tensor([-32768, 32767, 5], dtype=torch.int16),
        "i8_values": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "u8_values": torch.tensor([0, 255, 9], dtype=torch.uint8),
        "bool_values": torch.tensor([True, False, True], dtype=torch.bool),
        # MLX stores its packed quantized codes as U32 (Kyutai's -mlx-q4 / -q8 files).
        "u32_values": torch.tensor([0, 4294967295, 0x12345678], dtype=torch.uint32),
        "u16_values": torch.tensor([0, 65535, 7], dtype=torch.uint16),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5),
    }, SEED, note="safetensors-written \u00e9 metadata")
