"""Two tiny GGUF files for the reader's tests, and what a reader must find in them:

  gguf_python_v3.gguf   written by the real `gguf` Python package (0.19.0, the library llama.cpp's
                        converters use): v3, `general.architecture` plus one metadata key of every
                        value type (nested arrays and non-ASCII strings included), alignment 64
                        through `add_custom_alignment`, F32/F16/BF16/Q8_0 tensors of 1 to 4
                        dimensions (BF16 and Q8_0 bytes from `gguf.quants.quantize`).
  gguf_candle_v2.gguf   laid out by hand as candle's `gguf_file::write` lays it out (the writer of
                        Kyutai's `model.q8.gguf`): v2, no metadata, dims innermost first, the data
                        section and every tensor padded to 32 bytes; Q8_0 matrices and an F32 norm
                        gain of shape [1, 1, 16].
  gguf_expected.json    per file: version, alignment, metadata (type and value), and per tensor its
                        name, type, shape (outermost first), absolute data offset, byte length and
                        the SHA-256 of its bytes, plus the file's size.

The expectations come from the writers' inputs, not from reading the files back, so a reader is
checked against what was meant. Run: "$(tools/reference/setup_venv.sh)" tools/reference/make_fixtures.py gguf
"""
import hashlib
import json
import os
import struct

import gguf
import numpy as np

SEED = 3141
FORMAT_VERSION = "1"
GGUF_VERSION = "0.19.0"
MAX_BYTES = 50 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "Tests", "DuplexCoreTests", "Fixtures")

T = gguf.GGMLQuantizationType

# key -> (GGUF value type name, value); arrays hold (type, value) pairs like the top level.
METADATA = [
    ("test.uint8", "uint8", 250),
    ("test.int8", "int8", -120),
    ("test.uint16", "uint16", 65000),
    ("test.int16", "int16", -32000),
    ("test.uint32", "uint32", 4000000000),
    ("test.int32", "int32", -2000000000),
    ("test.float32", "float32", -1.25),
    ("test.bool", "bool", True),
    ("test.string", "string", "Kyutai \u00e9t\u00e9 \u65e5\u672c\u8a9e"),
    ("test.uint64", "uint64", 18000000000000000000),
    ("test.int64", "int64", -9000000000000000000),
    ("test.float64", "float64", 3.141592653589793),
    ("test.strings", "array", [("string", "a"), ("string", ""), ("string", "\u00fcml\u00e4ut")]),
    ("test.int32s", "array", [("int32", 1), ("int32", -2), ("int32", 3)]),
    ("test.nested", "array", [("array", [("float32", 0.5), ("float32", 2.0)]), ("array", [("float32", -4.0)])]),
]

ADDERS = {"uint8": "add_uint8", "int8": "add_int8", "uint16": "add_uint16", "int16": "add_int16",
          "uint32": "add_uint32", "int32": "add_int32", "float32": "add_float32", "bool": "add_bool",
          "string": "add_string", "uint64": "add_uint64", "int64": "add_int64", "float64": "add_float64"}


def _plain(pairs):
    """(type, value) pairs -> the Python values gguf's add_array infers those types from."""
    return [_plain(v) if t == "array" else v for t, v in pairs]


def _json_value(type_name, value):
    if type_name == "array":
        return {"type": "array", "value": [_json_value(t, v) for t, v in value]}
    return {"type": type_name, "value": value}


