"""PersonaPlex voice-prompt files (`voices/*.pt`) for duplex's PyTorch reader, written by
`torch.save` itself, and hostile or broken ones crafted byte by byte (never unpickled here).

NVIDIA's code (NVIDIA/personaplex moshi/moshi/models/lm.py `_step_voice_prompt_core`) writes a
voice as
    torch.save({"embeddings": torch.stack(saved_embeddings, dim=0).detach().cpu(),
                "cache": self._streaming_state.cache}, splitext(voice_prompt)[0] + ".pt")
where each saved embedding is `lm_model.embed_codes(input_)` of one step ([1, 1, D], the model's
dtype: bf16 for the released voices) and the cache is LMGen's int64 delay ring [1, 17, 4], still
on the GPU (so its storage is tagged "cuda:0"). The good files below are built the same way at
D = 32: embeddings as sums of 17 embedding-table lookups of a delayed token column, the cache
as the ring holding the last columns.

Files (Tests/DuplexCoreTests/Fixtures/):
  personaplex_voice_bf16.pt   as NVIDIA's: bf16 embeddings [4, 1, 1, 32], cache on "cuda:0"
  personaplex_voice_f32.pt    the same in float32, cache on "cpu"
  personaplex_voice_views.pt  non-contiguous / offset / shared-storage tensors, f16, i32, bool,
                              u8, a scalar, an empty tensor, nested dicts, lists, an OrderedDict
                              and plain values (what a dict of tensors and values pickles to)
  personaplex_voice_bad_*.pt  a GLOBAL os.system pickle, an INST opcode, a tensor reaching past
                              its storage, a storage member shorter than its numel, a deflated
                              archive, lists nested 40 deep, a list that holds itself, a tuple
                              shared 2,000 times (2 million leaves from 6 KB)
  personaplex_voice_not_voice.pt  a good torch.save file without embeddings or cache
and personaplex_voice.safetensors: the expected values (`<file>.<name>` per tensor) and, in the
metadata, the plain values of the views file as JSON.
"""
import collections
import io
import json
import os
import pickle
import zipfile

import torch

SEED = 5150
T, D, STREAMS, COLUMNS, CARD, TEXT_CARD = 4, 32, 17, 4, 2048, 32000
DELAYS = [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
EXECUTED_MARKER = "/tmp/duplex-torch-pickle-executed"
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "Tests", "DuplexCoreTests", "Fixtures")


def _voice(dtype, g):
    """(embeddings [T, 1, 1, D], cache [1, 17, 4]) the way LMGen leaves them after a voice prompt
    of T + 1 Mimi frames: text 3, the voice's 8 codes, the user's 8 sine codes, delayed."""
    frames = T + 1
    tokens = torch.empty(STREAMS, frames, dtype=torch.long)
    tokens[0] = 3
    tokens[1:9] = torch.randint(0, CARD, (8, frames), generator=g)
    tokens[9:] = torch.tensor([430, 1268, 381, 1611, 1095, 1495, 56, 472])[:, None]
    columns = torch.full((STREAMS, frames + 1), -2, dtype=torch.long)
    for k, d in enumerate(DELAYS):
        columns[k, d:d + frames] = tokens[k]
    columns[:, 0] = torch.tensor([TEXT_CARD] + [CARD] * 16)   # column 0: the initial tokens
    columns[[k for k, d in enumerate(DELAYS) if d == 1], 1] = CARD
    text_table = (torch.randn(TEXT_CARD + 1, D, generator=g) * 0.02).to(dtype)
    audio_tables = [(torch.randn(CARD + 1, D, generator=g) * 0.02).to(dtype) for _ in range(16)]
    saved = []
    for j in range(T):   # embed_codes of columns 0..T-1, each [1, 1, D]
        e = text_table[columns[0, j]]
        for k in range(16):
            e = e + audio_tables[k][columns[k + 1, j]]
        saved.append(e.view(1, 1, D))
    cache = torch.full((1, STREAMS, COLUMNS), -2, dtype=torch.long)
    for j in range(frames + 1):
        cache[0, :, j % COLUMNS] = columns[:, j]
    return torch.stack(saved, dim=0).detach().cpu(), cache


