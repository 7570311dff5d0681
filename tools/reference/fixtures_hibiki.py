"""A Hibiki-shaped tiny LM, built and run by Kyutai's own code: kyutai/hibiki-1b's structure
(`model_type: "hibiki"`, n_q 16 / dep_q 8, acoustic delay 2, `depformer_dim_feedforward: null`,
max_period 100000.0, a LUT conditioner "description" summed into every step's input) at tiny
widths with a context of 8, run greedily for 30 calls (3.75x the context), without and with CFG.

The `conditioners` and `fuser` blocks are those of the released config.json as two third-party
copies of it record them (they agree on the LUT: n_bins 31, dim 16, tokenizer "noop",
possible_values very_bad..very_good; one gives the fuser with its cross_attention_pos_emb keys
and `cross_attention: false`); the HF file itself was not read here. Kyutai's
configs/moshi_dev_2b.json has the same blocks without tokenizer / possible_values. The other
keys follow the moshiko 7B layout of lm_reference.py.

The checkpoint is loaded through `CheckpointInfo.from_hf_repo(config_path=...)` + `get_moshi`:
`get_moshi_lm` builds the conditioner provider and fuser from the config and keeps
`condition_provider.*` float32; `get_moshi` then applies the Hibiki hack
`text_emb.weight[2] = text_emb.weight[3]` (EOS fed back as PAD). The weights are SAVED as the
checkpoint holds them, before the hack: duplex must apply it itself. (The generator checks that
the hack changes this fixture's frames: token 2 is sampled and fed back.)

Condition tensors are run_inference.get_condition_tensors("hibiki", ...): "very_good", plus
"very_bad" as the second batch entry when cfg_coef != 1. Run (a) is LMGen(cfg_coef=1.0), run (b)
LMGen(cfg_coef=3.0): the temporal transformer and the depformer then run a batch of 2 (same
tokens, conditions very_good / very_bad) and every text and depformer step samples from
null + (cond - null) * 3.0.

User codes are seeded; column 0 equals column 1 (run_inference feeds the first frame twice; the
first call's input is replaced by the initial tokens, `offsets <= delays`); frame EOS_FRAME is
`card` on all 8 user codebooks (run_inference's end-of-input frame), the frames after it repeat
one seeded frame (standing in for encoded silence). Each call is given one frame (column t).

Recorded: the weights (checkpoint names; bf16, except `condition_provider.conditioners.
description.{embed.weight, output_proj.weight, learnt_padding}` in float32), the config
(config.json keys, in the metadata), and
  fixture.user_codes           int32 [8, CALLS]
  fixture.condition_very_good  f32 [dim]   the conditioner's output (the sum added to each step)
  fixture.condition_very_bad   f32 [dim]
  fixture.returned             int32 [CALLS-2, 9]  run (a): calls 2.. (calls 0, 1 return None)
  fixture.text_logits          f32 [CALLS, text_card]
  fixture.depth_logits         f32 [CALLS, dep_q, card]
  fixture.cfg_returned, fixture.cfg_text_logits, fixture.cfg_depth_logits: run (b), the same
  shapes, logits after the CFG combination."""
import json

import torch

from lm_reference import greedy_lmgen, greedy_run, kyutai_model, random_checkpoint, shrunk

SEED = 2026
CALLS = 30
EOS_FRAME = 22
CFG_COEF = 3.0
POSSIBLE_VALUES = ["very_bad", "bad", "neutral", "good", "very_good"]


def hibiki_keys(config):
    """Adds what makes a config Hibiki 1B's, after its sizes: acoustic delay 2, the `description`
    LUT summed into the input, and the repo keys CheckpointInfo pops (model_type, lm_gen_config)."""
    config.update(
        max_period=100000.0, delays=[0] + ([0] + [2] * 7) * 2, depformer_dim_feedforward=None,
        cross_attention=False,
        conditioners={"description": {"type": "lut", "lut": {
            "n_bins": 31, "dim": 16, "tokenizer": "noop", "possible_values": list(POSSIBLE_VALUES)}}},
        fuser={"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1,
               "sum": ["description"], "prepend": [], "cross": []})
    config.update(model_type="hibiki",
                  lm_gen_config={"temp": 0.8, "temp_text": 0.4, "top_k": 250, "top_k_text": 25})
    return config


def hibiki_tiny():
    return hibiki_keys(shrunk(dim=64, num_heads=4, num_layers=2, text_card=40, card=32, context=8,
                              depformer_dim=32, depformer_num_heads=2, depformer_num_layers=2))


