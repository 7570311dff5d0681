"""A Hibiki-2B-shaped tiny LM, built and run by Kyutai's own code: kyutai/hibiki-2b's structure
(configs/moshi_dev_2b.json: n_q 32 / dep_q 16 — Mimi's 16 codebooks per stream —, acoustic delay
2, the "description" LUT conditioner) with its depformer weight sharing,
`depformer_weights_per_step_schedule` = [0, 1, …, 7, 8 × 8]: depth steps 8–15 share one weight set
(9 sets for 16 steps), as do their `depformer_in` projections; every step keeps its own
`linears` head and embedding. Tiny widths, a context of 8, 30 greedy calls (3.75× the context),
with and without CFG, fed exactly as fixtures_hibiki.py feeds the 1B shape (column 0 = column 1,
an end-of-input frame of `card`, then a repeated frame).

Recorded: the weights (checkpoint names; bf16, the conditioner f32), the config (metadata), and
  fixture.user_codes [16, CALLS]; fixture.returned [CALLS-2, 17]; fixture.text_logits
  [CALLS, text_card]; fixture.depth_logits [CALLS, 16, card]; and the same with cfg_ for CFG 3."""
import json

import torch

from fixtures_hibiki import CFG_COEF, EOS_FRAME, POSSIBLE_VALUES, run
from lm_reference import kyutai_model, random_checkpoint, shrunk

SEED = 2027
CALLS = 30
SCHEDULE = list(range(8)) + [8] * 8


def hibiki2b_tiny():
    config = shrunk(dim=64, num_heads=4, num_layers=2, text_card=40, card=32, context=8,
                    depformer_dim=32, depformer_num_heads=2, depformer_num_layers=1)
    config.update(
        n_q=32, dep_q=16, max_period=100000.0, delays=[0] + ([0] + [2] * 15) * 2, depformer_dim_feedforward=None,
        depformer_weights_per_step_schedule=SCHEDULE, cross_attention=False,
        conditioners={"description": {"type": "lut", "lut": {
            "n_bins": 31, "dim": 16, "tokenizer": "noop", "possible_values": list(POSSIBLE_VALUES)}}},
        fuser={"sum": ["description"], "prepend": [], "cross": []})
    config.update(model_type="hibiki")
    return config


def generate(save):
    config = hibiki2b_tiny()
    torch.manual_seed(SEED)
    checkpoint = random_checkpoint(config, SEED)
    sets = max(SCHEDULE) + 1
    assert checkpoint["depformer.layers.0.self_attn.in_proj_weight"].shape[0] == sets * 3 * config["depformer_dim"]
    assert "depformer_in.8.weight" in checkpoint and "depformer_in.9.weight" not in checkpoint
    assert "linears.15.weight" in checkpoint and "depformer.layers.0.gating.8.linear_in.weight" in checkpoint
    info, model = kyutai_model(config, checkpoint)
    assert info.model_type == "hibiki"
    card = config["card"]
    g = torch.Generator().manual_seed(SEED + 1)
    user = torch.randint(0, card, (16, CALLS), generator=g)
    user[:, 0] = user[:, 1]
    user[:, EOS_FRAME] = card
    user[:, EOS_FRAME + 1:] = user[:, EOS_FRAME + 1:EOS_FRAME + 2]
    plain = run(model, user, 1.0)
    cfg = run(model, user, CFG_COEF)
    for r in (plain, cfg):
        assert r["frames"].shape == (CALLS - 2, 17)
        assert len(set(r["frames"][:, 9:].flatten().tolist())) > 10, "degenerate shared-weight codebooks"
    assert not torch.equal(plain["frames"], cfg["frames"]), "CFG changes nothing"
    tensors = dict(checkpoint)
    tensors["fixture.user_codes"] = user.to(torch.int32)
    tensors["fixture.returned"] = plain["frames"]
    tensors["fixture.text_logits"] = plain["text_logits"]
    tensors["fixture.depth_logits"] = plain["depth_logits"]
    tensors["fixture.cfg_returned"] = cfg["frames"]
    tensors["fixture.cfg_text_logits"] = cfg["text_logits"]
    tensors["fixture.cfg_depth_logits"] = cfg["depth_logits"]
    save("hibiki2b_tiny", tensors, SEED, config=json.dumps(config), calls=CALLS, cfg_coef=CFG_COEF, eos_frame=EOS_FRAME,
         schedule=json.dumps(SCHEDULE))
