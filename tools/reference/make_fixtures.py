#!/usr/bin/env python3
"""Writes the reference fixtures the Swift tests compare against, by running Kyutai's `moshi`
package (pinned in setup_venv.sh) with fixed seeds.

Usage:  tools/reference/make_fixtures.py [ops|dtypes|transformer|mimi|mimi_long|lm|lm_module_form|tokenizer|names|gguf|quant|quant_lm|stt|hibiki|hibiki2b|
                                          personaplex_voice|personaplex|loudness|all ...]
        (run through the venv: "$(tools/reference/setup_venv.sh)" tools/reference/make_fixtures.py all)

Each fixture is a safetensors file under Tests/DuplexCoreTests/Fixtures/ whose metadata carries
`format_version`; the Swift side refuses a fixture of another version and says to regenerate it.
Fixtures stay under 2 MB each: real-size checks run from tools scripts instead. `names` writes
JSON instead (tensor names and shapes, no weights; see fixtures_names.py); `gguf` writes GGUF
files and a JSON of what they hold (see fixtures_gguf.py); `personaplex_voice` writes `.pt` files
(torch.save's zip format) beside the safetensors of their expected values; `personaplex` runs
NVIDIA's PersonaPlex fork and needs its checkout in PERSONAPLEX_SRC (see fixtures_personaplex.py;
without it, it is skipped); `loudness` runs pyloudnorm (see fixtures_loudness.py).
"""
import argparse
import importlib
import json
import os
import struct
import sys

import torch
from safetensors.torch import save_file

FORMAT_VERSION = "1"
MOSHI_VERSION = "0.2.13"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "Tests", "DuplexCoreTests", "Fixtures")
MAX_BYTES = 2 * 1024 * 1024

GENERATORS = {
    "ops": "fixtures_ops",
    "dtypes": "fixtures_dtypes",
    "transformer": "fixtures_transformer",
    "mimi": "fixtures_mimi",
    "mimi_long": "fixtures_mimi_long",
    "lm": "fixtures_lm",
    "lm_module_form": "fixtures_lm_module_form",
    "tokenizer": "fixtures_tokenizer",
    "names": "fixtures_names",
    "gguf": "fixtures_gguf",
    "quant": "fixtures_quant",
    "quant_lm": "fixtures_quant_lm",
    "stt": "fixtures_stt",
    "hibiki": "fixtures_hibiki",
    "hibiki2b": "fixtures_hibiki2b",
    "personaplex_voice": "fixtures_personaplex_voice",
    "personaplex": "fixtures_personaplex",
    "loudness": "fixtures_loudness",
}


def sort_metadata(path):
    """Rewrites the safetensors header of `path` with its metadata keys sorted: safetensors
    writes `__metadata__` from a hash map, in an order that changes from run to run, so the same
    fixture would not come out byte-identical twice. Tensor entries and data are untouched."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob[8 + n:])


def save_fixture(name, tensors, seed, **meta):
    """Saves `tensors` (name -> torch tensor) as Fixtures/<name>.safetensors with a version tag."""
    import moshi

    assert moshi.__version__ == MOSHI_VERSION, f"moshi {moshi.__version__}, expected {MOSHI_VERSION}"
    os.makedirs(FIXTURES, exist_ok=True)
    path = os.path.join(FIXTURES, name + ".safetensors")
    metadata = {
        "format_version": FORMAT_VERSION,
        "generator": "tools/reference/make_fixtures.py " + name.split("_")[0],
        "moshi_version": moshi.__version__,
        "torch_version": torch.__version__,
        "seed": str(seed),
    }
    metadata.update({k: str(v) for k, v in meta.items()})
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    sort_metadata(path)
    size = os.path.getsize(path)
    assert size < MAX_BYTES, f"{path} is {size} bytes: fixtures must stay under 2 MB"
    print(f"wrote {os.path.relpath(path, ROOT)} ({size / 1024:.0f} KiB, {len(tensors)} tensors)")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", default=["all"], choices=list(GENERATORS) + ["all"])
    args = parser.parse_args()
    names = list(GENERATORS) if "all" in args.which else args.which
    sys.path.insert(0, HERE)
    torch.set_num_threads(1)
    for name in names:
        module_name = GENERATORS[name]
        if not os.path.exists(os.path.join(HERE, module_name + ".py")):
            print(f"skip {name}: {module_name}.py not written yet")
            continue
        importlib.import_module(module_name).generate(save_fixture)


if __name__ == "__main__":
    main()