def condition_tensors(model, cfg_coef):
    from moshi.run_inference import get_condition_tensors

    return get_condition_tensors("hibiki", model, 1, cfg_coef)


def run(model, user, cfg_coef):
    gen = greedy_lmgen(model, cfg_coef=cfg_coef, condition_tensors=condition_tensors(model, cfg_coef))
    result = greedy_run(gen, user)
    assert all(o is None for o in result["returned"][:2]) and all(o is not None for o in result["returned"][2:])
    result["frames"] = torch.stack(result["returned"][2:]).to(torch.int32)   # [CALLS-2, 9]
    return result


def generate(save):
    config = hibiki_tiny()
    torch.manual_seed(SEED)
    checkpoint = random_checkpoint(config, SEED)
    prefix = "condition_provider.conditioners.description."
    f32 = {k: tuple(v.shape) for k, v in checkpoint.items() if v.dtype == torch.float32}
    dim = config["dim"]
    assert f32 == {prefix + "embed.weight": (32, 16), prefix + "output_proj.weight": (dim, 16),
                   prefix + "learnt_padding": (1, 1, dim)}, f32
    info, model = kyutai_model(config, checkpoint)
    assert info.model_type == "hibiki"
    assert torch.equal(model.text_emb.weight[2], model.text_emb.weight[3]), "the loader's Hibiki hack"
    assert not torch.equal(checkpoint["text_emb.weight"][2], checkpoint["text_emb.weight"][3])
    assert model.condition_provider.conditioners["description"].embed.weight.dtype == torch.float32

    card = config["card"]
    g = torch.Generator().manual_seed(SEED + 1)
    user = torch.randint(0, card, (8, CALLS), generator=g)
    user[:, 0] = user[:, 1]                       # run_inference's doubled first frame
    user[:, EOS_FRAME] = card                     # end of input: `card` on all user codebooks
    user[:, EOS_FRAME + 1:] = user[:, EOS_FRAME + 1:EOS_FRAME + 2]  # then one repeated frame

    cond = condition_tensors(model, CFG_COEF)["description"]
    assert cond.condition.shape == (2, 1, dim) and cond.mask.all()
    very_good, very_bad = cond.condition[0, 0].float(), cond.condition[1, 0].float()
    plain = run(model, user, 1.0)
    cfg = run(model, user, CFG_COEF)
    for r in (plain, cfg):
        text = r["frames"][:, 0].tolist()
        assert len(set(text)) > 5, f"degenerate text stream {text}"
        assert len(set(r["frames"][:, 1:].flatten().tolist())) > 10, "degenerate audio streams"
        # A returned frame holds the text token of two calls earlier (max delay 2).
        assert torch.equal(r["frames"][:, 0].long(), r["text_logits"][:-2].argmax(-1))
    assert not torch.equal(plain["frames"], cfg["frames"]), "CFG changes nothing"
    # Token 2 is sampled and fed back, so the hack matters: without it the frames differ.
    assert 2 in plain["frames"][:, 0].tolist() and 2 in cfg["frames"][:, 0].tolist()
    _, unhacked = kyutai_model(config, checkpoint)
    with torch.no_grad():
        unhacked.text_emb.weight[2] = checkpoint["text_emb.weight"][2].float()
    for coef, r in ((1.0, plain), (CFG_COEF, cfg)):
        assert not torch.equal(run(unhacked, user, coef)["text_logits"], r["text_logits"]), "hack unused"
    # The first frame is never seen.
    other = user.clone()
    other[:, 0] = (other[:, 0] + 1) % card
    assert torch.equal(run(model, other, CFG_COEF)["text_logits"], cfg["text_logits"])

    tensors = dict(checkpoint)
    tensors["fixture.user_codes"] = user.to(torch.int32)
    tensors["fixture.condition_very_good"] = very_good
    tensors["fixture.condition_very_bad"] = very_bad
    tensors["fixture.returned"] = plain["frames"]
    tensors["fixture.text_logits"] = plain["text_logits"]
    tensors["fixture.depth_logits"] = plain["depth_logits"]
    tensors["fixture.cfg_returned"] = cfg["frames"]
    tensors["fixture.cfg_text_logits"] = cfg["text_logits"]
    tensors["fixture.cfg_depth_logits"] = cfg["depth_logits"]
    save("hibiki_tiny", tensors, SEED, config=json.dumps(config), calls=CALLS, first_call_returns="None",
         returns_from_call=2, cfg_coef=CFG_COEF, eos_frame=EOS_FRAME, condition="very_good",
         cfg_null_condition="very_bad", text_emb_hack="text_emb.weight[2] = text_emb.weight[3], not applied to the saved weights")
