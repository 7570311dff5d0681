"""Kyutai's Moshi LM at several sizes with seeded random weights, shared by the LM fixture, the
real-width parity check and the side-by-side benchmark.

Configs are written in Kyutai's `config.json` vocabulary (the keys `loaders._lm_kwargs` uses), so
the very same dict is handed to `moshi.models.lm.LMModel(**config)` and saved as `config.json`
next to the weights for duplex to decode.

Weights are drawn per tensor from a seeded generator and rounded to bf16; the PyTorch model keeps
them as float32 values (exactly the bf16 values) unless told to run in bf16, so PyTorch in f32 and
duplex (bf16 weights, f32 compute) see identical weights.
"""
import json
import math
import os
import re
import struct

import torch

from moshi.models.lm import LMGen, LMModel

DELAYS_8 = [0] + ([0] + [1] * 7) * 2


def moshi_7b():
    """`loaders._lm_kwargs`: moshiko / moshika 7B."""
    return dict(
        dim=4096, text_card=32000, existing_text_padding_id=3, n_q=16, dep_q=8, card=2048,
        num_heads=32, num_layers=32, hidden_scale=4.125, causal=True, layer_scale=None, context=3000,
        max_period=10000, gating="silu", norm="rms_norm_f32", positional_embedding="rope",
        depformer_dim=1024, depformer_dim_feedforward=int(4.125 * 1024), depformer_num_heads=16,
        depformer_num_layers=6, depformer_layer_scale=None, depformer_multi_linear=True,
        depformer_context=8, depformer_max_period=10000, depformer_gating="silu",
        depformer_pos_emb="none", depformer_weights_per_step=True, delays=list(DELAYS_8))


def shrunk(**changes):
    """The 7B structure with some sizes changed."""
    config = moshi_7b()
    config.update(changes)
    if "depformer_dim" in changes and "depformer_dim_feedforward" not in changes:
        config["depformer_dim_feedforward"] = int(4.125 * config["depformer_dim"])
    return config


CONFIGS = {
    # CI fixture: every structural feature, tiny widths, a context of 8.
    "tiny": shrunk(dim=64, num_heads=4, num_layers=2, text_card=40, card=32, context=8,
                   depformer_dim=32, depformer_num_heads=2, depformer_num_layers=2),
    # Benchmark sizes (issue 4, item 7).
    "small": shrunk(dim=512, num_heads=8, num_layers=8, depformer_dim=256, depformer_num_heads=4,
                    depformer_num_layers=2),
    "medium": shrunk(dim=2048, num_heads=16, num_layers=16),
    "7b": moshi_7b(),
    # Real widths, two temporal layers (non-CI parity).
    "real2": shrunk(num_layers=2),
}


def checkpoint_layout(config):
    """[(file name, shape)] of the checkpoint for `config`, in Kyutai's file naming (attention
    weights stacked step-major under `in_proj_weight` / `out_proj.weight`), without building
    any weights: the model is instantiated on the meta device."""
    with torch.device("meta"):
        model = LMModel(**config)
    return model_layout(model)


def model_layout(model):
    """[(file name, shape)] of `model`'s state dict in Kyutai's file naming (see checkpoint_layout)."""
    stacked = {}
    layout = []
    for name, p in model.state_dict().items():
        m = re.match(r"(.*self_attn\.)(in|out)_projs\.(\d+)\.weight$", name)
        if m:
            target = m.group(1) + ("in_proj_weight" if m.group(2) == "in" else "out_proj.weight")
            if target not in stacked:
                stacked[target] = [0, list(p.shape[1:])]
                layout.append((target, None))
            stacked[target][0] += p.shape[0]
            continue
        layout.append((name, list(p.shape)))
    return [(n, s if s is not None else [stacked[n][0]] + stacked[n][1]) for n, s in layout]


def random_tensor(name, shape, generator):
    """Seeded values of a sensible spread: norm alphas around 1, matrices N(0, 1/fan_in)."""
    if name.endswith("alpha"):
        return 1 + 0.1 * torch.randn(shape, generator=generator)
    fan_in = shape[-1] if len(shape) > 1 else 1
    return torch.randn(shape, generator=generator) * fan_in ** -0.5