class _CudaTag:
    """Makes torch.save tag one storage "cuda:0", as a cache saved straight from the GPU is."""

    def __init__(self):
        self.storages = set()

    def __call__(self, obj):
        try:
            ptr = obj.data_ptr()
        except Exception:
            return None
        return "cuda:0" if ptr in self.storages else None


_CUDA_TAG = _CudaTag()
torch.serialization.register_package(1, _CUDA_TAG, lambda obj, location: None)


def _save_like_nvidia(path, embeddings, cache, cache_on_gpu):
    if cache_on_gpu:
        _CUDA_TAG.storages.add(cache.untyped_storage().data_ptr())
    torch.save({"embeddings": embeddings, "cache": cache}, path)
    _CUDA_TAG.storages.clear()


def _views(g):
    base = torch.randn(D, 1, 1, T, generator=g)
    ring = torch.arange(3 * STREAMS * COLUMNS, dtype=torch.long).view(3, STREAMS, COLUMNS) - 2
    halves = torch.randn(10, generator=g).to(torch.float16)
    shared = torch.randn(2, 5, generator=g).to(torch.bfloat16)
    tensors = {
        "embeddings": base.permute(3, 1, 2, 0),          # [T, 1, 1, D], strides (1, T, T, T)
        "cache": ring[1:2],                               # storage offset 68
        "offset_f16": halves[3:7],
        "shared_a": shared[0],
        "shared_b": shared[1, 1::2],                      # offset 6, stride 2
        "transposed": torch.randn(3, 4, generator=g).t(),
        "ints": torch.tensor([[1, -2, 3], [2**31 - 1, -(2**31), 0]], dtype=torch.int32),
        "mask": torch.tensor([True, False, True]),
        "bytes": torch.tensor([0, 7, 255], dtype=torch.uint8),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    nested_tensor = torch.randn(2, 2, generator=g)
    ordered = collections.OrderedDict(first=torch.randn(3, generator=g), second=torch.arange(4))
    obj = dict(tensors)
    obj["nested"] = {"scale": 0.5, "count": 7, "big": 2**40, "negative": -5, "mid": 300, "name": "voice \u00e9",
                     "flag": True, "nothing": None, "list": [nested_tensor, 3, "x"], "pair": (1, 2.0)}
    obj["ordered"] = ordered
    expected = {k: v.contiguous() for k, v in tensors.items()}
    expected["nested.list.0"] = nested_tensor
    expected["ordered.first"] = ordered["first"]
    expected["ordered.second"] = ordered["second"]
    plain = {"nested.scale": 0.5, "nested.count": 7, "nested.big": 2**40, "nested.negative": -5, "nested.mid": 300,
             "nested.name": "voice \u00e9", "nested.flag": True, "nested.nothing": None, "nested.list.1": 3,
             "nested.list.2": "x", "nested.pair.0": 1, "nested.pair.1": 2.0}
    return obj, expected, plain


def _zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members:
            z.writestr(name, data)


def _members(path):
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


class _Storage:
    def __init__(self, dtype_class, key, numel):
        self.pid = ("storage", dtype_class, key, "cpu", numel)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class _TorchLikePickler(pickle.Pickler):
    """Emits what torch.save's pickler does (persistent ids for storages), for shapes and storage
    sizes torch itself would never write."""

    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Storage) else None


def _torch_like(obj):
    buffer = io.BytesIO()
    _TorchLikePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _archive(stem, pickle_bytes, storages):
    return [(f"{stem}/data.pkl", pickle_bytes), (f"{stem}/byteorder", b"little")] + \
        [(f"{stem}/data/{k}", v) for k, v in storages] + [(f"{stem}/version", b"3\n")]


