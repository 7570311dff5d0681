"""Kyutai's quantized LM layouts, written by the real tools, at a tiny width: a candle-layout GGUF
(PyTorch names renamed and the depformer split per step as Kyutai's `scripts/import_rust.py` does,
every 2-D tensor Q8_0 through the `gguf` package, the rest F32 — what `model.q8.gguf` holds) and
MLX q4 (group 32) and q8 (group 64) safetensors made as Kyutai's `scripts/quantize_mlx.py` makes
them (moshi_mlx `Lm`, bf16, `nn.quantize`, `save_weights`).

For each file, the reference run: Kyutai's PyTorch LMModel + LMGen, greedy, on the weights the
file stands for (its quantized values dequantized by the `gguf` package or by `mx.dequantize`,
in float32), on seeded user codes past the context. duplex must load each file by its own names
and, with the weights widened to f32, return the same tokens; with its integer kernels, follow
them within the activation-quantization error.

Widths: 128 (a multiple of MLX's q8 group of 64) and the FFN's 352 (11·128/4, the hidden-size rule
MLX's config applies; a multiple of 32 only, so the q8 file quantizes those layers with group 32,
as `nn.quantize`'s class predicate allows). Four depth steps keep the files small."""
import json
import os
import tempfile

import numpy as np
import torch

from lm_reference import checkpoint_layout, greedy_generate, random_tensor, shrunk

SEED = 77
CALLS = 24
CONFIG = shrunk(dim=128, num_heads=2, num_layers=2, text_card=40, card=32, context=8, n_q=8, dep_q=4,
                delays=[0] + ([0] + [1] * 3) * 2, depformer_dim=128, depformer_num_heads=2, depformer_num_layers=1)
GGUF_VERSION = "0.19.0"
MLX_VERSION = "0.32.4"


def bf16_state():
    g = torch.Generator().manual_seed(SEED)
    return {name: random_tensor(name, shape, g).to(torch.bfloat16) for name, shape in checkpoint_layout(CONFIG)}


def candle_names(state):
    """import_rust.py's renaming: (candle name, tensor) pairs."""
    steps = CONFIG["dep_q"]
    out = {}
    for name, t in state.items():
        p = name.split(".")
        if p[0] == "depformer_in":
            out[f"depformer.{p[1]}.linear_in.weight"] = t
        elif p[0] == "linears":
            out[f"depformer.{p[1]}.linear_out.weight"] = t
        elif p[0] == "depformer_text_emb":
            out["depformer.0.emb.weight"] = t
        elif p[0] == "depformer_emb":
            out[f"depformer.{int(p[1]) + 1}.emb.weight"] = t
        elif p[0] == "depformer" and p[1] == "layers":
            layer, rest = p[2], p[3:]
            if rest[0] == "self_attn":
                for k, chunk in enumerate(t.chunk(steps)):
                    out[f"depformer.{k}.transformer.layers.{layer}." + ".".join(rest)] = chunk
            elif rest[0] == "gating":
                out[f"depformer.{rest[1]}.transformer.layers.{layer}.gating." + ".".join(rest[2:])] = t
            else:
                for k in range(steps):
                    out[f"depformer.{k}.transformer.layers.{layer}." + ".".join(rest)] = t.clone()
        else:
            out[name] = t
    return out


def from_candle(tensors):
    """The inverse renaming, for the reference run."""
    steps = CONFIG["dep_q"]
    state = {}
    attn = {}
    for name, t in tensors.items():
        p = name.split(".")
        if p[0] == "depformer" and p[1].isdigit():
            k = int(p[1])
            rest = p[2:]
            if rest == ["linear_in", "weight"]:
                state[f"depformer_in.{k}.weight"] = t
            elif rest == ["linear_out", "weight"]:
                state[f"linears.{k}.weight"] = t
            elif rest == ["emb", "weight"]:
                state["depformer_text_emb.weight" if k == 0 else f"depformer_emb.{k - 1}.weight"] = t
            else:
                layer, leaf = rest[2], rest[3:]
                if leaf[0] == "self_attn":
                    attn.setdefault((layer, ".".join(leaf)), {})[k] = t
                elif leaf[0] == "gating":
                    state[f"depformer.layers.{layer}.gating.{k}." + ".".join(leaf[1:])] = t
                elif k == 0:
                    state[f"depformer.layers.{layer}." + ".".join(leaf)] = t
        else:
            state[name] = t
    for (layer, leaf), parts in attn.items():
        state[f"depformer.layers.{layer}.{leaf}"] = torch.cat([parts[k] for k in range(steps)])
    return state