def write_random_checkpoint(config, path, seed, progress=True):
    """Writes a bf16 safetensors file of seeded random weights tensor by tensor (the 7B file is
    15 GB: it is never held in memory whole) plus `config.json` beside it."""
    layout = checkpoint_layout(config)
    header, offset = {}, 0
    for name, shape in layout:
        n = math.prod(shape) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt", "generator": "tools/reference/lm_reference.py", "seed": str(seed)}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    written = 0
    with open(path + ".partial", "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in layout:
            t = random_tensor(name, shape, g).to(torch.bfloat16).contiguous()
            f.write(t.view(torch.int16).numpy().tobytes())
            written += t.numel() * 2
            if progress and offset > 1 << 30:
                print(f"\r  {written / 1e9:.1f} / {offset / 1e9:.1f} GB", end="", flush=True)
    if progress and offset > 1 << 30:
        print()
    os.replace(path + ".partial", path)
    with open(os.path.join(os.path.dirname(os.path.abspath(path)), "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return path


def load_model(config, path, dtype=torch.float32):
    """LMModel with the file's weights (through Kyutai's own legacy-name load hook)."""
    from safetensors.torch import load_file

    with torch.device("meta"):
        model = LMModel(**config)
    state = load_file(path)
    state = {k: v.to(dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(dtype).eval()


def random_model(config, seed):
    """A small LMModel with the same per-tensor draws as `write_random_checkpoint`, bf16-rounded,
    held in float32. Returns (model, file-named float32 state dict)."""
    g = torch.Generator().manual_seed(seed)
    state = {name: random_tensor(name, shape, g).to(torch.bfloat16).float()
             for name, shape in checkpoint_layout(config)}
    model = LMModel(**config).eval()
    model.load_state_dict(dict(state), strict=True)
    return model, state


def greedy_generate(model, user_codes, hooks=True):
    """Greedy LMGen over user codes [8, T]. Returns (outputs, text_logits, depth_logits) where
    outputs[t] is the [9] tokens returned by call t or None, text_logits[t] is [text_card] and
    depth_logits[t] is [dep_q, card] (logits as each call computed them)."""
    gen = LMGen(model, use_sampling=False, temp=0.0, temp_text=0.0, top_k=0, top_k_text=0)
    text_logits, depth_logits = [], []
    if hooks:
        gen.on_text_logits_hook = lambda logits: text_logits.append(logits[0, 0, 0].float().clone())
        original = model.forward_depformer
        current = []

        def capture(cb_index, sequence, transformer_out):
            logits = original(cb_index, sequence, transformer_out)
            current.append(logits[0, 0, 0].float().clone())
            if cb_index == model.dep_q - 1:
                depth_logits.append(torch.stack(current))
                current.clear()
            return logits

        model.forward_depformer = capture
    outputs = []
    with torch.no_grad(), gen.streaming(1):
        for t in range(user_codes.shape[1]):
            out = gen.step(user_codes[None, :, t:t + 1])
            outputs.append(None if out is None else out[0, :, 0].clone())
    if hooks:
        model.forward_depformer = original
    return outputs, text_logits, depth_logits


# --- Other members of the family (STT, Hibiki), built through Kyutai's loader -----------------


def kyutai_checkpoint_info(config, directory, tensors=None):
    """Writes `config` as config.json (and `tensors`, if given, as model.safetensors) into
    `directory` and returns Kyutai's `CheckpointInfo` for them, read as `from_hf_repo` reads a
    repository: the repo keys (`model_type`, `stt_config`, `lm_gen_config`, ...) are popped from
    the LM kwargs there, not here."""
    from moshi.models.loaders import CheckpointInfo
    from safetensors.torch import save_file

    config_path = os.path.join(directory, "config.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=1)
    weights = os.path.join(directory, "model.safetensors")
    if tensors is not None:
        save_file({k: v.contiguous() for k, v in tensors.items()}, weights)
    return CheckpointInfo.from_hf_repo(
        "local", moshi_weights=weights, mimi_weights=os.path.join(directory, "mimi.safetensors"),
        tokenizer=os.path.join(directory, "tokenizer.model"), config_path=config_path)


LOADER_F32_PREFIXES = ("condition_provider.", "fuser.")  # get_moshi_lm keeps these float32


def random_checkpoint(config, seed):
    """Seeded weights for a config of any member of the family (conditioners, extra heads,
    dep_q 0), laid out by Kyutai's own loader (`CheckpointInfo.get_moshi` on the meta device)
    and named as the files name them. Returned as a checkpoint holds them: bf16, except the
    tensors the loader keeps in float32 (`condition_provider.*`, `fuser.*`), which are float32
    values (not bf16-rounded). Per-tensor draws as `random_tensor`."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        model = kyutai_checkpoint_info(config, d).get_moshi(device="meta", load_weight=False)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in model_layout(model):
        t = random_tensor(name, shape, g)
        out[name] = t if name.startswith(LOADER_F32_PREFIXES) else t.to(torch.bfloat16)
    return out


def kyutai_model(config, tensors, dtype=torch.float32):
    """The LMModel Kyutai's loader builds from this config.json and checkpoint:
    `CheckpointInfo.get_moshi` -> `get_moshi_lm` (conditioners and fuser from the config,
    `condition_provider.*` kept float32, the rest cast to `dtype`), plus the Hibiki
    `text_emb.weight[2] = text_emb.weight[3]` hack when `model_type` is "hibiki".
    Returns (CheckpointInfo, model)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        info = kyutai_checkpoint_info(config, d, tensors)
        model = info.get_moshi(device="cpu", dtype=dtype)
        model = model.eval()
    return info, model


def greedy_lmgen(model, **kwargs):
    """LMGen with greedy sampling (argmax) of text and audio, as greedy_generate builds it."""
    return LMGen(model, use_sampling=False, temp=0.0, temp_text=0.0, top_k=0, top_k_text=0, **kwargs)


def greedy_run(gen, user_codes, extra_heads=False):
    """Runs `gen` over user codes [K_user, T], one frame per call (the frame at column t is what
    call t is given). Returns a dict:
      returned:     per call, the [dep_q + 1] frame the call returned, or None;
      text_logits:  [T, text_card], what `on_text_logits_hook` sees (after the CFG combination);
      depth_logits: [T, dep_q, card] after the CFG combination, i.e. what each depformer step
                    samples from (only when dep_q > 0; the combination is depformer_step's own
                    formula, null + (cond - null) * cfg_coef);
      extra_heads:  per call, [num_heads, head_dim] softmaxes of `step_with_extra_heads`, or None
                    (only when `extra_heads`)."""
    model = gen.lm_model
    text_logits, depth_logits, current = [], [], []
    gen.on_text_logits_hook = lambda logits: text_logits.append(logits[0, 0, 0].float().clone())
    original = model.forward_depformer

    def capture(cb_index, sequence, transformer_out):
        logits = original(cb_index, sequence, transformer_out)
        combined = logits
        if gen.cfg_coef != 1.:
            cond, null = logits.chunk(2)
            combined = null + (cond - null) * gen.cfg_coef
        current.append(combined[0, 0, 0].float().clone())
        if cb_index == model.dep_q - 1:
            depth_logits.append(torch.stack(current))
            current.clear()
        return logits

    if model.dep_q > 0:
        model.forward_depformer = capture
    returned, heads = [], []
    try:
        with torch.no_grad(), gen.streaming(1):
            for t in range(user_codes.shape[1]):
                codes = user_codes[None, :, t:t + 1]
                if extra_heads:
                    out = gen.step_with_extra_heads(codes)
                    frame = None if out is None else out[0]
                    heads.append(None if out is None else torch.stack([h[0, 0].float() for h in out[1]]))
                else:
                    frame = gen.step(codes)
                returned.append(None if frame is None else frame[0, :, 0].clone())
    finally:
        if model.dep_q > 0:
            del model.forward_depformer  # back to the class's method
    result = {"returned": returned, "text_logits": torch.stack(text_logits)}
    if model.dep_q > 0:
        result["depth_logits"] = torch.stack(depth_logits)
    if extra_heads:
        result["extra_heads"] = heads
    return result
