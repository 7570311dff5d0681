"""The tiny LM of fixtures_lm.py (same config, same seeded weights) saved as Kyutai's
`LMModel.state_dict()` returns it in moshi 0.2.13 — module-form attention names
(`self_attn.in_projs.{s}.weight`, `out_projs.{s}.weight`), what moshi-finetune and every
`state_dict()` save write — with nothing renamed. duplex must load it by those names and produce
exactly the frames fixtures_lm.py recorded (its lm_tiny fixture)."""
import json

import torch

from fixtures_lm import SEED
from lm_reference import CONFIGS, random_model


def generate(save):
    config = CONFIGS["tiny"]
    model, state = random_model(config, SEED)
    saved = model.state_dict()
    assert any(".self_attn.in_projs." in k for k in saved), "expected module-form names from state_dict()"
    # The same values as the legacy-named fixture: bf16, as the file names hold them.
    for k, v in saved.items():
        if ".self_attn." not in k:
            assert torch.equal(v, state[k]), k
    save("lm_tiny_module_form", {k: v.to(torch.bfloat16) for k, v in saved.items()}, SEED, config=json.dumps(config))