def write_gguf(state, path):
    import gguf

    assert gguf.__version__ if hasattr(gguf, "__version__") else True
    writer = gguf.GGUFWriter(path, arch="moshi")  # gguf-py always records general.architecture
    dequantized = {}
    for name, t in candle_names(state).items():
        values = t.float().numpy()
        if values.ndim == 2 and values.shape[1] % 32 == 0:
            q = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            dequantized[name] = torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).copy())
        else:
            writer.add_tensor(name, values.astype(np.float32))
            dequantized[name] = torch.from_numpy(values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return from_candle(dequantized)


def write_mlx(state, path, bits, group):
    import mlx.core as mx
    import mlx.nn as nn
    from moshi_mlx import models

    assert mx.__version__ == MLX_VERSION, mx.__version__
    lm_config = models.LmConfig.from_config_dict(CONFIG)
    model = models.Lm(lm_config)
    model.set_dtype(mx.bfloat16)
    with tempfile.TemporaryDirectory() as d:
        source = os.path.join(d, "model.safetensors")
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, source)
        model.load_pytorch_weights(source, lm_config, strict=True)
    # Kyutai's group for the bits, or 32 where a row is no multiple of it (the FFN-out's 352).
    nn.quantize(model, bits=bits, group_size=group,
                class_predicate=lambda _, m: hasattr(m, "to_quantized") and {"bits": bits, "group_size": group if m.weight.shape[-1] % group == 0 else 32})
    model.save_weights(path)
    # The weights the file stands for, dequantized by MLX, under Kyutai's PyTorch names.
    weights = dict(mx.load(path).items())
    def deq(module):
        codes, scales = weights[module + ".weight"], weights[module + ".scales"]
        cols = codes.shape[1] * 32 // bits
        w = mx.dequantize(codes, scales.astype(mx.float32), weights[module + ".biases"].astype(mx.float32),
                          group_size=cols // scales.shape[1], bits=bits)
        return torch.from_numpy(np.array(w.astype(mx.float32)))
    def plain(name):
        return torch.from_numpy(np.array(weights[name].astype(mx.float32)))
    out = {}
    for name, shape in checkpoint_layout(CONFIG):
        p = name.split(".")
        if name == "text_emb.weight": out[name] = deq("text_emb")
        elif p[0] == "emb": out[name] = deq(f"audio_embs.{p[1]}")
        elif name == "text_linear.weight": out[name] = deq("text_linear")
        elif name == "out_norm.alpha": out[name] = plain("out_norm.weight").reshape(shape)
        elif p[0] == "depformer_in": out[name] = deq(f"depformer.slices.{p[1]}.linear_in")
        elif p[0] == "linears": out[name] = deq(f"depformer.slices.{p[1]}.linear_out")
        elif p[0] == "depformer_text_emb": out[name] = deq("depformer.slices.0.emb")
        elif p[0] == "depformer_emb": out[name] = deq(f"depformer.slices.{int(p[1]) + 1}.emb")
        elif p[0] == "transformer" or p[0] == "depformer":
            layer, rest = p[2], p[3:]
            def module(k):
                base = f"transformer.layers.{layer}." if p[0] == "transformer" else f"depformer.slices.{k}.transformer.layers.{layer}."
                return base
            if rest[0] == "self_attn":
                leaf = "self_attn.in_proj" if rest[1] == "in_proj_weight" else "self_attn.out_proj"
                if p[0] == "transformer":
                    out[name] = deq(module(0) + leaf)
                else:
                    out[name] = torch.cat([deq(module(k) + leaf) for k in range(CONFIG["dep_q"])])
            elif rest[0] == "gating":
                if p[0] == "transformer":
                    out[name] = deq(module(0) + "gating." + rest[1])
                else:
                    out[name] = deq(module(int(rest[1])) + "gating." + rest[2])
            else:
                out[name] = plain(module(0) + rest[0] + ".weight").reshape(shape)
        else:
            raise KeyError(name)
    return out


def reference_run(state):
    from moshi.models.lm import LMModel

    model = LMModel(**CONFIG).eval()
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    g = torch.Generator().manual_seed(SEED + 1)
    user = torch.randint(0, CONFIG["card"], (CONFIG["n_q"] - CONFIG["dep_q"], CALLS), generator=g)
    outputs, text_logits, _ = greedy_generate(model, user)
    returned = torch.stack(outputs[1:]).to(torch.int32)
    assert len(set(returned[:, 0].tolist())) > 3, "degenerate text stream"
    return user.to(torch.int32), returned, torch.stack(text_logits)


def generate(save):
    from make_fixtures import FIXTURES, MAX_BYTES
    state = bf16_state()
    tensors = {}
    files = {"gguf_q8": "lm_quant_candle_q8.gguf", "mlx_q4": "lm_quant_mlx_q4.safetensors", "mlx_q8": "lm_quant_mlx_q8.safetensors"}
    for key, file in files.items():
        path = os.path.join(FIXTURES, file)
        if key == "gguf_q8":
            weights = write_gguf(state, path)
        else:
            bits = 4 if key == "mlx_q4" else 8
            weights = write_mlx(state, path, bits, 32 if bits == 4 else 64)
        size = os.path.getsize(path)
        assert size < MAX_BYTES, f"{path}: {size} bytes"
        print(f"wrote {os.path.relpath(path)} ({size / 1024:.0f} KiB)")
        user, returned, text_logits = reference_run(weights)
        tensors["user_codes"] = user
        tensors[f"{key}.returned"] = returned
        tensors[f"{key}.text_logits"] = text_logits
    save("lm_quant_records", tensors, SEED, config=json.dumps(CONFIG), calls=CALLS, gguf_version=GGUF_VERSION,
         mlx_version=MLX_VERSION, files=json.dumps(files))