def _record(name, qtype, shape, data_offset, raw):
    return {"name": name, "type": qtype.name, "shape": list(shape), "offset": data_offset,
            "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def _pad(n, alignment):
    return (n + alignment - 1) // alignment * alignment


def _tensors(rng):
    """name -> (type, shape outermost first, bytes)."""
    def q(x, qtype):
        return np.ascontiguousarray(gguf.quants.quantize(x, qtype)).tobytes()
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f16 = rng.standard_normal(7).astype(np.float32)
    bf16 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    q8 = rng.standard_normal((4, 64)).astype(np.float32)
    r4 = rng.standard_normal((2, 1, 3, 2)).astype(np.float32)
    return [
        ("blk.0.f32_matrix", T.F32, f32.shape, f32.tobytes()),
        ("blk.0.f16_vector", T.F16, f16.shape, f16.astype(np.float16).tobytes()),
        ("blk.0.bf16_cube", T.BF16, bf16.shape, q(bf16, T.BF16)),
        ("blk.0.q8_0_matrix", T.Q8_0, q8.shape, q(q8, T.Q8_0)),
        ("blk.0.f32_rank4", T.F32, r4.shape, r4.tobytes()),
    ]


def _write_python_v3(path, rng):
    alignment = 64
    tensors = _tensors(rng)
    w = gguf.GGUFWriter(path, arch="duplex-test")
    w.add_custom_alignment(alignment)
    for key, type_name, value in METADATA:
        if type_name == "array":
            w.add_array(key, _plain(value))
        else:
            getattr(w, ADDERS[type_name])(key, value)
    for name, qtype, shape, raw in tensors:
        data = np.frombuffer(raw, dtype=np.uint8)
        if qtype == T.F32:
            w.add_tensor(name, data.view(np.float32).reshape(shape))
        elif qtype == T.F16:
            w.add_tensor(name, data.view(np.float16).reshape(shape))
        else:
            w.add_tensor(name, data.reshape(*shape[:-1], -1), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    with open(path, "rb") as f:
        blob = f.read()
    # gguf writes the keys in the order added, after general.architecture, then general.alignment.
    metadata = [("general.architecture", _json_value("string", "duplex-test")),
                ("general.alignment", _json_value("uint32", alignment))]
    metadata += [(k, _json_value(t, v)) for k, t, v in METADATA]
    header_end = len(blob) - sum(_pad(len(raw), alignment) for *_, raw in tensors)
    assert header_end % alignment == 0
    records, offset = [], header_end
    for name, qtype, shape, raw in tensors:
        assert blob[offset:offset + len(raw)] == raw, f"{name}: gguf wrote other bytes than it was given"
        records.append(_record(name, qtype, shape, offset, raw))
        offset += _pad(len(raw), alignment)
    return {"version": 3, "alignment": alignment, "size": len(blob), "metadata_order": [k for k, _ in metadata],
            "metadata": dict(metadata), "tensors": records}


def _write_candle_v2(path, rng):
    def q8(shape):
        return np.ascontiguousarray(gguf.quants.quantize(rng.standard_normal(shape).astype(np.float32), T.Q8_0)).tobytes()
    tensors = [
        ("transformer.layers.0.self_attn.in_proj_weight", T.Q8_0, (6, 64), q8((6, 64))),
        ("text_emb.weight", T.Q8_0, (5, 32), q8((5, 32))),
        ("out_norm.alpha", T.F32, (1, 1, 16), (1 + 0.1 * rng.standard_normal(16)).astype(np.float32).tobytes()),
    ]
    def string(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b
    header = b"GGUF" + struct.pack("<IQQ", 2, len(tensors), 0)
    relative, offsets = 0, []
    for name, qtype, shape, raw in tensors:
        header += string(name) + struct.pack("<I", len(shape))
        header += b"".join(struct.pack("<Q", d) for d in reversed(shape))
        header += struct.pack("<IQ", qtype.value, relative)
        offsets.append(relative)
        relative += _pad(len(raw), 32)
    data_start = _pad(len(header), 32)
    blob = header + bytes(data_start - len(header))
    for (_, _, _, raw), rel in zip(tensors, offsets):
        assert len(blob) == data_start + rel
        blob += raw + bytes(_pad(len(raw), 32) - len(raw))
    with open(path, "wb") as f:
        f.write(blob)
    records = [_record(n, t, s, data_start + rel, raw) for (n, t, s, raw), rel in zip(tensors, offsets)]
    return {"version": 2, "alignment": 32, "size": len(blob), "metadata_order": [], "metadata": {}, "tensors": records}


def generate(save=None):
    """`save` (make_fixtures' safetensors writer) is unused: these fixtures are GGUF and JSON."""
    from importlib.metadata import version
    assert version("gguf") == GGUF_VERSION, f"gguf {version('gguf')}, expected {GGUF_VERSION}"
    rng = np.random.default_rng(SEED)
    os.makedirs(FIXTURES, exist_ok=True)
    files = {}
    for name, writer in (("gguf_python_v3.gguf", _write_python_v3), ("gguf_candle_v2.gguf", _write_candle_v2)):
        path = os.path.join(FIXTURES, name)
        files[name] = writer(path, rng)
        size = os.path.getsize(path)
        assert size < MAX_BYTES, f"{path} is {size} bytes: keep GGUF fixtures under 50 KB"
        print(f"wrote {os.path.relpath(path)} ({size} bytes, {len(files[name]['tensors'])} tensors)")
    out = os.path.join(FIXTURES, "gguf_expected.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"format_version": FORMAT_VERSION, "generator": "tools/reference/make_fixtures.py gguf",
                   "gguf_version": GGUF_VERSION, "seed": SEED, "files": files}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {os.path.relpath(out)}")


if __name__ == "__main__":
    generate()