def _bad_files(good_path):
    files = {}
    floats = torch.arange(4, dtype=torch.float32).numpy().tobytes()
    # GLOBAL os.system + REDUCE: Python's pickle would run the shell command.
    files["bad_global"] = (b"\x80\x02cos\nsystem\nq\x00X" + len(f"touch {EXECUTED_MARKER}").to_bytes(4, "little")
                           + f"touch {EXECUTED_MARKER}".encode() + b"q\x01\x85q\x02Rq\x03.", [])
    # INST (protocol 0's "instantiate a class by name"): outside what torch.save emits.
    files["bad_opcode"] = (b"\x80\x02}q\x00(X\x01\x00\x00\x00x(icollections\nOrderedDict\nu.", [])
    # A tensor of 8 elements over a storage of 4.
    files["bad_short_storage"] = (_torch_like({"embeddings": _Tensor(_Storage(torch.FloatStorage, "0", 4), 0, (8,), (1,))}),
                                  [("0", floats)])
    # A storage that says 8 elements, stored in 16 bytes.
    files["bad_storage_bytes"] = (_torch_like({"embeddings": _Tensor(_Storage(torch.FloatStorage, "0", 8), 0, (4,), (1,))}),
                                  [("0", floats)])
    deep = []
    for _ in range(40):
        deep = [deep]
    files["bad_nesting"] = (pickle.dumps({"embeddings": deep}, protocol=2), [])
    cycle = []
    cycle.append(cycle)
    files["bad_cycle"] = (pickle.dumps({"embeddings": cycle}, protocol=2), [])
    # 2,000 references to one tuple of 1,000 values: 6 KB of pickle, 2 million leaves.
    inner = (None,) * 1000
    files["bad_fanout"] = (pickle.dumps({"embeddings": (inner,) * 2000}, protocol=2), [])
    out = {}
    for name, (pkl, storages) in files.items():
        stem = f"personaplex_voice_{name}"
        path = os.path.join(FIXTURES, stem + ".pt")
        _zip(path, _archive(stem, pkl, storages))
        out[name] = path
    path = os.path.join(FIXTURES, "personaplex_voice_bad_deflated.pt")
    _zip(path, _members(good_path), compression=zipfile.ZIP_DEFLATED)
    out["bad_deflated"] = path
    # Cross-check with torch's own (weights-only) loader where it is safe to: it refuses these too.
    for name in ("bad_short_storage", "bad_storage_bytes"):
        try:
            torch.load(out[name], weights_only=True)
        except Exception:
            pass
        else:
            raise AssertionError(f"torch.load accepted {name}")
    return out


def generate(save):
    g = torch.Generator().manual_seed(SEED)
    os.makedirs(FIXTURES, exist_ok=True)
    expected, meta = {}, {}
    paths = {}
    for name, dtype, on_gpu in (("bf16", torch.bfloat16, True), ("f32", torch.float32, False)):
        embeddings, cache = _voice(dtype, g)
        path = os.path.join(FIXTURES, f"personaplex_voice_{name}.pt")
        _save_like_nvidia(path, embeddings, cache, on_gpu)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        assert torch.equal(loaded["embeddings"], embeddings) and torch.equal(loaded["cache"], cache)
        expected[f"{name}.embeddings"] = embeddings
        expected[f"{name}.cache"] = cache
        paths[name] = path
    with zipfile.ZipFile(paths["bf16"]) as z:
        pkl = z.read("personaplex_voice_bf16/data.pkl")
        assert b"cuda:0" in pkl and all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())

    obj, view_expected, plain = _views(g)
    path = os.path.join(FIXTURES, "personaplex_voice_views.pt")
    torch.save(obj, path)
    loaded = torch.load(path, weights_only=True)
    for k, v in view_expected.items():
        parts = k.split(".")
        x = loaded
        for p in parts:
            x = x[int(p)] if isinstance(x, (list, tuple)) else x[p]
        assert torch.equal(x, v), k
        expected[f"views.{k}"] = v
    assert not obj["embeddings"].is_contiguous() and obj["cache"].storage_offset() > 0

    bad = _bad_files(paths["bf16"])
    # A good torch.save file that is not a voice prompt (no "embeddings", no "cache").
    bad["not_voice"] = os.path.join(FIXTURES, "personaplex_voice_not_voice.pt")
    torch.save({"weights": torch.randn(2, generator=g), "step": 3}, bad["not_voice"])
    for p in list(paths.values()) + [path] + list(bad.values()):
        size = os.path.getsize(p)
        assert size < 2 * 1024 * 1024
        print(f"wrote {os.path.relpath(p, os.path.dirname(os.path.dirname(HERE)))} ({size} bytes)")
    meta["views_plain"] = json.dumps(plain, ensure_ascii=False)
    meta["executed_marker"] = EXECUTED_MARKER
    save("personaplex_voice", expected, SEED, **meta)
